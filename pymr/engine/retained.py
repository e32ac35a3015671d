"""Map outputs an executor keeps until its job ends, spilled to disk beyond a budget.

Reducers (or the node a partition moves to after a reducer died) may ask for any
output's chunks again until the job ends, so nothing may be freed early; but a long
map phase retains more than memory holds.  Outputs stay in memory up to a byte
budget and the oldest are spilled beyond it: the oldest are the least likely to be
asked for again, because their reducers have had the longest time to take them.

A spilled output is one file of its chunk payloads written back to back plus an
in-memory index of (offset, length) per chunk; reads reopen the file and ``pread``
the chunks, so no descriptor stays open per output.  Spilling is best effort: if
the disk refuses (full, read-only, no permission) the output stays in memory, one
warning is logged and this instance stops trying.

Not thread-safe: one owner drives it.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass

from .fileio import pread_exact

log = logging.getLogger(__name__)

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_NAME_MAX = 48
#: Shared by every instance in this process, so two instances sharing a directory
#: never race for a name; O_EXCL still guards against leftovers of an old process.
_serial = itertools.count()
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(slots=True)
class _Spilled:
    """Where one spilled output's chunks are in its file."""

    path: str
    index: dict[int, list[tuple[int, int]]]
    size: int


def _size(parts: dict[int, list[bytes]]) -> int:
    return sum(len(chunk) for chunks in parts.values() for chunk in chunks)


class RetainedOutputs:
    """Map outputs kept for resends until the job ends: in memory up to a byte
    budget, the oldest spilled to files in a private directory beyond it."""

    def __init__(self, spill_dir: str | os.PathLike[str] | None,
                 memory_limit: int = 256 << 20) -> None:
        if memory_limit < 0:
            raise ValueError("memory_limit must be >= 0")
        self.spill_dir = None if spill_dir is None else os.path.abspath(os.fspath(spill_dir))
        self.memory_limit = memory_limit
        # Insertion order is the spill order (oldest first).
        self._memory: OrderedDict[str, dict[int, list[bytes]]] = OrderedDict()
        self._memory_sizes: dict[str, int] = {}
        self._spilled: dict[str, _Spilled] = {}
        self._memory_bytes = 0
        self._spilled_bytes = 0
        self._spill_ok = spill_dir is not None
        self._dir_ready = False
        # Directories this instance made, outermost first; close removes them if empty.
        self._created_dirs: list[str] = []

    # ------------------------------------------------------------------ queries
    def __contains__(self, output_id: object) -> bool:
        return output_id in self._memory or output_id in self._spilled

    def __len__(self) -> int:
        return len(self._memory) + len(self._spilled)

    @property
    def memory_bytes(self) -> int:
        """Bytes of chunk payloads held in memory."""
        return self._memory_bytes

    @property
    def spilled_bytes(self) -> int:
        """Bytes of chunk payloads held in spill files."""
        return self._spilled_bytes

    def chunks(self, output_id: str, partition: int) -> list[bytes] | None:
        """The chunks of one partition of an output, in order.

        None if the output is unknown (never added or dropped): the caller reports it
        lost.  [] if the output has no such partition.  Raises OSError if a spilled
        file cannot be read back in full.
        """
        parts = self._memory.get(output_id)
        if parts is not None:
            return list(parts.get(partition, ()))
        spilled = self._spilled.get(output_id)
        if spilled is None:
            return None
        where = spilled.index.get(partition)
        if not where:
            return []
        fd = os.open(spilled.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            return [pread_exact(fd, length, offset, f"spill file {spilled.path}")
                    for offset, length in where]
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- mutations
    def add(self, output_id: str, parts: dict[int, list[bytes]]) -> None:
        """Retain an output (replacing one with the same id), then spill to the budget."""
        self.drop(output_id)
        copy = {part: list(chunks) for part, chunks in parts.items()}
        size = _size(copy)
        self._memory[output_id] = copy
        self._memory_sizes[output_id] = size
        self._memory_bytes += size
        while self._spill_ok and self._memory_bytes > self.memory_limit and self._memory:
            self._spill_oldest()

    def drop(self, output_id: str) -> None:
        """Forget an output (no-op if unknown); delete its file if it was spilled."""
        if self._memory.pop(output_id, None) is not None:
            self._memory_bytes -= self._memory_sizes.pop(output_id)
            return
        spilled = self._spilled.pop(output_id, None)
        if spilled is None:
            return
        self._spilled_bytes -= spilled.size
        _unlink_quietly(spilled.path)

    def close(self) -> None:
        """Forget every output and delete every file and empty directory this made."""
        for output_id in list(self._spilled):
            self.drop(output_id)
        self._memory.clear()
        self._memory_sizes.clear()
        self._memory_bytes = 0
        for path in reversed(self._created_dirs):
            try:
                os.rmdir(path)
            except OSError:
                break  # not empty (someone else's files) or gone: leave it and its parents
        self._created_dirs.clear()
        self._dir_ready = False

    # ------------------------------------------------------------------ spilling
    def _spill_oldest(self) -> None:
        output_id, parts = next(iter(self._memory.items()))
        try:
            spilled = self._write(output_id, parts)
        except OSError as exc:
            self._spill_ok = False
            log.warning("cannot spill retained map outputs to %s (%s); keeping them all "
                        "in memory", self.spill_dir, exc)
            return
        del self._memory[output_id]
        self._memory_bytes -= self._memory_sizes.pop(output_id)
        self._spilled[output_id] = spilled
        self._spilled_bytes += spilled.size

    def _write(self, output_id: str, parts: dict[int, list[bytes]]) -> _Spilled:
        """Write one output to a new file; on failure no file is left behind."""
        directory = self._ensure_dir()
        fd, path = _create_unique(directory, output_id)
        index: dict[int, list[tuple[int, int]]] = {}
        offset = 0
        try:
            f = open(fd, "wb", closefd=True)
        except BaseException:
            os.close(fd)
            _unlink_quietly(path)
            raise
        try:
            # A buffered file object retries short writes and batches small chunks.
            with f:
                for part, chunks in parts.items():
                    where = index[part] = []
                    for chunk in chunks:
                        f.write(chunk)
                        where.append((offset, len(chunk)))
                        offset += len(chunk)
        except BaseException:
            _unlink_quietly(path)
            raise
        return _Spilled(path, index, offset)

    def _ensure_dir(self) -> str:
        """Create the spill directory (and missing parents) owner-only, on first use."""
        assert self.spill_dir is not None
        if self._dir_ready:
            return self.spill_dir
        missing: list[str] = []
        path = self.spill_dir
        while not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for path in reversed(missing):
            try:
                os.mkdir(path, _DIR_MODE)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise
                continue  # made concurrently by someone else: not ours to remove
            self._created_dirs.append(path)
        self._dir_ready = True
        return self.spill_dir


def _create_unique(directory: str, output_id: str) -> tuple[int, str]:
    """Open a new owner-only file whose name is unique in ``directory``."""
    stem = _UNSAFE.sub("_", output_id)[:_NAME_MAX]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = os.path.join(directory, f"{os.getpid()}-{next(_serial)}-{stem}.spill")
        try:
            return os.open(path, flags, _FILE_MODE), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free spill file name in {directory}")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("cannot remove spill file %s: %s", path, exc)
