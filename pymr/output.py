"""Writing the answer: TSV or JSON, to a file atomically or to a stream."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from .errors import JobError, UsageError

#: Records joined per write call: keeps syscalls few and memory flat.
WRITE_BATCH = 8192


def write_tsv(records: Iterable[tuple[bytes, int]], out: BinaryIO) -> int:
    """``word<TAB>count`` lines; returns the number of records."""
    n = 0
    batch: list[bytes] = []
    for word, count in records:
        batch.append(b"%s\t%d\n" % (word, count))
        if len(batch) >= WRITE_BATCH:
            out.write(b"".join(batch))
            n += len(batch)
            batch.clear()
    out.write(b"".join(batch))
    return n + len(batch)


def write_json(records: Iterable[tuple[bytes, int]], out: BinaryIO) -> int:
    """A JSON array of ``{"word": ..., "count": ...}`` objects, streamed."""
    n = 0
    out.write(b"[")
    batch: list[str] = []
    for word, count in records:
        sep = ",\n" if n or batch else "\n"
        batch.append(sep + json.dumps({"word": word.decode("utf-8", "replace"),
                                       "count": count}, ensure_ascii=False))
        if len(batch) >= WRITE_BATCH:
            out.write("".join(batch).encode("utf-8"))
            n += len(batch)
            batch.clear()
    out.write("".join(batch).encode("utf-8"))
    n += len(batch)
    out.write(b"\n]\n" if n else b"]\n")
    return n


def check_output_path(path: str, force: bool) -> None:
    """Fail before the job runs, not after: exists without --force, or no directory."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{path}: the directory {directory} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory; give a file name")
    if os.path.lexists(path) and not os.path.isfile(path) or os.path.islink(path):
        raise UsageError(f"{path}: exists and is not a regular file (a device, pipe, socket "
                         "or link); give another name, or omit -o to write to stdout")
    if os.path.exists(path) and not force:
        raise UsageError(f"{path}: already exists; pass --force to replace it")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{path}: cannot write in {directory} (permission denied)")


@contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """Write to a temp file beside ``path``; rename over it only on success."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pymr-", suffix=".tmp", dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # like any file the user creates, not mkstemp's 0600
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        raise JobError(f"cannot write {path}: {exc.strerror or exc}; nothing was written")
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
