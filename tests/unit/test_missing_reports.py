"""A reducer asks for the chunks of a committed output that stalled: soon after the
shuffle goes quiet, never while chunks still arrive, and less and less often if the
re-sends do not come (a slow link is not flooded with requests)."""

from __future__ import annotations

from typing import Any

from pymr.engine.ledger import Manifest, ReducerLedger, chained_crc32
from pymr.engine.reduceside import ReduceSide
from pymr.jobs import builtin_spec
from pymr.jobs.program import load_program
from pymr.net.security import ClusterKey
from pymr.runtime.executor import Executor
from pymr.runtime.reducehost import MISSING_CHECK_S, ReduceHost, ReduceJob
from pymr.wire import protocol as p

CHUNKS = [p.pack_chunk([b"a"], [1]), p.pack_chunk([b"b"], [2])]


def reducer() -> tuple[ReduceHost, ReduceJob, list[p.Message]]:
    sent: list[p.Message] = []
    host = ReduceHost("n", 0, lambda msg, *payload: sent.append(msg), lambda who, why: None)
    spec = p.ExecJob(job_id="j", job_name="wordcount", source="", sha256="",
                     num_partitions=1, partitions=[0], shuffle_endpoints={0: "tcp://x:1"})
    program = load_program(builtin_spec("wordcount"))
    job = ReduceJob(spec=spec, program=program)
    job.ledgers[0] = ReducerLedger([0])
    job.reducers[0] = ReduceSide(program)
    host.jobs["j"] = job
    # output "o" committed with two chunks, of which only the first arrived
    job.ledgers[0].commit("o", [0], 0, Manifest(2, 2, chained_crc32(CHUNKS)))
    job.ledgers[0].stage("o", 0, 0, CHUNKS[0])
    return host, job, sent


def asked(sent: list[Any]) -> list[tuple[str, int, list[int]]]:
    return [(m.output_id, m.partition, m.seqs) for m in sent if isinstance(m, p.ChunksMissing)]


def test_no_request_while_chunks_arrive_then_soon_after_quiet() -> None:
    host, job, sent = reducer()
    job.last_chunk_at = 100.0
    host.report_missing(100.0 + MISSING_CHECK_S / 2)
    assert asked(sent) == [], "chunks arrived just now: the gap may be in flight"
    quiet = 100.0 + MISSING_CHECK_S
    host.report_missing(quiet)
    assert asked(sent) == [], "seen once: wait one more check"
    host.report_missing(quiet + MISSING_CHECK_S)
    assert asked(sent) == [("o", 0, [1])]


def test_repeated_requests_back_off_and_stop_when_complete() -> None:
    host, job, sent = reducer()
    t = 10.0
    times = []
    while t < 40.0:
        before = len(asked(sent))
        host.report_missing(t)
        if len(asked(sent)) > before:
            times.append(t)
        t += MISSING_CHECK_S / 4
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) >= 3 and all(b >= 1.9 * a for a, b in zip(gaps, gaps[1:], strict=False)), \
        f"requests at {times}: not backing off"
    # When the chunk finally arrives, the pair completes and nobody asks again
    job.ledgers[0].stage("o", 0, 1, CHUNKS[1])
    host.merge_ready(job, job.ledgers[0])
    n = len(asked(sent))
    for k in range(20):
        host.report_missing(t + 100 + k)
    assert len(asked(sent)) == n and job.missing_seen == {}


def test_every_message_routed_to_an_executor_has_a_handler_and_others_are_dropped() -> None:
    from pymr.runtime import executor

    types = p.message_types()
    for cls in executor.HANDLERS:
        assert types[cls.TYPE] is cls and "job_id" in cls.__dataclass_fields__
    ex = Executor(0, "n", "ipc://unused", ClusterKey.generate(), parent_pid=1)
    dropped: list[str] = []
    ex.drop = lambda who, why: dropped.append(why)  # type: ignore[method-assign]
    ex.handle(p.StatusRequest(seq=1), [])
    ex.handle(p.Flush(seq=1, job_id="nope"), [])
    ex.handle(p.ExecJobEnd(job_id="nope"), [])  # a job this executor never ran: no noise
    assert dropped == ["unexpected status_request", "flush for unknown job"]
