"""pymr.runtime.reducehost.ReduceHost: chunks and commits in, each pair merged once, partitions
finished, reported and served, with explicit messages and lists for what it sends."""

from __future__ import annotations

from typing import Any

from pymr.engine.ledger import chained_crc32
from pymr.jobs import builtin_spec
from pymr.jobs.program import load_program
from pymr.runtime.reducehost import ReduceHost
from pymr.wire import protocol as p

A = [p.pack_chunk([b"a", b"b"], [1, 2]), p.pack_chunk([b"c"], [3])]
B = [p.pack_chunk([b"a"], [10])]


class Harness:
    """A host reducing partition 0 of a word count job; sends and drops are recorded."""

    def __init__(self, partitions: tuple[int, ...] = (0,)) -> None:
        self.sent: list[tuple[p.Message, list[Any]]] = []
        self.dropped: list[str] = []
        self.now = 5.0
        self.host = ReduceHost(
            "n1", 0, lambda msg, *payload: self.sent.append((msg, list(payload))),
            lambda who, why: self.dropped.append(why), clock=lambda: self.now)
        self.program = load_program(builtin_spec("wordcount"))
        self.host.start_job(self.spec(list(partitions)), self.program)

    @staticmethod
    def spec(partitions: list[int], epoch: int = 1) -> p.ExecJob:
        return p.ExecJob(job_id="j", job_name="wordcount", source="", sha256="",
                         num_partitions=2, partitions=partitions,
                         shuffle_endpoints={0: "ep0", 1: "ep1"}, epoch=epoch)

    def chunks(self, output_id: str, chunks: list[bytes], part: int = 0) -> None:
        for seq, chunk in enumerate(chunks):
            self.host.on_chunk(p.ShuffleChunk(job_id="j", output_id=output_id, partition=part,
                                              seq=seq), [chunk])

    def commit(self, output_id: str, tasks: list[int], chunks: list[bytes]) -> None:
        records = sum(len(p.unpack_chunk(c)[0]) for c in chunks)
        self.host.on_commit(p.Commit(seq=1, job_id="j", output_ids=[output_id], tasks=[tasks],
                                     manifests=[{0: [len(chunks), records,
                                                     chained_crc32(chunks)]}]))

    def of(self, cls: type[p.Message]) -> list[Any]:
        return [m for m, _ in self.sent if isinstance(m, cls)]

    def fetch(self, start: int = 0, count: int = 8) -> dict[Any, Any]:
        before = len(self.sent)
        self.host.serve_fetch(p.FetchPartition(job_id="j", partition=0, start=start,
                                               count=count))
        out: dict[Any, Any] = {}
        for msg, payload in self.sent[before:]:
            assert isinstance(msg, p.PartitionData)
            out.update(zip(*p.unpack_chunk(payload[0]), strict=True))
        return out


def test_committed_chunks_merge_once_and_the_partition_completes() -> None:
    h = Harness()
    h.chunks("o1", A)
    h.commit("o1", [0], A)
    h.commit("o2", [1], B)   # commit before its chunks
    h.chunks("o2", B)
    h.chunks("o1", A)        # a late duplicate changes nothing
    h.commit("o1", [0], A)
    assert h.of(p.PartitionComplete) == []
    h.host.input_complete(p.InputComplete(seq=2, job_id="j", num_tasks=2))
    (done,) = h.of(p.PartitionComplete)
    assert (done.partition, done.records) == (0, 3)
    assert h.fetch() == {b"a": 11, b"b": 2, b"c": 3}
    (last,) = h.of(p.PartitionData)
    assert last.last


def test_a_dropped_output_is_never_merged() -> None:
    h = Harness()
    h.chunks("loser", B)
    h.host.drop_output(p.DropOutput(seq=1, job_id="j", output_id="loser"))
    h.chunks("winner", A)
    h.commit("winner", [0], A)
    h.host.input_complete(p.InputComplete(seq=2, job_id="j", num_tasks=1))
    assert h.fetch() == {b"a": 1, b"b": 2, b"c": 3}


def test_fetch_before_completion_and_foreign_chunks_are_dropped() -> None:
    h = Harness()
    h.host.serve_fetch(p.FetchPartition(job_id="j", partition=0, start=0, count=1))
    h.chunks("o", B, part=1)
    assert h.dropped == ["fetch of a partition that is not complete",
                         "chunk for a partition this executor does not reduce"]
    assert h.sent == []


def test_a_partition_that_moved_away_is_freed() -> None:
    h = Harness(partitions=(0, 1))
    h.chunks("o", B)
    h.host.start_job(h.spec([1], epoch=2), h.program)
    assert set(h.host.jobs["j"].ledgers) == {1}
    h.chunks("o", B)
    assert h.dropped == ["chunk for a partition this executor does not reduce"]


def test_chunks_arriving_postpone_missing_reports() -> None:
    h = Harness()
    h.commit("o", [0], A)
    h.now = 10.0
    h.chunks("o", A[:1])
    h.host.report_missing(10.2)
    h.host.report_missing(11.0)
    assert h.of(p.ChunksMissing) == [], "asked only once the gap stayed for a check"
    h.host.report_missing(11.5)
    assert [(m.output_id, m.seqs) for m in h.of(p.ChunksMissing)] == [("o", [1])]


def test_end_job_forgets_the_partitions() -> None:
    h = Harness()
    h.chunks("o", A)
    h.commit("o", [0], A)
    h.host.input_complete(p.InputComplete(seq=2, job_id="j", num_tasks=1))
    h.host.end_job("j")
    h.host.end_job("j")  # twice: nothing left, no error
    assert h.host.jobs == {}
