"""Hadoop-style part files: ``-o DIR/`` writes one file per partition, and ``pymr cat``.

Each ``part-NNNNN`` holds one partition's records in the job's order, written as that
partition is fetched (the master holds one partition's stream at a time). ``_SUCCESS`` is
written last and says how to read the parts back (JSON: the job, its order, the format,
the key and value types). The directory is built beside its target and renamed into place,
so it appears whole or not at all.

Partitions are cut by a hash of the key, so no job's parts are in global order when
concatenated: ``cat DIR/part-*`` gives every record once, in no global order, and
``pymr cat DIR`` (``cat_parts``) k-way merges the parts back into the single-file answer,
byte for byte.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from ..errors import JobError, UsageError
from ..wire.keys import record_sort_key

SUCCESS = "_SUCCESS"


def is_dir_output(path: str) -> bool:
    """``-o DIR/`` (a trailing slash) or an existing directory: part files."""
    return path.endswith(("/", os.sep)) or os.path.isdir(path)


def _target(path: str) -> str:
    """The directory that ``-o PATH/`` replaces: ``PATH`` itself, or, when ``PATH`` is a
    symlink, the directory it points to (the link stays, and still points to the new
    parts, as ``cp`` writes through a link; replacing the link by a directory would leave
    the old parts where the link pointed)."""
    target = os.path.abspath(path.rstrip("/" + os.sep) or path)
    return os.path.realpath(target) if os.path.islink(target) else target


def check_dir_output(path: str, force: bool) -> None:
    """Fail before the job runs: an existing target without --force, no parent, no
    permission."""
    link = path.rstrip("/" + os.sep) or path
    if os.path.islink(link) and not os.path.isdir(link):
        raise UsageError(f"{path}: is a link to {os.readlink(link)}, not to a directory; "
                         "give another name")
    target = _target(path)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise UsageError(f"{path}: the directory {parent} does not exist")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise UsageError(f"{path}: exists and is not a directory; give another name")
    if os.path.isdir(target) and not force:
        raise UsageError(f"{path}: already exists; pass --force to replace it")
    if os.path.isdir(target) and not os.path.isfile(os.path.join(target, SUCCESS)):
        raise UsageError(f"{path}: is a directory that pymr did not write (no {SUCCESS}); "
                         "--force replaces only a previous job's part directory")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{path}: cannot write in {parent} (permission denied)")


def part_name(index: int) -> str:
    return f"part-{index:05d}"


@contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """A temp directory beside ``path``, renamed over it on success (an existing one is
    replaced only then); removed on any failure or interruption."""
    target = _target(path)
    parent = os.path.dirname(target)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.pymr-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        old = None
        if os.path.isdir(target):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise JobError(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parts(path: str, partitions: Iterable[tuple[int, Iterator[tuple[Any, Any]]]],
                write: Callable[[Iterator[tuple[Any, Any]], BinaryIO], int],
                meta: dict[str, Any]) -> int:
    """Write each partition's records to its part file, then ``_SUCCESS``; returns the
    number of records."""
    total = 0
    parts = 0
    with atomic_dir(path) as tmp:
        for index, records in partitions:
            with open(os.path.join(tmp, part_name(index)), "wb", buffering=1 << 20) as f:
                total += write(records, f)
                f.flush()
                os.fsync(f.fileno())
            parts += 1
        with open(os.path.join(tmp, SUCCESS), "w", encoding="utf-8") as f:
            json.dump({**meta, "parts": parts, "records": total}, f, indent=1)
            f.write("\n")
    return total


# ---------------------------------------------------------------- reading back


def read_meta(path: str) -> dict[str, Any]:
    if not os.path.isdir(path):
        raise UsageError(f"{path}: no such directory (give a directory written by "
                         "'pymr job -o DIR/')")
    success = os.path.join(path, SUCCESS)
    try:
        with open(success, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path}: no {SUCCESS} file: not the complete output of a pymr job "
                         "(an interrupted job leaves no directory)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read {SUCCESS}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") not in ("tsv", "json"):
        raise UsageError(f"{path}: {SUCCESS} does not describe pymr part files")
    return meta


def _parse_field(raw: bytes, types: set[str]) -> Any:
    """A TSV field back as a value that sorts as the original did."""
    if types <= {"bytes", "str"}:
        return raw.replace(b"\\t", b"\t").replace(b"\\n", b"\n").replace(b"\\r", b"\r")
    if types == {"int"}:
        return int(raw)
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _tsv_lines(path: str, key_types: set[str], value_types: set[str]
               ) -> Iterator[tuple[Any, Any, bytes]]:
    with open(path, "rb") as f:
        for line in f:
            key, _, value = line.rstrip(b"\n").rpartition(b"\t")
            yield _parse_field(key, key_types), _parse_field(value, value_types), line


def _json_lines(path: str, fields: list[str]) -> Iterator[tuple[Any, Any, bytes]]:
    with open(path, "rb") as f:
        for line in f:
            text = line.strip()
            if text in (b"[", b"]", b"[]", b""):
                continue
            obj = json.loads(text.rstrip(b","))
            yield obj[fields[0]], obj[fields[1]], json.dumps(obj, ensure_ascii=False).encode()


def cat_parts(path: str, out: BinaryIO) -> int:
    """Merge a part directory back into the single answer (what ``-o FILE`` writes)."""
    meta = read_meta(path)
    names = sorted(n for n in os.listdir(path) if n.startswith("part-"))
    if len(names) != meta.get("parts"):
        raise UsageError(f"{path}: {len(names)} part files, {SUCCESS} says {meta.get('parts')}")
    key_types = set(meta.get("key_types", []))
    value_types = set(meta.get("value_types", []))
    sort_key = record_sort_key(meta.get("order", "key"), key_types, value_types)
    if meta["format"] == "tsv":
        streams = [_tsv_lines(os.path.join(path, n), key_types, value_types) for n in names]
    else:
        fields = meta.get("fields", ["key", "value"])
        streams = [_json_lines(os.path.join(path, n), fields) for n in names]

    def key3(rec: tuple[Any, Any, bytes]) -> Any:
        return sort_key((rec[0], rec[1])) if sort_key is not None else rec[0]

    n = 0
    if meta["format"] == "json":
        out.write(b"[")
    for _, _, line in heapq.merge(*streams, key=key3):
        if meta["format"] == "json":
            out.write((b",\n" if n else b"\n") + line)
        else:
            out.write(line)
        n += 1
    if meta["format"] == "json":
        out.write(b"\n]\n" if n else b"]\n")
    return n
