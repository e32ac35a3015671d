"""Writing the answer: TSV or JSON, to a file atomically or to a stream."""

from __future__ import annotations

import codecs
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from operator import itemgetter
from typing import Any, BinaryIO

from ..errors import JobError, UsageError
from ..wire.keys import batched_lines

#: Records joined per write call: keeps syscalls few and memory flat.
WRITE_BATCH = 8192
#: Bytes of formatted lines ``write_lines`` joins into one write (about).
WRITE_BYTES = 4 << 20

_second = itemgetter(1)


def _fs_bytes(exc: UnicodeError) -> tuple[bytes, int]:
    """Encoding errors of a TSV field: a surrogate U+DC80..U+DCFF is the byte it stands for
    (a file name that is not UTF-8, decoded as ``os.fsdecode`` does, is written as it is on
    disk); any other lone surrogate as ``\\udXXX`` text (``backslashreplace``)."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = []
    for ch in exc.object[exc.start:exc.end]:
        c = ord(ch)
        out.append(bytes([c - 0xDC00]) if 0xDC80 <= c <= 0xDCFF else b"\\u%04x" % c)
    return b"".join(out), exc.end


#: The error handler of TSV text fields (``_fs_bytes``).
FS_BYTES = "pymr.fsbytes"
codecs.register_error(FS_BYTES, _fs_bytes)


def write_tsv(records: Iterable[tuple[Any, Any]], out: BinaryIO) -> int:
    """``key<TAB>value`` lines; returns the number of records.

    ``str`` and ``bytes`` are written as they are (UTF-8; a ``str`` holding a file name
    that is not UTF-8 as the name's own bytes), with a tab, newline or carriage
    return inside them written as ``\\t``, ``\\n``, ``\\r``; ints as digits; everything
    else as JSON. A word count's records (bytes, int) take a fast path whose batches are
    checked in C for a tab or line break that would need escaping.
    """
    n = 0
    it = iter(records)
    while True:
        lines, data = _format(islice(it, WRITE_BATCH))
        if not lines:
            return n
        out.write(data)
        n += len(lines)


def tsv_lines(keys: list[Any], values: list[Any]) -> list[bytes]:
    """The lines ``write_tsv`` writes for these records, one per record, byte for byte:
    a reducer formats its partition's lines (in parallel with the other reducers) and the
    master only merges them by key and writes them."""
    return _format(zip(keys, values, strict=True))[0]


def write_lines(records: Iterable[tuple[Any, bytes]], out: BinaryIO) -> int:
    """Write records whose value is an already formatted line (``tsv_lines``); returns
    the number of records. Lines are joined and written in batches of about
    ``WRITE_BYTES`` (``keys.batched_lines``): an inverted index's line for a common word
    can be megabytes, and a batch of a fixed count of such lines (and its joined copy)
    would hold many of them."""
    n = 0
    for block in batched_lines(records, WRITE_BATCH, WRITE_BYTES):
        lines = list(map(_second, block))
        if sum(map(len, lines)) <= WRITE_BYTES:
            out.write(b"".join(lines))
        else:  # no joined copy of big lines
            out.writelines(lines)
        n += len(lines)
    return n


def line_value(line: bytes, limit: int = 0) -> Any:
    """The value field of a formatted TSV line, for showing it: an int as an int, else
    its text (a formatted key holds no raw tab, so the value is after the first one);
    with ``limit``, at most that many bytes of it, then ``...`` (a line can be megabytes)."""
    tab = line.find(b"\t")
    end = len(line) - 1 if line.endswith(b"\n") else len(line)
    if limit and end - tab - 1 > limit:
        return line[tab + 1:tab + 1 + limit].decode("utf-8", "replace") + "..."
    field = line[tab + 1:end]
    text = field.decode("utf-8", "replace")
    return int(text) if text.isdigit() and text.isascii() else text


def _format(records: Iterable[tuple[Any, Any]]) -> tuple[list[bytes], bytes]:
    """One TSV line per record, and the lines joined. A word count's records (bytes or
    str, int) are formatted without escaping; the batch is then checked in C and escaped
    only if it needs it."""
    batch: list[bytes] = []
    for key, value in records:
        if type(value) is int and type(key) is bytes:
            batch.append(b"%s\t%d\n" % (key, value))
        elif type(value) is int and type(key) is str:
            batch.append(b"%s\t%d\n" % (key.encode("utf-8", FS_BYTES), value))
        else:
            batch.append(tsv_field(key) + b"\t" + tsv_field(value) + b"\n")
    data = b"".join(batch)
    n = len(batch)
    if data.count(b"\t") != n or data.count(b"\n") != n or b"\r" in data:
        # a key or value held a tab or line break: escape the lines that need it
        batch = [_escape_line(line) for line in batch]
        return batch, b"".join(batch)
    return batch, data


def _escape_line(line: bytes) -> bytes:
    body = line[:-1]
    if body.count(b"\t") == 1 and b"\n" not in body and b"\r" not in body:
        return line
    # only the fast path builds lines whose fields were not escaped: (bytes key, int value)
    key, _, value = body.rpartition(b"\t")
    return _escape(key) + b"\t" + value + b"\n"


def _escape(raw: bytes) -> bytes:
    if b"\t" in raw or b"\n" in raw or b"\r" in raw:
        return raw.replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return raw


def tsv_field(x: Any) -> bytes:
    """One TSV field: strings and bytes as they are (escaped), ints as digits, else JSON."""
    t = type(x)
    if t is bytes:
        return _escape(x)
    if t is str:
        return _escape(x.encode("utf-8", FS_BYTES))
    if t is int:
        return b"%d" % x
    if t is list or t is tuple:
        try:  # lists of str and numbers need no conversion (an inverted index's values)
            return json.dumps(x, ensure_ascii=False, allow_nan=False).encode(
                "utf-8", "backslashreplace")
        except (TypeError, ValueError):
            pass
    return json.dumps(jsonable(x), ensure_ascii=False).encode("utf-8", "backslashreplace")


def jsonable(x: Any) -> Any:
    """A key or value as JSON holds it: bytes decoded as UTF-8 (invalid bytes replaced),
    tuples and lists as arrays, NaN and infinities as strings."""
    t = type(x)
    if t is bytes:
        return x.decode("utf-8", "replace")
    if t is float and not math.isfinite(x):
        return repr(x)
    if t is tuple or t is list or isinstance(x, tuple):
        return [jsonable(i) for i in x]
    return x


def write_json(records: Iterable[tuple[Any, Any]], out: BinaryIO,
               fields: tuple[str, str] = ("key", "value")) -> int:
    """A JSON array of ``{fields[0]: key, fields[1]: value}`` objects, streamed."""
    n = 0
    out.write(b"[")
    batch: list[str] = []
    kname, vname = fields
    for key, value in records:
        sep = ",\n" if n or batch else "\n"
        batch.append(sep + json.dumps({kname: jsonable(key), vname: jsonable(value)},
                                      ensure_ascii=False))
        if len(batch) >= WRITE_BATCH:
            out.write("".join(batch).encode("utf-8", "backslashreplace"))
            n += len(batch)
            batch.clear()
    out.write("".join(batch).encode("utf-8", "backslashreplace"))
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
        raise JobError(f"cannot write {path}: {exc.strerror or exc}; nothing was written") from exc
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
