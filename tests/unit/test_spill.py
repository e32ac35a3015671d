"""Spilled runs: a partition that outgrows its memory share gives the same answer from
sorted runs on disk as from memory, for every way a job can combine and order; run files,
their chunks, and part directories."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import pytest

from pymr import protocol as p
from pymr import reduceside
from pymr.errors import JobError, UsageError
from pymr.jobs import JobSpec
from pymr.jobs.program import load_program
from pymr.output import write_tsv
from pymr.partfiles import atomic_dir, cat_parts, write_parts
from pymr.reduceside import ReduceSide
from pymr.runs import SpillError, chunk_ranges, write_run

SUM = "from pymr.api import sum_values\ndef map(line):\n    yield line, 1\n" \
      "combine = reduce = sum_values\n"
LISTS = "def map(line):\n    yield line, 1\ndef reduce(key, values):\n" \
        "    return sorted(values)\n"
COMBINED = "def map(line):\n    yield line, 1\ndef combine(key, values):\n" \
           "    return max(values)\ndef reduce(key, values):\n    return max(values)\n"
MIXED = "def map(line):\n    yield line, 1\ndef reduce(key, values):\n" \
        "    return sum(values)\n"


def chunks(source: str, seed: int, n: int = 4000) -> list[tuple[list[Any], list[Any]]]:
    """Map outputs of a job as a reducer receives them (through the codec)."""
    rng = random.Random(seed)
    out = []
    for _ in range(12):
        d: dict[Any, Any] = {}
        for _ in range(n // 12):
            k: Any = f"k{rng.randrange(n // 3)}"
            if source is MIXED:
                k = rng.choice([k, k.encode(), rng.randrange(50), (k, 1), None])
            v = rng.randrange(1, 100)
            if source in (LISTS, MIXED):
                d.setdefault(k, []).append(v)
            elif source is COMBINED:
                d[k] = max(d.get(k, 0), v)
            else:
                d[k] = d.get(k, 0) + v
        out.append(p.unpack_chunk(p.pack_chunk(list(d), list(d.values()))))
    return out


@pytest.mark.parametrize("order", ["key", "value"])
@pytest.mark.parametrize("source", [SUM, LISTS, COMBINED, MIXED],
                         ids=["sum", "lists", "combine", "mixed-keys"])
def test_spilled_runs_give_the_in_memory_answer(source: str, order: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reduceside, "MAX_FAN_IN", 3)  # exercise the merge of merges
    text = source + f"ORDER = {order!r}\n"
    program = load_program(JobSpec.from_source("j", text))
    memory, spilled = ReduceSide(program), ReduceSide(program, str(tmp_path), "p0")
    for i, chunk in enumerate(chunks(source, seed=len(source))):
        memory.add_chunk(*chunk)
        spilled.add_chunk(*chunk)
        if i % 2:
            spilled.spill(65_536)
    assert spilled.spilled_runs == 6 and spilled.spilled_bytes > 0
    want = memory.finish()
    got = spilled.finish(memory=64 << 10, chunk_records=1000)
    assert got.file is not None, "a spilled partition's output is served from a file"
    served = []
    for seq in range(got.num_chunks(1000)):
        keys, values = p.unpack_chunk(got.chunk(seq, 1000))
        served.extend(zip(keys, values, strict=True))
    assert served == want.records
    assert got.key_types == want.key_types and got.value_types == want.value_types
    got.remove()
    assert os.listdir(tmp_path) == [], "runs are removed once merged, the output at the end"


def test_approx_bytes_grows_with_the_data_and_spill_frees_it(tmp_path: Path) -> None:
    side = ReduceSide(load_program(JobSpec.from_source("j", LISTS)), str(tmp_path), "p")
    sizes = []
    for chunk in chunks(LISTS, seed=3):
        side.add_chunk(*chunk)
        sizes.append(side.approx_bytes())
    assert sizes == sorted(sizes) and sizes[-1] > 100_000
    side.spill(4096)
    assert side.approx_bytes() == 0


def test_a_directory_that_refuses_is_a_spill_error_naming_it(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(SpillError) as info:
        write_run(str(not_a_dir / "spill"), "run0", [(b"a", 1)], 10)
    assert str(not_a_dir) in str(info.value)
    side = ReduceSide(load_program(JobSpec.from_source("j", SUM)), str(not_a_dir), "p")
    side.add_chunk([b"a"], [1])
    with pytest.raises(SpillError):
        side.spill(10)


def test_chunks_of_list_values_are_cut_by_items() -> None:
    values: list[Any] = [[1] * 10, [2] * 600, 5, [3] * 100] + [[4]] * 1000
    ranges = chunk_ranges(values, 500)
    assert ranges[0] == (0, 2)  # the 600 items of one value close the first chunk
    assert [a for a, _ in ranges[1:]] == [b for _, b in ranges[:-1]]
    assert ranges[-1][1] == len(values)
    assert chunk_ranges([1, 2, 3], 2) == [(0, 2), (2, 3)]


def test_part_files_merge_back_to_the_single_answer(tmp_path: Path) -> None:
    records = [(b"z", 9), (b"a", 7), (b"m", 7), (b"q", 1)]  # ORDER = "value"
    parts = {0: [(b"z", 9), (b"m", 7)], 1: [(b"a", 7), (b"q", 1)]}
    target = tmp_path / "out"
    meta = {"job": "j", "order": "value", "fields": ["word", "count"], "format": "tsv",
            "key_types": ["bytes"], "value_types": ["int"]}
    write_parts(str(target) + "/", ((i, iter(r)) for i, r in parts.items()), write_tsv, meta)
    assert sorted(os.listdir(target)) == ["_SUCCESS", "part-00000", "part-00001"]
    single = io.BytesIO()
    write_tsv(records, single)
    merged = io.BytesIO()
    assert cat_parts(str(target), merged) == 4
    assert merged.getvalue() == single.getvalue()


def test_a_failed_part_directory_leaves_nothing(tmp_path: Path) -> None:
    def boom() -> Any:
        yield 0, iter([(b"a", 1)])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_parts(str(tmp_path / "out"), boom(), write_tsv,
                    {"format": "tsv", "order": "key"})
    assert os.listdir(tmp_path) == []
    with pytest.raises(UsageError):
        cat_parts(str(tmp_path), io.BytesIO())  # no _SUCCESS: not a complete output


def test_an_existing_directory_is_replaced_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(JobError), atomic_dir(str(target)) as tmp:
        Path(tmp, "part-00000").write_text("new")
        raise OSError(28, "No space left on device")
    assert os.listdir(target) == ["old"]
    with atomic_dir(str(target)) as tmp:
        Path(tmp, "part-00000").write_text("new")
    assert os.listdir(target) == ["part-00000"]
    assert sorted(os.listdir(tmp_path)) == ["out"]
