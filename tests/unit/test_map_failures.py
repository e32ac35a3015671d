"""pymr.engine.map_failures: naming what made a map batch fail, called directly with a
job program and a batch of lines (MapSide calls these only after its fast path failed)."""

from __future__ import annotations

from typing import Any

import pytest

from pymr.engine.map_failures import (
    MapFailed,
    check_travel,
    fail_on,
    has_bad_item,
    not_a_pair,
    replay,
)
from pymr.jobs import JobSpec
from pymr.jobs.program import load_program

REDUCE = "\ndef reduce(key, values):\n    return len(values)\n"


def program(source: str) -> Any:
    return load_program(JobSpec.from_source("job", source + REDUCE, filename="job.py"))


def test_replay_names_the_first_line_whose_map_raises() -> None:
    prog = program("def map(line):\n    yield line, {'a': 1}[line]\n")
    # lines 10.. of the split; the third one raises
    with pytest.raises(MapFailed) as info:
        replay(prog, ["a", "a", "b", "c"], 10, "in.txt", 1)
    err = info.value
    assert (err.stage, err.exc_type, err.record, err.fatal) == ("map", "KeyError", 12, False)
    assert "job.py" in err.user_tb and "KeyError" in err.full_tb


def test_replay_fails_a_map_that_returns_none_for_good() -> None:
    prog = program("def map(line):\n    if line == 'x':\n        return None\n"
                   "    return [(line, 1)]\n")
    with pytest.raises(MapFailed) as info:
        replay(prog, ["a", "x"], 0, "in.txt", 1)
    assert info.value.record == 1 and info.value.fatal
    assert "map returned None" in info.value.message


def test_replay_of_lines_that_all_map_fine_returns() -> None:
    prog = program("def map(line):\n    yield line, 1\n")
    assert replay(prog, ["a", "b"], 0, "in.txt", 1) is None


def test_fail_on_names_the_line_and_the_job_line_that_yielded_the_bad_item() -> None:
    prog = program("def map(line):\n    yield line, 1\n    if line == 'b':\n"
                   "        yield line, {1}\n")
    with pytest.raises(MapFailed) as info:
        fail_on(prog, ["a", "b"], 5, "in.txt", 1, has_bad_item(1, set), "a set cannot travel")
    err = info.value
    assert err.record == 6 and err.fatal
    assert err.message == "a set cannot travel (yielded at job.py:4)"


def test_fail_on_with_positions_and_without_a_culprit() -> None:
    # map(line, pos) is called with the line's position, as MapSide calls it
    prog = program("def map(line, pos):\n    yield pos.line, 1\n")
    with pytest.raises(MapFailed) as info:
        fail_on(prog, ["a", "b"], 0, "in.txt", 1, lambda pair: pair[0] == 2, "line two")
    assert info.value.record == 1
    # no line emits it (a map that is not deterministic): still fails, without a record
    with pytest.raises(MapFailed) as info:
        fail_on(prog, ["a"], 0, "in.txt", 1, not_a_pair, "not a pair")
    assert info.value.record == -1 and info.value.message == "not a pair"


def test_check_travel_names_the_key_of_a_bad_value_or_a_bad_key() -> None:
    check_travel([1, "x"], {"a": 1, "b": "x"}, "combine")      # everything travels
    bad_value = {"a": 1, "b": object()}
    with pytest.raises(MapFailed) as info:
        check_travel(bad_value.values(), bad_value, "combine")
    assert info.value.stage == "combine" and info.value.key == "'b'" and info.value.fatal
    assert info.value.message.startswith("a value of type object for key 'b' cannot travel")
    bad_key = {frozenset([1]): 1}
    with pytest.raises(MapFailed) as info:
        check_travel(bad_key.values(), bad_key, "combine")
    assert info.value.message.startswith("a key of type frozenset")


def test_what_counts_as_a_pair_and_a_bad_item() -> None:
    assert not not_a_pair(("k", 1)) and not not_a_pair(["k", 1])
    assert not_a_pair(("k",)) and not_a_pair("ab") and not_a_pair({"k": 1})
    holds_set = has_bad_item(1, set)
    assert holds_set(("k", {1})) and not holds_set(("k", 1)) and not holds_set(({1},))
    assert has_bad_item(0, set)(({1}, 1))
