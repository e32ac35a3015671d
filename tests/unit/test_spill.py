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

from pymr.engine import reduceside
from pymr.engine.output import write_tsv
from pymr.engine.partfiles import atomic_dir, cat_parts, write_parts
from pymr.engine.reduceside import ReduceSide
from pymr.engine.runs import SpillError, chunk_ranges, write_blocks, write_run, write_sorted
from pymr.errors import JobError, UsageError
from pymr.jobs import JobSpec
from pymr.jobs.program import load_program
from pymr.wire import protocol as p

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


KEEP = "def map(line):\n    yield line, 1\ndef reduce(key, values):\n    return list(values)\n"


def _spill_many(source: str, chunk_list: list[tuple[list[Any], list[Any]]], tmp_path: Path,
                every: int = 1) -> tuple[Any, Any]:
    """The in-memory answer and the answer from a spill after every ``every`` chunks."""
    program = load_program(JobSpec.from_source("j", source))
    memory, spilled = ReduceSide(program), ReduceSide(program, str(tmp_path), "p0")
    for i, chunk in enumerate(chunk_list):
        memory.add_chunk(*chunk)
        spilled.add_chunk(*chunk)
        if i % every == 0:
            spilled.spill(65_536)
    want = memory.finish()
    got = spilled.finish(memory=64 << 10, chunk_records=100)
    served = []
    for seq in range(got.num_chunks(100)):
        keys, values = p.unpack_chunk(got.chunk(seq, 100))
        served.extend(zip(keys, values, strict=True))
    got.remove()
    assert os.listdir(tmp_path) == []
    assert got.key_types == want.key_types and got.value_types == want.value_types
    return served, want.records


def _counts(rng: random.Random, keys: list[Any], n: int, value: Any = None
            ) -> tuple[list[Any], list[Any]]:
    d: dict[Any, Any] = {}
    for _ in range(n):
        k = rng.choice(keys)
        d[k] = d.get(k, 0) + (value if value is not None else rng.randrange(1, 1000))
    return p.unpack_chunk(p.pack_chunk(list(d), list(d.values())))


@pytest.mark.parametrize("keys", ["bytes", "int", "mixed"])
@pytest.mark.parametrize("values", ["int", "float", "big"])
def test_many_summed_runs_and_merges_of_merges_give_the_in_memory_answer(
        keys: str, values: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Summed values over 40 runs, merged 4 at a time in small pieces (so a key's values
    meet across blocks and pieces): the answer of memory, in key and in value order."""
    monkeypatch.setattr(reduceside, "MAX_FAN_IN", 4)
    monkeypatch.setattr(reduceside, "RUN_CHUNK_ITEMS", 7)
    rng = random.Random(keys + values)
    pool: list[Any] = [b"%x" % i for i in range(300)]
    if keys == "int":
        pool = list(range(-150, 150))
    elif keys == "mixed":
        pool = pool[:100] + list(range(100)) + [f"s{i}" for i in range(90)] + \
            [(b"t", i) for i in range(9)] + [None]
    value = {"int": None, "float": 0.5, "big": 1 << 70}[values]
    chunk_list = [_counts(rng, pool, 60, value) for _ in range(40)]
    for order in ("key", "value"):
        source = SUM + f"ORDER = {order!r}\n"
        served, want = _spill_many(source, chunk_list, tmp_path)
        assert served == want


def test_merges_of_merges_keep_a_keys_values_in_arrival_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reduce that sees its values as they came (no combine): a merge of runs takes the
    place of its runs, so the values come in the order of memory."""
    monkeypatch.setattr(reduceside, "MAX_FAN_IN", 3)
    rng = random.Random(5)
    chunk_list = []
    for i in range(17):
        d: dict[Any, Any] = {}
        for j in range(rng.randrange(1, 40)):
            d.setdefault(f"k{rng.randrange(20)}", []).append(i * 100 + j)
        chunk_list.append(p.unpack_chunk(p.pack_chunk(list(d), list(d.values()))))
    served, want = _spill_many(KEEP, chunk_list, tmp_path)
    assert served == want


def test_sum_blocks_sums_each_key_once_across_blocks(monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    monkeypatch.setattr(reduceside, "RUN_CHUNK_ITEMS", 3)
    records = sorted((rng_key, v) for rng_key in range(12) for v in range(rng_key % 4 + 1))
    blocks = [records[a:b] for a, b in [(0, 5), (5, 6), (6, 6), (6, 20), (20, len(records))]]
    want = [(k, sum(v for kk, v in records if kk == k)) for k in range(12)]
    for native in (True, False):
        got = [r for block in reduceside._sum_blocks(iter(blocks), native) for r in block]
        assert got == want
    assert list(reduceside._sum_blocks(iter([]), True)) == []


def test_the_lightest_window_of_runs() -> None:
    assert reduceside._lightest_window([5, 1, 1, 9, 1], 2) == 1
    assert reduceside._lightest_window([5, 1, 1, 9, 1], 5) == 0
    assert reduceside._lightest_window([3, 3, 9, 1, 1], 2) == 3


@pytest.mark.parametrize("lists", [False, True])
def test_written_blocks_and_lists_are_chunked_as_records(tmp_path: Path, lists: bool
                                                         ) -> None:
    """write_blocks (any block sizes) and write_sorted (parallel lists) cut a run into the
    chunks write_run cuts, also when list values weigh by their items."""
    rng = random.Random(lists)
    records: list[tuple[Any, Any]] = [
        (f"k{i:04d}", [0] * rng.randrange(1, 30) if lists and rng.random() < 0.3 else i)
        for i in range(1000)]
    want = write_run(str(tmp_path), "a", records, 50)
    cuts = sorted(rng.sample(range(1, 1000), 40))
    blocks = [records[a:b] for a, b in zip([0, *cuts], [*cuts, 1000], strict=True)]
    got = write_blocks(str(tmp_path), "b", [[]] + blocks, 50)
    got2 = write_sorted(str(tmp_path), "c", [k for k, _ in records], [v for _, v in records],
                        50)
    for run in (got, got2):
        assert run.records == want.records == 1000
        assert [run.chunk(i) for i in range(len(run.offsets))] == \
            [want.chunk(i) for i in range(len(want.offsets))]
        assert list(run) == records
        assert [r for b in run.blocks() for r in b] == records
