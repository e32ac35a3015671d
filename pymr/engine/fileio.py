"""Reading exact byte ranges of a file by offset (spilled outputs; the benchmarks' splits)."""

from __future__ import annotations

import os


def pread_exact(fd: int, length: int, offset: int, name: str = "file") -> bytes:
    """Exactly ``length`` bytes at ``offset`` (short reads finished); OSError if ``name``
    ends before that. One read and no copy in the usual case."""
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    pieces = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            raise OSError(f"{name} ends at offset {offset + got}, before {offset + length}")
        pieces.append(more)
        got += len(more)
    return b"".join(pieces)
