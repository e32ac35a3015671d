"""Input paths: checks with one-line errors, directories, compression, stdin.

Every input becomes something the master can read again by (offset, length),
so a task can be re-run: a plain file is read in place, a compressed file is
decompressed again up to the offset, and stdin is spooled to a private file.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import InputChanged, UsageError

log = logging.getLogger(__name__)

#: How much of a file is looked at for NUL bytes to call it binary.
BINARY_SNIFF_BYTES = 64 * 1024
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input: ``kind`` is plain, gz, bz2, xz or spooled (stdin or a pipe, copied to
    ``path``)."""

    path: str
    display: str
    kind: str
    size: int
    mtime_ns: int

    @property
    def seekable_plain(self) -> bool:
        return self.kind in ("plain", "spooled")

    def open(self) -> IO[bytes]:
        if self.kind in ("plain", "spooled"):
            return open(self.path, "rb")
        opener: Any = COMPRESSED["." + self.kind]
        return opener(self.path, "rb")  # type: ignore[no-any-return]

    def read(self, offset: int, length: int) -> bytes:
        """Re-read a split for a retry (compressed inputs decompress up to it)."""
        with self.open() as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise InputChanged(f"input changed while reading: {self.display}")
        return data

    def check_unchanged(self) -> None:
        if self.kind == "spooled":
            return
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise InputChanged(f"input changed while reading: {self.display} "
                               f"({exc.strerror})") from exc
        if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
            raise InputChanged(f"input changed while reading: {self.display}; "
                               "run the job again on a file that is not being written")


