"""The job's map tasks: its inputs cut into splits, planned lazily as the scheduler asks
for input, each re-readable by (input, offset, length).

A seekable plain file is cut by ``splits.plan_file_splits`` (on record boundaries, without
reading it all); any other input (compressed, a pipe) is read here and its bytes travel
with the task. For jobs whose map takes line positions, each split knows its first line.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from ..config import JobOptions
from .inputs import InputFile, iter_bytes_splits

#: An input is cut into at least this many splits per slot ...
SPLITS_PER_SLOT = 16
#: ... unless they would be smaller than this.
MIN_AUTO_SPLIT = 1 << 20
#: Under a memory budget a split is at most an executor's share / this (see split_size) ...
SPLIT_MEMORY_RATIO = 32
#: ... and at least this (smaller splits are all task overhead).
MIN_BUDGET_SPLIT = 64 << 10


@dataclass
class SplitRef:
    """Where a task's bytes are: re-readable by (input, offset, length)."""

    input_index: int
    offset: int
    length: int
    data: Any = None            # the bytes of a streamed split until first dispatch
    first_line: int = 0         # 1-based number of its first line (position jobs; else 0)


def split_size(opts: JobOptions, slots: list[int], inputs: list[InputFile]) -> int:
    """The job's split size, or smaller: an input that would give each slot only a few
    splits is cut into ``SPLITS_PER_SLOT`` per slot (not below ``MIN_AUTO_SPLIT``), so
    that the slots finish the map phase together; and under a memory budget, an
    executor checks its share between splits, so one split's map output must fit in
    the quarter of the share it may hold (measured up to about 8x the split's bytes).
    ``slots``: each node's slots."""
    size = opts.split_size
    total_slots = sum(max(1, n) for n in slots) or 1
    total = sum(f.size for f in inputs)
    size = min(size, max(MIN_AUTO_SPLIT, -(-total // (total_slots * SPLITS_PER_SLOT))))
    if opts.memory:
        node_slots = max(slots, default=1) or 1
        size = min(size, max(MIN_BUDGET_SPLIT, opts.memory // node_slots // SPLIT_MEMORY_RATIO))
    return size


def split_source(inputs: list[InputFile], size: int, max_token: int, *, lines: bool,
                 positions: bool) -> Generator[SplitRef, None, None]:
    """Every input's splits of about ``size`` bytes, in order (``lines``: cut at line
    ends; ``positions``: number each split's first line)."""
    from .splits import plan_file_splits

    for index, f in enumerate(inputs):
        line = 1  # the number of the next split's first line, for map(line, pos)
        if f.seekable_plain:
            for s in plan_file_splits(f.path, size, max_token, lines=lines):
                ref = SplitRef(index, s.offset, s.length, first_line=line if positions else 0)
                if positions:
                    line += count_newlines(f, s.offset, s.length)
                yield ref
        else:
            for offset, length, data in iter_bytes_splits(f, size, max_token, lines=lines):
                yield SplitRef(index, offset, length, data, line if positions else 0)
                if positions:
                    line += data.count(b"\n") if isinstance(data, bytes) else \
                        bytes(data).count(b"\n")


def count_newlines(f: InputFile, offset: int, length: int) -> int:
    """Newlines in a byte range of an input (line numbers for positions and errors)."""
    n = 0
    with f.open() as stream:
        stream.seek(offset)
        left = length
        while left > 0:
            block = stream.read(min(left, 1 << 24))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n
