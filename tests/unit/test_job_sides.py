"""The job's map side and reduce side as units (no sockets), the record codec, the total
order: what every job relies on, tested without a cluster."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymr.engine.mapside import Cancelled, MapFailed, MapSide, split_lines
from pymr.engine.reduceside import ReduceError, ReduceSide
from pymr.jobs import JobSpec
from pymr.jobs.program import load_program
from pymr.wire import protocol as p
from pymr.wire.keys import ListKey, freeze_key, order_key, partition_of, record_sort_key, thaw
from tests import helpers

BIGRAMS = helpers.SMALLEST_JOB


def program(source: str, params: dict[str, str] | None = None, name: str = "job") -> Any:
    return load_program(JobSpec.from_source(name, source, filename=f"{name}.py"), params)


def run_sides(source: str, splits: list[bytes], partitions: int = 3,
              params: dict[str, str] | None = None) -> list[tuple[Any, Any]]:
    """Map each split, shuffle through the codec by partition_of, reduce, merge: a whole
    job in one process, through the same units the executors use."""
    prog = program(source, params)
    reducers = [ReduceSide(prog) for _ in range(partitions)]
    for split in splits:
        side = MapSide(prog)
        side.add_split(split, file="in.txt", first_line=1)
        records, _ = side.finish()
        for key, value in records.items():
            chunk = p.unpack_chunk(p.pack_chunk([key], [value]))
            reducers[partition_of(key, partitions)].add_chunk(*chunk)
    runs = [r.finish() for r in reducers]
    kt = set().union(*(r.key_types for r in runs))
    vt = set().union(*(r.value_types for r in runs))
    out = [rec for r in runs for rec in r.records]
    return sorted(out, key=record_sort_key(prog.order, kt, vt))


def test_smallest_job_counts_bigrams_across_splits() -> None:
    got = dict(run_sides(BIGRAMS, [b"a b c\n", b"a b\r\nb c\n", b"", b"c"]))
    assert got == {"a b": 2, "b c": 2}


def test_lines_are_decoded_once_with_crlf_removed_and_bad_bytes_counted() -> None:
    lines, bad = split_lines(b"one\r\ntwo\rx\n\xffthree\n\n")
    assert lines == ["one", "two\rx", "\ufffdthree", ""]
    assert bad == 1
    assert split_lines(b"") == ([], 0)
    assert split_lines(b"last without newline") == (["last without newline"], 0)


def test_combine_on_and_off_give_the_same_answer() -> None:
    with_combine = BIGRAMS + "\ncombine = reduce\n"
    splits = [b"x y x y x y\n" * 300, b"y x\nx y z\n"]
    assert run_sides(BIGRAMS, splits) == run_sides(with_combine, splits)
    summed = "from pymr.api import sum_values\n" + BIGRAMS.replace(
        "def reduce(key, values):\n    return sum(values)\n", "combine = reduce = sum_values\n")
    assert run_sides(summed, splits) == run_sides(BIGRAMS, splits)


TYPED = '''
def map(line):
    yield line, 1
    yield line.encode(), 2
    yield (line, len(line)), [line]
    yield len(line), None
    yield [line, 1.5], (True, b"x")
    yield None, 0.25

def reduce(key, values):
    return values[0] if len(values) == 1 else sorted(values, key=repr)
'''


def test_typed_keys_and_values_round_trip() -> None:
    got = run_sides(TYPED, [b"ab\n"])
    by_key = {repr(k): (k, v) for k, v in got}
    assert by_key["'ab'"] == ("ab", 1) and type(by_key["'ab'"][0]) is str
    assert by_key["b'ab'"] == (b"ab", 2)
    assert by_key["('ab', 2)"] == (("ab", 2), ["ab"])
    k, v = by_key["['ab', 1.5]"]
    assert type(k) is ListKey and thaw(k) == ["ab", 1.5] and v == (True, b"x")
    assert by_key["None"] == (None, 0.25)
    # the documented total order: None < numbers < str < bytes < tuples and lists
    # (tuples and lists compare item by item, together: 1.5 < 2)
    assert [thaw(k) for k, _ in got] == [None, 2, "ab", b"ab", ["ab", 1.5], ("ab", 2)]


def test_a_list_key_is_not_a_tuple_key() -> None:
    assert freeze_key(["a"]) != ("a",) and freeze_key(("a",)) == ("a",)
    assert len({freeze_key(["a"]), ("a",)}) == 2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                          st.text(max_size=5), st.binary(max_size=5),
                          st.tuples(st.integers(), st.text(max_size=3))), max_size=30))
def test_order_key_is_a_total_order_and_equal_keys_share_a_partition(keys: list[Any]) -> None:
    ordered = sorted(keys, key=order_key)  # raises if two keys cannot be compared
    for a, b in zip(ordered, ordered[1:], strict=False):
        assert not order_key(b) < order_key(a)
    for k in keys:
        if type(k) is float and not math.isnan(k) and k.is_integer():
            assert partition_of(k, 97) == partition_of(int(k), 97)
    assert p.unpack_records(p.pack_records([keys])) == [[k for k in keys]] or any(
        type(k) is float and math.isnan(k) for k in keys)


def test_value_order_is_largest_first_then_key() -> None:
    key = record_sort_key("value", {"str"}, {"int"})
    assert key is not None
    assert sorted([("b", 1), ("a", 1), ("c", 5)], key=key) == [("c", 5), ("a", 1), ("b", 1)]
    mixed = record_sort_key("value", {"str"}, {"int", "float"})
    assert mixed is not None
    assert sorted([("b", 1), ("a", 2.5)], key=mixed) == [("a", 2.5), ("b", 1)]


def test_a_value_that_cannot_travel_names_its_type_and_the_line_that_yielded_it() -> None:
    prog = program("def map(line):\n    yield line, {1, 2}\n\ndef reduce(k, vs):\n"
                   "    return vs\n", name="sets")
    side = MapSide(prog)
    with pytest.raises(MapFailed) as info:
        side.add_split(b"fine\n")
    assert info.value.fatal and info.value.record == 0
    assert "type set cannot travel" in info.value.message
    assert "sets.py:2" in info.value.message


def test_map_that_raises_names_the_line_within_the_split() -> None:
    prog = program("def map(line):\n    if line == 'bad':\n        raise KeyError(line)\n"
                   "    yield line, 1\n\ndef reduce(k, vs):\n    return sum(vs)\n", name="kb")
    side = MapSide(prog)
    with pytest.raises(MapFailed) as info:
        side.add_split(b"a\nb\nc\nbad\nd\n")
    err = info.value
    assert err.record == 3 and err.exc_type == "KeyError" and not err.fatal
    assert 'kb.py", line 3, in map' in err.user_tb and "raise KeyError(line)" in err.user_tb
    assert "pymr" not in err.user_tb.replace("Traceback of the job's code", "")


def test_map_must_yield_pairs() -> None:
    prog = program("def map(line):\n    yield line\n\ndef reduce(k, vs):\n    return vs\n",
                   name="single")
    with pytest.raises(MapFailed) as info:
        MapSide(prog).add_split(b"ab\n")
    assert "must yield (key, value) pairs" in info.value.message


def test_reduce_error_names_the_key() -> None:
    prog = program("def map(line):\n    yield line, 1\n\ndef reduce(k, vs):\n"
                   "    return 1 / (k != 'zero')\n", name="div")
    side = ReduceSide(prog)
    side.add_chunk(["zero", "one"], [[1], [1]])
    with pytest.raises(ReduceError) as info:
        side.finish()
    assert info.value.key == "'zero'" and info.value.exc_type == "ZeroDivisionError"
    assert "div.py" in info.value.user_tb


def test_counters_travel_with_the_map_output() -> None:
    prog = program("from pymr.api import count\n\ndef map(line):\n    count('lines')\n"
                   "    yield line, 1\n\ndef reduce(k, vs):\n    return sum(vs)\n")
    side = MapSide(prog)
    side.add_split(b"a\nb\n\xff\n")
    _, counters = side.finish()
    assert counters == {"lines": 3, "invalid_utf8": 1}


def test_cancel_check_stops_a_split_between_pieces() -> None:
    prog = program(BIGRAMS)
    side = MapSide(prog)
    with pytest.raises(Cancelled):
        side.add_split(b"a b\n" * 20_000, check=lambda: True)


def test_position_jobs_see_file_and_line(tmp_path: Path) -> None:
    prog = program("def map(line, pos):\n    yield (pos.file, pos.line), line\n\n"
                   "def reduce(k, vs):\n    return vs[0]\n")
    side = MapSide(prog)
    side.add_split(b"x\ny\n", file="f.txt", first_line=10)
    records, _ = side.finish()
    assert records == {("f.txt", 10): ["x"], ("f.txt", 11): ["y"]}


_CHUNK_JOB = ("class C:\n    def __init__(self):\n        self.d = {}\n"
              "    def add(self, data):\n        for w in bytes(data).split():\n"
              "            self.d[w] = self.d.get(w, 0) + 1\nEXTRA"
              "def chunk_mapper(params):\n    return MADE\n\n"
              "def reduce(k, vs):\n    return sum(vs)\n\ncombine = reduce\n")


def _chunk_job(extra: str, made: str) -> str:
    return _CHUNK_JOB.replace("EXTRA", extra).replace("MADE", made)


def test_a_chunk_mapper_that_is_not_one_fails_at_once_naming_what_is_missing() -> None:
    prog = program(_chunk_job("", "None"), name="cm")
    with pytest.raises(MapFailed) as info:
        MapSide(prog)
    assert info.value.fatal and "None has no add or finish()" in info.value.message


def test_a_chunk_mappers_size_that_raises_is_the_jobs_error() -> None:
    extra = ("    def size(self):\n        raise RuntimeError('size broke')\n"
             "    def finish(self):\n        return self.d\n")
    side = MapSide(program(_chunk_job(extra, "C()"), name="cm"))
    side.add_split(b"a b a\n")
    with pytest.raises(MapFailed) as info:
        side.size()
    assert info.value.exc_type == "RuntimeError" and 'cm.py", line' in info.value.user_tb


def test_a_key_that_cannot_travel_is_called_a_key() -> None:
    extra = "    def finish(self):\n        return {object(): 1}\n"
    side = MapSide(program(_chunk_job(extra, "C()"), name="cm"))
    side.add_split(b"a\n")
    with pytest.raises(MapFailed) as info:
        side.finish()
    assert info.value.message.startswith("a key of type object")


def test_keys_holding_a_nan_are_one_key_across_lines_splits_and_reducers() -> None:
    source = ("def map(line):\n    yield (line[0], float('nan')), 1\n"
              "    yield [float('nan'), (float('nan'),)], 1\n\n"
              "def reduce(key, values):\n    return sum(values)\n")
    out = run_sides(source, [b"a\na\nb\n", b"a\n"], partitions=2)
    got = sorted((repr(k), v) for k, v in out)
    assert got == [("('a', nan)", 3), ("('b', nan)", 1), ("[nan, (nan,)]", 4)]


_MERGE_KEYS = st.one_of(st.text(max_size=3), st.binary(max_size=2), st.integers(-5, 5),
                        st.floats(allow_nan=False), st.none(),
                        st.tuples(st.integers(0, 2), st.text(max_size=1)))


@settings(max_examples=300)
@given(st.lists(st.tuples(_MERGE_KEYS, st.integers(-3, 3)), max_size=80),
       st.integers(1, 6), st.sampled_from(["key", "value", "runs"]), st.integers(1, 7))
def test_the_block_merge_is_a_sort_of_the_runs(
        records: list[tuple[Any, Any]], parts: int, order: str, block: int) -> None:
    """keys.merge_sorted (a block at a time, sorted in C) gives one sort of every run's
    records, in every order, for any mix of types; runs of a spill may repeat a key
    across runs (and, after a merge of merges, within one): equal keys come out together."""
    from pymr.wire import keys

    saved, keys.MERGE_BLOCK = keys.MERGE_BLOCK, block
    try:
        _check_block_merge(records, parts, order)
    finally:
        keys.MERGE_BLOCK = saved


def _check_block_merge(records: list[tuple[Any, Any]], parts: int, order: str) -> None:
    from pymr.wire import keys

    kt, vt = keys.type_names(k for k, _ in records), keys.type_names(v for _, v in records)
    if order == "runs":  # a spilled partition: by key only, a key in several runs
        key = lambda kv: keys.order_key(kv[0])  # noqa: E731
        runs = [sorted(records[i::parts], key=key) for i in range(parts)]
        merged = list(keys.merge_sorted(runs, key))
        assert [key(r) for r in merged] == sorted(key(r) for r in records)
        assert sorted(map(repr, merged)) == sorted(map(repr, records))
        return
    unique = list(dict(records).items())  # the master: a key lives in one partition
    by_part: list[list[tuple[Any, Any]]] = [[] for _ in range(parts)]
    for k, v in unique:
        by_part[partition_of(k, parts)].append((k, v))
    for run in by_part:
        keys.sort_records(run, order, kt, vt)
    merged = list(keys.merge_sorted([r for r in by_part if r], record_sort_key(order, kt, vt),
                                    lambda b: keys.sort_records(b, order, kt, vt)))
    keys.sort_records(unique, order, kt, vt)
    assert merged == unique