#: byte-order marks of the wide Unicode encodings (UTF-32 first: its LE mark starts with
#: UTF-16's), whose text is full of NUL bytes
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
              (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def _not_text(path: str, opener: Any = open) -> tuple[str, str] | None:
    """Why the file is not UTF-8 text, and what to do: None when it looks like text."""
    try:
        with opener(path, "rb") as f:
            head = f.read(BINARY_SNIFF_BYTES)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise UsageError(f"{path}: cannot read it as {opener.__module__} data: {exc}") from exc
    if b"\x00" not in head:
        return None
    for bom, encoding in _WIDE_BOMS:
        if head.startswith(bom):
            return (f"is {encoding} text (it starts with a byte-order mark)",
                    f"pymr reads UTF-8: convert it first, e.g. "
                    f"'iconv -f {encoding} -t UTF-8 FILE > FILE.utf8'")
    return "looks binary (NUL bytes near the start)", "pass --binary to count it anyway"


def _kind_of(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return suffix[1:] if suffix in COMPRESSED else "plain"


def _warn_skip(path: str, why: str) -> None:
    log.warning("skipping %s: %s", path, why)


def _check_file(path: str, explicit: bool, binary_ok: bool,
                skip: Callable[[str, str], None] = _warn_skip) -> InputFile | None:
    """An InputFile, or None for a file skipped inside a directory (``skip`` says why)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such file or directory") from exc
    except PermissionError as exc:
        raise UsageError(f"{path}: permission denied") from exc
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        what = ("a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a pipe" if stat.S_ISFIFO(st.st_mode) else "not a regular file")
        if explicit:
            raise UsageError(f"{path}: is {what}; give a regular file, a directory or a "
                             "pipe (or '-' to read standard input)")
        skip(path, what)
        return None
    if not os.access(path, os.R_OK):
        if explicit:
            raise UsageError(f"{path}: permission denied")
        skip(path, "permission denied")
        return None
    kind = _kind_of(path)
    opener: Any = open if kind == "plain" else COMPRESSED["." + kind]
    why = None if binary_ok or not st.st_size else _not_text(path, opener)
    if why is not None:
        if explicit:
            raise UsageError(f"{path}: {why[0]}; {why[1]}")
        skip(path, why[0])
        return None
    return InputFile(path=path, display=path, kind=kind, size=st.st_size,
                     mtime_ns=st.st_mtime_ns)


def resolve_inputs(paths: list[str], *, binary_ok: bool = False,
                   spool_dir: str | None = None, stdin: IO[bytes] | None = None,
                   quiet: bool = False) -> list[InputFile]:
    """Check every path and expand directories (sorted; hidden entries inside are skipped,
    links to files are read like the files, links to directories are not followed).

    A file skipped inside a directory (binary, unreadable, not a regular file, a dangling
    link, a link to a directory) gets a warning naming it; ``quiet``: one warning with
    the count instead."""
    if not paths:
        raise UsageError("no input given: name one or more files or directories, or '-'")
    out: list[InputFile] = []
    skipped: list[str] = []

    def skip(path: str, why: str) -> None:
        skipped.append(path)
        if not quiet:
            _warn_skip(path, why)

    for path in paths:
        if path == "-":
            out.append(_spool(stdin or sys.stdin.buffer, "<stdin>", spool_dir, binary_ok))
            continue
        if _is_pipe(path):
            # `pymr job wordcount <(zcat a.gz)` or a named pipe: read once, like stdin
            out.append(_spool_path(path, spool_dir, binary_ok))
            continue
        if os.path.isdir(path):
            found = _walk_directory(path, binary_ok, skip, out, quiet)
            if not found:
                log.warning("%s: no readable text files in this directory", path)
            continue
        f = _check_file(path, explicit=True, binary_ok=binary_ok)
        if f is not None:
            out.append(f)
    if quiet and skipped:
        log.warning("skipped %d file(s) or folder(s) in the input directories (binary, "
                    "unreadable, broken links, links to folders, not regular files); run "
                    "without -q to see which", len(skipped))
    return out


def _walk_directory(path: str, binary_ok: bool, skip: Callable[[str, str], None],
                    out: list[InputFile], quiet: bool) -> int:
    """Append the text files under ``path`` to ``out`` (sorted); returns how many.

    A link to a file is read like the file (as ``grep -R`` and ``cat dir/*`` do), so a
    file linked twice is read twice. A link to a directory is skipped with a warning:
    never a loop, never a second path through a tree already read (name it to read it)."""
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"{path}: permission denied (cannot list this directory)")
    found = hidden = 0

    def unreadable(exc: OSError) -> None:
        skip(str(exc.filename), exc.strerror or str(exc))

    for root, dirs, files in os.walk(path, onerror=unreadable):  # followlinks=False
        # Hidden entries (.git, .cache, dot files) are not the text a user means by "this
        # directory"; named explicitly, a hidden file is counted.
        shown_dirs = sorted(d for d in dirs if not d.startswith("."))
        shown = sorted(f for f in files if not f.startswith("."))
        hidden += len(dirs) - len(shown_dirs) + len(files) - len(shown)
        dirs[:] = []
        for name in shown_dirs:
            full = os.path.join(root, name)
            if os.path.islink(full):
                skip(full, f"a link to a directory ({os.readlink(full)}); name it to read it")
            else:
                dirs.append(name)
        for name in shown:
            full = os.path.join(root, name)
            if os.path.islink(full):
                try:
                    os.stat(full)
                except OSError as exc:  # dangling, or a loop of links
                    skip(full, f"a broken link to {os.readlink(full)} ({exc.strerror})")
                    continue
            f = _check_file(full, explicit=False, binary_ok=binary_ok, skip=skip)
            if f is not None:
                out.append(f)
                found += 1
    if hidden and not quiet:
        log.warning("%s: skipped %d hidden file(s) or folder(s) (names starting with "
                    "'.'); name them to count them", path, hidden)
    return found


def _is_pipe(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False  # _check_file says what is wrong with it


def _spool_path(path: str, spool_dir: str | None, binary_ok: bool) -> InputFile:
    """A named pipe, read to its end into a private file (see ``_spool``)."""
    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from exc
    with stream:
        return _spool(stream, path, spool_dir, binary_ok)


def _spool(stream: IO[bytes], display: str, spool_dir: str | None,
           binary_ok: bool) -> InputFile:
    """Copy a stream (stdin, a pipe) to a private file, so that splits can be re-read for
    retries; checked for binary data like a named file."""
    fd, path = tempfile.mkstemp(prefix="pymr-stdin-", dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(stream, f, 1 << 20)
        st = os.stat(path)
        why = None if binary_ok or not st.st_size else _not_text(path)
    except OSError as exc:
        os.unlink(path)
        raise UsageError(f"cannot keep a copy of {display} in {os.path.dirname(path)}: "
                         f"{exc.strerror or exc}; free some space or set TMPDIR") from exc
    except BaseException:
        os.unlink(path)  # Ctrl-C while reading: leave nothing behind
        raise
    if why is not None:
        os.unlink(path)
        raise UsageError(f"{display}: {why[0]}; {why[1]}")
    return InputFile(path=path, display=display, kind="spooled", size=st.st_size,
                     mtime_ns=st.st_mtime_ns)


def release_inputs(inputs: list[InputFile]) -> None:
    """Remove the private copies of stdin and pipes once the job is over."""
    for f in inputs:
        if f.kind == "spooled":
            try:
                os.unlink(f.path)
            except OSError:
                pass


def iter_bytes_splits(f: InputFile, split_size: int, max_token: int, *, lines: bool = False
                      ) -> Iterator[tuple[int, int, Any]]:
    """(offset, length, data) for a streamed input; data is a memoryview."""
    from .splits import stream_splits

    offset = 0
    with f.open() as stream:
        try:
            for mv in stream_splits(stream, split_size, max_token,  # type: ignore[arg-type]
                                    name=f.display, lines=lines):
                n = len(mv)
                yield offset, n, mv
                offset += n
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise UsageError(f"{f.display}: cannot decompress it: {exc}") from exc
