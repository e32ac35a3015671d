"""pymr.engine.summary: what the reducers reported, added into the job's summary."""

from __future__ import annotations

from pymr.engine.summary import JobSummary, add_counters
from pymr.wire import protocol as p


def complete(part: int, records: int, counters: dict[str, int], spilled_bytes: int = 0,
             spilled_runs: int = 0) -> p.PartitionComplete:
    return p.PartitionComplete(job_id="j1", node_id="x", partition=part, records=records,
                               chunks=1, counters=counters, spilled_bytes=spilled_bytes,
                               spilled_runs=spilled_runs)


def test_partitions_add_records_counters_and_spills_per_node() -> None:
    summary = JobSummary(job_id="j1", counters={"words": 10})
    lines = summary.add_partitions([
        ("b", complete(0, 3, {"keys": 3}, spilled_bytes=3 << 20, spilled_runs=2)),
        ("a", complete(1, 4, {"keys": 4, "words": -10})),
        ("b", complete(2, 5, {}, spilled_bytes=1 << 20, spilled_runs=1)),
        ("a", complete(3, 0, {}, spilled_bytes=1 << 19, spilled_runs=1)),
    ])
    assert summary.records == 12 and summary.counters == {"keys": 7}
    assert summary.spilled == {"a": (1 << 19, 1), "b": (4 << 20, 3)}
    assert lines == ["node a spilled 0.5 MiB in 1 run(s) under its memory budget",
                     "node b spilled 4.0 MiB in 3 run(s) under its memory budget"]


def test_no_spill_no_line() -> None:
    summary = JobSummary(job_id="j1")
    assert summary.add_partitions([("a", complete(0, 1, {}))]) == []
    assert summary.spilled == {} and summary.records == 1


def test_a_counter_that_comes_to_zero_is_removed() -> None:
    total = {"a": 2, "b": 1}
    add_counters(total, {"a": -2, "c": 5})
    assert total == {"b": 1, "c": 5}
