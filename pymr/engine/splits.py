"""Cut the input into map splits.

Why this module exists: the master hands out splits of a few MiB (docs/ARCHITECTURE.md,
step 2) that must

* cover the input exactly, with no gap and no overlap, so every byte is counted once;
* never cut a word or a UTF-8 character in two, so each executor can decode and tokenize
  its split alone and the sum of the per-split counts equals the count of the whole file;
* cost the master little: for a plain regular file it seeks to each boundary and reads a
  small window there, so a node on the same machine can read its split by offset and the
  master stays off the per-byte path.

Compressed files, stdin and pipes cannot seek, so :func:`stream_splits` reads them with the
same cutting rule and hands out the bytes.

The cutting rule (shared by both functions, so they cut the same bytes the same way): a
split starting at ``s`` covers at most ``[s, s + split_size)``; if the rest of the input
fits, it is the last split. Otherwise it ends right after the last ``\\n`` in that range;
if the range holds no newline, right after its last other ASCII whitespace byte (space,
``\\t``, ``\\r``, ``\\v``, ``\\f``); if it holds none, the token starting at ``s`` is longer
than a split and the split extends to right after the next ASCII whitespace byte (or to
the end of the input), unless that token is longer than ``max_token`` bytes, which raises
:class:`TokenTooLong`.

Why a cut right after an ASCII whitespace byte is safe for the word rule (decode UTF-8 with
replacement, ``str.lower()``, regex over the whole text): a byte below 0x80 is never inside
a multibyte UTF-8 sequence and ends any invalid one, so each piece decodes to exactly the
characters of the whole; whitespace is not part of any word, so no match spans the cut;
and the one context-dependent lowering (Greek final sigma) looks through case-ignorable
characters only, which whitespace is not, so it sees the same context on both sides.

A split therefore holds at most ``max(split_size, max_token + 1)`` bytes, which bounds the
memory of the master, the frames and the executors.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pymr.errors import UsageError

log = logging.getLogger(__name__)

MiB = 1 << 20
DEFAULT_SPLIT_SIZE = 16 * MiB
MAX_TOKEN_SIZE = 64 * MiB  # documented maximum single-token size
BOUNDARY_WINDOW = 64 * 1024  # how far back the master looks for a newline before reading more

# When a split's last BOUNDARY_WINDOW bytes hold no newline, each further backward read
# doubles, up to this size: a file of very long lines then costs a few dozen reads per split
# rather than hundreds, and the master never holds more than this much of one split at once.
_MAX_WINDOW = 4 * MiB
# Read size while extending a split over a token longer than a split. It also bounds the
# tail a stream carries over from such an extension into the next split.
_GROW_CHUNK = 1 * MiB

_NEWLINE = b"\n"
_OTHER_WS = (b" ", b"\t", b"\r", b"\v", b"\f")
_WS_RE = re.compile(rb"[ \t\n\r\v\f]")

_Buffer = bytes | bytearray


@dataclass(frozen=True, slots=True)
class Split:
    """``length`` bytes of the regular file ``path`` from byte ``offset``.

    A plain value (no open file, no data) so the master can plan lazily, send it in a task
    to a node that reads the file by offset, and re-send it on a retry.
    """

    path: str
    offset: int
    length: int


class TokenTooLong(UsageError):
    """A run of bytes with no ASCII whitespace is longer than the maximum token size.

    A usage error (exit 2), not a job failure: it is a property of the input, found while
    planning, and the fix is the user's (a larger ``--max-token``, or the right file: such a
    run usually means a binary or minified file rather than text).
    """

    def __init__(self, path: str, offset: int, max_token: int, lines: bool = False) -> None:
        self.path = path
        self.offset = offset
        self.max_token = max_token
        self.lines = lines
        what, why = ("line", "no newline in it") if lines else ("token", "no whitespace in it")
        super().__init__(
            f"{path}: the {what} starting at byte offset {offset} is longer than the maximum "
            f"{what} size of {max_token} bytes ({why}); raise --max-token if "
            f"this is real text, or check that {path} is the text file you meant")

    def __reduce__(self) -> tuple[type[TokenTooLong], tuple[str, int, int, bool]]:
        # The default reduction would call __init__ with the message alone.
        return (type(self), (self.path, self.offset, self.max_token, self.lines))


class _Shrunk(Exception):
    """Internal: a read came up short, so the file is now shorter than when planning began."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _check_sizes(split_size: int, max_token: int) -> None:
    """Reject sizes that would loop forever or cut nothing, when called, not on first next()."""
    if split_size < 1:
        raise UsageError(f"the split size must be at least 1 byte, not {split_size}")
    if max_token < 1:
        raise UsageError(f"the maximum token size must be at least 1 byte, not {max_token}")


def _last_other_ws(buf: _Buffer, lo: int, hi: int) -> int:
    """Index of the last non-newline ASCII whitespace byte in ``buf[lo:hi]``, or -1.

    One C-level ``rfind`` per byte value; each search starts after the best hit so far, so
    the later ones only scan the part that could still beat it.
    """
    best = lo - 1
    for ws in _OTHER_WS:
        i = buf.rfind(ws, best + 1, hi)
        if i > best:
            best = i
    return best if best >= lo else -1


