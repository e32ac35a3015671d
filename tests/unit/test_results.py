"""pymr.engine.results.JobRecords: partitions fetched through a fake reducer (requests answered
from a table of sorted chunks), merged in the job's order; no sockets."""

from __future__ import annotations

import itertools
from typing import Any

from pymr.engine.fetch import PartitionStreams
from pymr.engine.partitions import PartitionBook
from pymr.engine.results import JobRecords
from pymr.wire import protocol as p

#: partition -> its sorted chunks ([keys, values])
CHUNKS: dict[int, list[tuple[list[Any], list[Any]]]] = {
    0: [(["a", "c"], [1, 3]), (["e"], [5])],
    1: [(["b", "d"], [2, 4])],
    2: [],
}


def records() -> tuple[JobRecords, list[str]]:
    book = PartitionBook("j1", itertools.count(1).__next__, lambda parts: None)
    book.place({"n1": 3})
    for part, chunks in CHUNKS.items():
        book.complete("n1", p.PartitionComplete(
            job_id="j1", node_id="n1", partition=part, records=sum(len(k) for k, _ in chunks),
            chunks=len(chunks), key_types=["str"], value_types=["int"]), now=0.0)
    asked: list[tuple[int, int, int]] = []

    def request(part: int, start: int, count: int, lines: bool) -> None:
        asked.append((part, start, count))
        for seq in range(start, start + count):
            streams.on_data(part, seq, seq == len(CHUNKS[part]) - 1, CHUNKS[part][seq])

    def chunks_of(part: int) -> int | None:
        done = book.done.get(part)
        return done.chunks if done is not None else None

    streams = PartitionStreams(1, request, lambda: None, chunks_of)
    phases: list[str] = []
    return JobRecords(book, streams, "key", phases.append), phases


def test_the_records_merge_in_key_order() -> None:
    recs, phases = records()
    assert list(recs) == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
    assert phases == ["merge"]
    assert (recs.order, recs.key_types, recs.value_types) == ("key", ["str"], ["int"])


def test_by_partition_gives_each_partition_in_turn() -> None:
    recs, phases = records()
    got = [(part, list(it)) for part, it in recs.by_partition()]
    assert got == [(0, [("a", 1), ("c", 3), ("e", 5)]), (1, [("b", 2), ("d", 4)]), (2, [])]
    assert phases == ["fetch"]
