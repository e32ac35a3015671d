"""pymr.engine.task_source: the split size chosen for a job, and its inputs' splits with their
first lines, from small explicit files; no sockets."""

from __future__ import annotations

import gzip
from pathlib import Path

from pymr.config import JobOptions
from pymr.engine.inputs import InputFile
from pymr.engine.task_source import (
    MIN_AUTO_SPLIT,
    MIN_BUDGET_SPLIT,
    SPLIT_MEMORY_RATIO,
    SPLITS_PER_SLOT,
    split_size,
    split_source,
)

MiB = 1 << 20


def sized(n: int) -> InputFile:
    return InputFile("/nonexistent", "x", "plain", n, 0)


def test_a_small_input_is_cut_for_every_slot_but_not_below_the_floor() -> None:
    opts = JobOptions(split_size=16 * MiB)
    assert split_size(opts, [2, 2], [sized(1024 * MiB)]) == 1024 * MiB // (4 * SPLITS_PER_SLOT)
    assert split_size(opts, [2, 2], [sized(10 * MiB)]) == MIN_AUTO_SPLIT
    assert split_size(opts, [1], [sized(10_000 * MiB)]) == 16 * MiB       # the job's size
    assert split_size(opts, [0, 0], [sized(256 * MiB)]) == 256 * MiB // (2 * SPLITS_PER_SLOT)


def test_a_memory_budget_bounds_the_split_by_the_biggest_nodes_share() -> None:
    opts = JobOptions(split_size=16 * MiB, memory=256 * MiB)
    share = 256 * MiB // 4 // SPLIT_MEMORY_RATIO
    assert split_size(opts, [4, 2], [sized(10_000 * MiB)]) == share
    tiny = JobOptions(split_size=16 * MiB, memory=64 * MiB)
    assert split_size(tiny, [64], [sized(10_000 * MiB)]) == MIN_BUDGET_SPLIT


def test_splits_number_their_first_lines_in_plain_and_compressed_inputs(
        tmp_path: Path) -> None:
    data = b"".join(b"line %d\n" % i for i in range(1, 41))
    plain = tmp_path / "a.txt"
    plain.write_bytes(data)
    packed = tmp_path / "b.txt.gz"
    packed.write_bytes(gzip.compress(data))
    inputs = [InputFile(str(plain), "a.txt", "plain", len(data), 0),
              InputFile(str(packed), "b.txt.gz", "gz", packed.stat().st_size, 0)]
    refs = list(split_source(inputs, 64, 1024, lines=True, positions=True))
    for index in (0, 1):
        mine = [r for r in refs if r.input_index == index]
        assert len(mine) > 1 and sum(r.length for r in mine) == len(data)
        for ref in mine:
            start = data[:ref.offset].count(b"\n") + 1
            assert ref.first_line == start
            assert data[ref.offset:ref.offset + ref.length].startswith(b"line %d\n" % start)
    assert all(r.data is None for r in refs if r.input_index == 0)   # re-read by path
    assert all(r.data is not None for r in refs if r.input_index == 1)
    unnumbered = list(split_source(inputs[:1], 64, 1024, lines=True, positions=False))
    assert {r.first_line for r in unnumbered} == {0}