def _last_boundary(buf: _Buffer, lo: int, hi: int, lines: bool = False) -> int:
    """Index just after the preferred cut in ``buf[lo:hi]``, or -1 if it has no whitespace
    (with ``lines``: no newline).

    A newline wins over other whitespace so that splits hold whole lines whenever a line fits.
    """
    i = buf.rfind(_NEWLINE, lo, hi)
    if i < 0 and not lines:
        i = _last_other_ws(buf, lo, hi)
    return i + 1 if i >= 0 else -1


def _first_ws(buf: _Buffer, lo: int, hi: int, lines: bool = False) -> int:
    """Index of the first ASCII whitespace byte (newline included) in ``buf[lo:hi]``, or -1
    (with ``lines``: of the first newline)."""
    if lines:
        return buf.find(_NEWLINE, lo, hi)
    m = _WS_RE.search(buf, lo, hi)
    return m.start() if m else -1


# --------------------------------------------------------------------------- plain files


def plan_file_splits(path: str, split_size: int = DEFAULT_SPLIT_SIZE,
                     max_token: int = MAX_TOKEN_SIZE, *, lines: bool = False
                     ) -> Iterator[Split]:
    """Cut a plain regular file into splits by seeking and scanning near each boundary.

    The master must not read the whole file: for text with lines shorter than
    BOUNDARY_WINDOW it reads one window per split (the last split is not read at all), so
    planning costs a few reads per split whatever the file size. Only a split whose range
    holds no newline is scanned further back (at most its own length), and only a token
    longer than a split is scanned forward (at most ``max_token`` bytes).

    Lazy: the file is opened on the first ``next()`` and kept open until the iterator is
    exhausted or closed; :class:`TokenTooLong` is raised when the planning reaches the
    token, possibly after some splits were yielded. Sizes are checked at once
    (:class:`UsageError`). ``OSError`` from opening or reading propagates unchanged: what a
    missing or unreadable input means is the caller's policy.

    The file's size is taken when the file is opened. Bytes appended later are not
    planned; if a read finds the file shorter, planning continues up to the new end. The
    caller detects both by comparing size and mtime.

    With ``lines`` (jobs whose map takes one line at a time) a split is cut only right
    after a newline: a line longer than a split extends it, up to ``max_token`` bytes.
    """
    _check_sizes(split_size, max_token)
    return _plan_file(os.fspath(path), split_size, max_token, lines)


def _plan_file(path: str, split_size: int, max_token: int, lines: bool) -> Iterator[Split]:
    with open(path, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path}: not a regular file, so it cannot be split by offset; "
                             "stream it instead")
        size = st.st_size
        start = 0
        while start < size:
            if size - start <= split_size:
                yield Split(path, start, size - start)
                return
            try:
                cut = _file_cut(f, path, start, size, split_size, max_token, lines)
            except _Shrunk as exc:
                log.debug("%s: shrank from %d to %d bytes while planning", path, size, exc.size)
                size = exc.size
                continue
            yield Split(path, start, cut - start)
            start = cut


def _read_at(f: BinaryIO, offset: int, n: int) -> bytearray:
    """Exactly ``n`` bytes at ``offset``; raise _Shrunk if the file now ends before that."""
    f.seek(offset)
    buf = bytearray(n)
    got = _fill(f, buf, 0, path_for_errors=getattr(f, "name", "<file>"))
    if got < n:
        raise _Shrunk(offset + got)
    return buf


def _file_cut(f: BinaryIO, path: str, start: int, size: int, split_size: int,
              max_token: int, lines: bool = False) -> int:
    """Where the split starting at ``start`` ends, given ``size - start > split_size``."""
    end = start + split_size
    # Backward from the end of the range: the last window first, since text has a newline
    # there; further back only if it has none. Remember the last other whitespace seen, so
    # a range without newlines is read only once.
    hi, window, last_ws = end, BOUNDARY_WINDOW, -1
    while hi > start:
        lo = max(start, hi - window)
        data = _read_at(f, lo, hi - lo)
        i = data.rfind(_NEWLINE)
        if i >= 0:
            return lo + i + 1
        if last_ws < 0 and not lines:
            j = _last_other_ws(data, 0, len(data))
            if j >= 0:
                last_ws = lo + j
        hi = lo
        window = min(2 * window, max(_MAX_WINDOW, BOUNDARY_WINDOW))
    if last_ws >= 0:
        return last_ws + 1
    # No whitespace in the whole range: one token from ``start`` fills it. Extend forward to
    # the next whitespace byte, looking no further than a maximal token plus that byte.
    limit = min(size, start + max_token + 1)
    pos = end
    while pos < limit:
        n = min(_GROW_CHUNK, limit - pos)
        data = _read_at(f, pos, n)
        j = _first_ws(data, 0, n, lines)
        if j >= 0:
            log.debug("%s: split at %d extended to %d bytes for a token longer than a split",
                      path, start, pos + j + 1 - start)
            return pos + j + 1
        pos += n
    if limit == size and size - start <= max_token:
        return size
    raise TokenTooLong(path, start, max_token, lines)


