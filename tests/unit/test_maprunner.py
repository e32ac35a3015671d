"""pymr.runtime.maprunner.MapRunner: batches, flushes, cancels and re-sends, with explicit map
tasks, a list for the reports and a function for the shuffle (no sockets)."""

from __future__ import annotations

from typing import Any

from pymr.jobs import builtin_spec
from pymr.jobs.program import load_program
from pymr.runtime.maprunner import MapRunner
from pymr.wire import protocol as p

SPLIT = b"the cat the dog\na cat\n"


class Harness:
    """A runner of one word count job over two partitions; what it sends is recorded."""

    def __init__(self, taken: bool = True) -> None:
        self.reports: list[p.Message] = []
        self.pushed: list[tuple[str, int, str, list[int], int]] = []
        self.chunks: dict[tuple[str, int], list[bytes]] = {}
        self.taken = taken
        self.runner = MapRunner("n1", 0, lambda msg, *payload: self.reports.append(msg),
                                self.push)
        spec = p.ExecJob(job_id="j", job_name="wordcount", source="", sha256="",
                         num_partitions=2, partitions=[],
                         shuffle_endpoints={0: "ep0", 1: "ep1"})
        self.runner.start_job(spec, load_program(builtin_spec("wordcount")), "")

    def push(self, job_id: str, output_id: str, part: int, endpoint: str,
             chunks: list[tuple[int, bytes]], epoch: int) -> bool:
        self.pushed.append((output_id, part, endpoint, [seq for seq, _ in chunks], epoch))
        self.chunks.setdefault((output_id, part), []).extend(c for _, c in chunks)
        return self.taken

    def task(self, task_id: int, attempt: int = 1, alone: bool = False) -> None:
        self.runner.run_task(p.MapTask(job_id="j", task_id=task_id, attempt=attempt,
                                       alone=alone), [SPLIT])

    def of(self, cls: type[p.Message]) -> list[Any]:
        return [m for m in self.reports if isinstance(m, cls)]


def counts(h: Harness, output_id: str) -> dict[Any, int]:
    seen: dict[Any, int] = {}
    for (oid, _part), chunks in h.chunks.items():
        if oid == output_id:
            for chunk in chunks:
                for k, v in zip(*p.unpack_chunk(chunk), strict=True):
                    seen[k] = seen.get(k, 0) + v
    return seen


def test_tasks_batch_until_a_flush_then_one_output_names_them_all() -> None:
    h = Harness()
    h.task(0)
    h.task(1)
    assert [m.task_id for m in h.of(p.TaskExecuted)] == [0, 1]
    assert h.pushed == [] and h.of(p.OutputDone) == []
    h.runner.on_flush(p.Flush(seq=1, job_id="j"))
    (done,) = h.of(p.OutputDone)
    assert done.tasks == [[0, 1], [1, 1]]
    assert {part for _, part, _, _, _ in h.pushed} == {0, 1}
    assert all(ep == f"ep{part}" for _, part, ep, _, _ in h.pushed)
    assert counts(h, done.output_id) == {b"the": 4, b"cat": 4, b"dog": 2, b"a": 2}
    assert sum(n for _, n, _ in done.manifest.values()) == 4  # records over the partitions


def test_a_task_alone_flushes_the_batch_before_and_itself_after() -> None:
    h = Harness()
    h.task(0)
    h.task(1, alone=True)
    assert [d.tasks for d in h.of(p.OutputDone)] == [[[0, 1]], [[1, 1]]]


def test_a_cancel_of_a_batched_attempt_discards_the_batch() -> None:
    h = Harness()
    h.task(0)
    h.task(1)
    h.runner.cancel(p.CancelTask(job_id="j", task_id=0, attempt=1))
    lost = {(m.task_id, m.exc_type) for m in h.of(p.TaskFailedReport)}
    assert lost == {(0, p.CANCELLED), (1, p.LOST)}
    h.runner.on_flush(p.Flush(seq=1, job_id="j"))
    assert h.of(p.OutputDone) == [], "nothing left to flush"


def test_a_cancel_read_while_a_task_runs_discards_it() -> None:
    h = Harness()
    h.runner.drain = lambda: h.runner.mark_cancelled("j", 0, 1)
    h.task(0)
    assert [(m.task_id, m.exc_type) for m in h.of(p.TaskFailedReport)] == [(0, p.CANCELLED)]
    assert h.of(p.TaskExecuted) == []


def test_a_cancelled_attempt_does_not_start() -> None:
    h = Harness()
    h.runner.mark_cancelled("j", 3, 2)
    h.task(3, attempt=2)
    assert [(m.task_id, m.exc_type) for m in h.of(p.TaskFailedReport)] == [(3, p.CANCELLED)]


def test_resend_pushes_the_retained_chunks_asked_for() -> None:
    h = Harness()
    h.task(0, alone=True)
    (done,) = h.of(p.OutputDone)
    first = h.chunks[(done.output_id, 1)][0]
    h.pushed.clear()
    h.chunks.clear()
    h.runner.resend(p.ResendChunks(seq=1, job_id="j", output_id=done.output_id, partition=1,
                                   endpoint="elsewhere", epoch=2, seqs=[0, 7]))
    assert h.pushed == [(done.output_id, 1, "elsewhere", [0], 2)]
    assert h.chunks[(done.output_id, 1)] == [first]


def test_resend_of_an_unknown_output_reports_it_lost() -> None:
    h = Harness()
    h.runner.resend(p.ResendChunks(seq=1, job_id="j", output_id="gone", partition=0,
                                   endpoint="ep0"))
    assert [m.output_id for m in h.of(p.OutputLost)] == ["gone"]


def test_a_reducer_that_does_not_take_the_chunks_still_gets_the_output_reported() -> None:
    h = Harness(taken=False)
    h.task(0, alone=True)
    (done,) = h.of(p.OutputDone)
    h.taken = True
    h.runner.resend(p.ResendChunks(seq=1, job_id="j", output_id=done.output_id, partition=0,
                                   endpoint="ep0"))
    assert h.of(p.OutputLost) == []


def test_a_job_that_did_not_load_fails_every_task_at_once() -> None:
    h = Harness()
    spec = p.ExecJob(job_id="k", job_name="x", source="", sha256="", num_partitions=1,
                     partitions=[], shuffle_endpoints={0: "ep0"})
    h.runner.start_job(spec, None, "no such module")
    h.runner.run_task(p.MapTask(job_id="k", task_id=0, attempt=1), [SPLIT])
    (failed,) = h.of(p.TaskFailedReport)
    assert failed.exc_type == "JobLoadError" and failed.fatal and failed.message == \
        "no such module"


def test_shuffle_endpoints_follow_the_latest_spec_and_end_job_forgets() -> None:
    h = Harness()
    assert h.runner.shuffle_endpoints() == {"ep0", "ep1"}
    moved = p.ExecJob(job_id="j", job_name="wordcount", source="", sha256="",
                      num_partitions=2, partitions=[], shuffle_endpoints={0: "ep0", 1: "ep9"},
                      epoch=2)
    h.runner.start_job(moved, None, "")
    assert h.runner.shuffle_endpoints() == {"ep0", "ep9"}
    assert h.runner.jobs["j"].program is not None, "a new epoch keeps the loaded program"
    h.runner.end_job("j")
    assert h.runner.shuffle_endpoints() == set() and h.runner.jobs == {}
