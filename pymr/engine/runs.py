"""Sorted runs on disk: what a reducer spills when its partition outgrows its memory share.

A run file is a sequence of frames, each a 4-byte big-endian length and a records chunk
(``pymr.wire.protocol.pack_chunk(keys, values)``, at most ``chunk_records`` records), so a run
is written and read as a stream, one chunk in memory at a time. The same format holds a
partition's final sorted output when it did not fit in memory: ``RunFile.chunk(i)`` reads the
i-th chunk by its offset, which is what a fetch asks for.

Disk errors are ``SpillError`` (an ``OSError`` naming the directory), so the executor can
report "node X cannot write DIR: No space left on device" and the partition moves.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterable, Iterator
from itertools import chain
from operator import itemgetter
from typing import Any

from ..wire import protocol as p
from ..wire.keys import batched
from .fileio import pread_exact

_LEN = struct.Struct(">I")
_keys_of, _values_of = itemgetter(0), itemgetter(1)


class SpillError(OSError):
    """Writing or reading a spill file failed; ``str()`` names the directory and why."""

    def __init__(self, directory: str, exc: OSError) -> None:
        why = exc.strerror or str(exc)
        super().__init__(exc.errno or errno.EIO, f"cannot write {directory}: {why}")
        self.directory = directory
        self.why = why

    def __str__(self) -> str:
        return f"cannot use {self.directory} for spilled data: {self.why}"


class RunFile:
    """One sorted run (or a partition's final output) on disk, chunk by chunk."""

    def __init__(self, path: str, offsets: list[tuple[int, int]], records: int) -> None:
        self.path = path
        self.offsets = offsets          # (offset, length) of each chunk's payload
        self.records = records

    @property
    def size(self) -> int:
        return sum(n for _, n in self.offsets) + _LEN.size * len(self.offsets)

    def chunk(self, index: int) -> bytes:
        """The packed payload of chunk ``index`` (for a fetch: sent as it is)."""
        offset, length = self.offsets[index]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return pread_exact(fd, length, offset)
        except OSError as exc:
            raise SpillError(os.path.dirname(self.path), exc) from exc
        finally:
            os.close(fd)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """The records, in the run's order."""
        return chain.from_iterable(self.blocks())

    def blocks(self) -> Iterator[list[tuple[Any, Any]]]:
        """The records chunk by chunk, in the run's order (what a block merge reads)."""
        try:
            with open(self.path, "rb") as f:
                for _, length in self.offsets:
                    f.read(_LEN.size)
                    keys, values = p.unpack_chunk(f.read(length))
                    yield list(zip(keys, values, strict=True))
        except OSError as exc:
            raise SpillError(os.path.dirname(self.path), exc) from exc

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


_SEQUENCES = frozenset([list, tuple])


def chunk_ranges(values: list[Any], chunk_records: int) -> list[tuple[int, int]]:
    """Where a sorted run's chunks start and end: ``chunk_records`` records each, or fewer
    when values are lists (an inverted index's postings): a chunk holds about
    ``chunk_records`` items in all, so a frame stays a few MiB. Deterministic: the same
    records give the same chunks, so a fetch that resumes after a move asks for the same."""
    n = len(values)
    if _SEQUENCES.isdisjoint(map(type, values)):
        return [(i, min(n, i + chunk_records)) for i in range(0, n, chunk_records)]
    ranges = []
    start = weight = 0
    for i, v in enumerate(values):
        weight += len(v) if type(v) in _SEQUENCES else 1
        if weight >= chunk_records:
            ranges.append((start, i + 1))
            start, weight = i + 1, 0
    if start < n:
        ranges.append((start, n))
    return ranges


def write_run(directory: str, name: str, records: Iterable[tuple[Any, Any]],
              chunk_records: int) -> RunFile:
    """Write sorted records as a run file in ``directory`` (created 0700 if missing)."""
    return write_blocks(directory, name, batched(records, chunk_records), chunk_records)


def write_blocks(directory: str, name: str, blocks: Iterable[list[tuple[Any, Any]]],
                 chunk_records: int) -> RunFile:
    """``write_run`` of records given as lists of any length (a block merge's output),
    cut into chunks as ``chunk_ranges`` cuts them."""
    return _write_file(directory, name, _rechunk(blocks, chunk_records))


def write_sorted(directory: str, name: str, keys: list[Any], values: list[Any],
                 chunk_records: int) -> RunFile:
    """``write_run`` of records given as parallel lists (a spill of sorted keys and their
    values), so no ``(key, value)`` tuple is built per record."""
    return _write_file(directory, name, ((keys[a:b], values[a:b])
                                         for a, b in chunk_ranges(values, chunk_records)))


def _rechunk(blocks: Iterable[list[tuple[Any, Any]]], chunk_records: int
             ) -> Iterator[tuple[list[Any], list[Any]]]:
    """Blocks of records cut again into ``(keys, values)`` chunks of ``chunk_records``
    records, or of about as many list items (as ``chunk_ranges``): whole slices while
    values are scalars, a Python step per record only for blocks holding lists. Only keys
    and values are held, not the records' tuples."""
    keys: list[Any] = []
    values: list[Any] = []
    weight = 0
    for block in blocks:
        if weight == len(keys) and _SEQUENCES.isdisjoint(map(type, map(_values_of, block))):
            keys += map(_keys_of, block)
            values += map(_values_of, block)
            start = 0
            while len(keys) - start >= chunk_records:
                yield keys[start:start + chunk_records], values[start:start + chunk_records]
                start += chunk_records
            del keys[:start], values[:start]
            weight = len(keys)
            continue
        for key, value in block:
            keys.append(key)
            values.append(value)
            weight += len(value) if type(value) in _SEQUENCES else 1
            if weight >= chunk_records:
                yield keys, values
                keys, values, weight = [], [], 0
    if keys:
        yield keys, values


def _write_file(directory: str, name: str, chunks: Iterable[tuple[list[Any], list[Any]]]
                ) -> RunFile:
    """Write ``(keys, values)`` chunks as a run file; an ``OSError`` is a ``SpillError``."""
    path = os.path.join(directory, name)
    offsets: list[tuple[int, int]] = []
    count = 0
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb", buffering=1 << 20) as f:
            pos = 0
            for keys, values in chunks:
                pos = _write_chunk(f, pos, keys, values, offsets)
                count += len(keys)
    except OSError as exc:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise SpillError(directory, exc) from exc
    return RunFile(path, offsets, count)


def _write_chunk(f: Any, pos: int, keys: list[Any], values: list[Any],
                 offsets: list[tuple[int, int]]) -> int:
    payload = p.pack_chunk(keys, values)
    f.write(_LEN.pack(len(payload)))
    f.write(payload)
    offsets.append((pos + _LEN.size, len(payload)))
    return pos + _LEN.size + len(payload)