# --------------------------------------------------------------------------- streams


def stream_splits(stream: BinaryIO, split_size: int = DEFAULT_SPLIT_SIZE,
                  max_token: int = MAX_TOKEN_SIZE, name: str = "<stream>", *,
                  lines: bool = False) -> Iterator[memoryview]:
    """Same cutting rule for a stream that cannot seek (gzip/bz2/xz, stdin, pipes).

    Each split is read with ``readinto`` into a fresh ``bytearray`` and yielded as a
    ``memoryview`` of it, ready to send with ``copy=False``: the bytes are copied once, from
    the stream. Only the tail after the cut (usually part of a line) is carried into the
    next buffer; big buffers are never concatenated. Since every split has its own buffer,
    a yielded view stays valid while later splits are read (hold it as long as a send
    needs it). A view may pin up to ``split_size + 1`` bytes: the buffer also held the tail.

    The stream is read in blocking mode, never after it reported end-of-file (stdin on a
    terminal would wait again), and never closed. Sizes are checked at once;
    :class:`TokenTooLong` names ``name`` and the token's offset in the stream's bytes (the
    uncompressed bytes, for a compressed file). ``lines`` cuts only after newlines, as in
    :func:`plan_file_splits`.
    """
    _check_sizes(split_size, max_token)
    return _stream(stream, split_size, max_token, name, lines)


def _stream(stream: BinaryIO, split_size: int, max_token: int, name: str,
            lines: bool = False) -> Iterator[memoryview]:
    pending = b""  # bytes after the previous cut, already read from the stream
    offset = 0  # stream offset of the split being cut
    eof = False
    while True:
        # One byte more than a split, so a full buffer proves more input follows.
        buf = bytearray(max(split_size + 1, len(pending)))
        n = len(pending)
        buf[:n] = pending
        pending = b""
        if not eof:
            n += _fill(stream, buf, n, path_for_errors=name)
            eof = n < len(buf)
        if n <= split_size:  # the rest fits (only possible at end-of-file)
            if n:
                yield memoryview(buf)[:n]
            return
        cut = _last_boundary(buf, 0, split_size, lines)
        if cut >= 0:
            pending = bytes(memoryview(buf)[cut:n])
        else:
            cut, pending, eof = _extend(stream, buf, n, eof, offset, split_size, max_token, name,
                                        lines)
        yield memoryview(buf)[:cut]
        offset += cut


def _extend(stream: BinaryIO, buf: bytearray, n: int, eof: bool, offset: int, split_size: int,
            max_token: int, name: str, lines: bool = False) -> tuple[int, bytes, bool]:
    """Grow ``buf`` in place over a token longer than a split; return (cut, tail, eof).

    ``buf[:split_size]`` holds no whitespace, so a token starts at ``buf[0]``. Chunks are read
    into their own buffer and only their part up to the whitespace byte is appended: the
    split ends exactly at the cut and the rest becomes the carried tail. Never reads more
    than a maximal token plus one byte.
    """
    j = _first_ws(buf, split_size, n, lines)
    if j >= 0:
        if j > max_token:
            raise TokenTooLong(name, offset, max_token, lines)
        return j + 1, bytes(memoryview(buf)[j + 1:n]), eof
    del buf[n:]
    while True:
        if n > max_token:
            raise TokenTooLong(name, offset, max_token, lines)
        if eof:
            return n, b"", True
        want = min(_GROW_CHUNK, max_token + 1 - n)
        chunk = bytearray(want)
        got = _fill(stream, chunk, 0, path_for_errors=name)
        eof = got < want
        j = _first_ws(chunk, 0, got, lines)
        if j >= 0:
            buf += memoryview(chunk)[:j + 1]
            log.debug("%s: split at %d extended to %d bytes for a token longer than a split",
                      name, offset, n + j + 1)
            return n + j + 1, bytes(memoryview(chunk)[j + 1:got]), eof
        buf += memoryview(chunk)[:got]
        n += got


def _fill(stream: BinaryIO, buf: bytearray, start: int, path_for_errors: str) -> int:
    """Read into ``buf[start:]`` until it is full or the stream ends; return the count.

    Loops because ``readinto`` may return short counts (pipes, decompressors) long before
    end-of-file; a return of 0 is end-of-file. Falls back to ``read`` for file-like objects
    without ``readinto``.
    """
    pos, end = start, len(buf)
    if pos >= end:
        return 0
    readinto = getattr(stream, "readinto", None)
    with memoryview(buf) as view:
        while pos < end:
            if readinto is not None:
                got = readinto(view[pos:])
            else:
                data = stream.read(end - pos)
                got = len(data) if data is not None else None
                if got:
                    view[pos:pos + got] = data
            if got is None:
                raise ValueError(f"{path_for_errors}: the stream is in non-blocking mode and "
                                 "has no data ready; splits need a blocking stream")
            if got == 0:
                break
            pos += got
    return pos - start
