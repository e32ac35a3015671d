"""pymr.engine.job_progress.JobProgressReport: the JobProgress a dashboard sees through a job's
phases, built from a scheduler, a partition book and a summary driven by hand."""

from __future__ import annotations

import itertools

from pymr.engine.inputs import InputFile
from pymr.engine.job_progress import JOB_PROGRESS_INTERVAL_S, PROGRESS_INPUTS_MAX, JobProgressReport
from pymr.engine.partitions import PartitionBook
from pymr.engine.scheduler import Scheduler
from pymr.engine.summary import JobSummary
from pymr.engine.task_source import SplitRef
from pymr.wire import protocol as p


def test_progress_through_the_phases() -> None:
    inputs = [InputFile(f"/in{i}", f"in{i}", "plain", 100, 0)
              for i in range(PROGRESS_INPUTS_MAX + 2)]
    splits = [SplitRef(0, 0, 60), SplitRef(0, 60, 40)]
    report = JobProgressReport("j1", "wc", inputs, splits)
    book = PartitionBook("j1", itertools.count(1).__next__, lambda parts: None)
    book.place({"n1": 1})
    summary = JobSummary(job_id="j1", nodes=["n1"])
    first = report.message(10.0, 9.0, None, book, summary, 0)
    assert (first.number, first.phase, first.elapsed_s, first.state) == (1, "map", 1.0,
                                                                        "running")
    assert first.bytes_total == 100 * len(inputs) and first.tasks_total == -1
    assert first.inputs[-1] == "(and 2 more)" and len(first.inputs) == PROGRESS_INPUTS_MAX + 1
    assert not report.due(10.0 + JOB_PROGRESS_INTERVAL_S / 2)
    assert report.due(10.0 + JOB_PROGRESS_INTERVAL_S)

    sched = Scheduler({"n1": 2})
    for s in splits:
        sched.add_task(s.length)
    sched.finish_input()
    summary.tasks, summary.input_bytes = 2, 100
    for a in sched.assign():
        sched.on_executed(a.task_id, a.attempt, "n1")
        report.task_executed(a.task_id)
        report.task_executed(a.task_id)          # counted once
    shuffle = report.message(11.0, 9.0, sched, book, summary, 0)
    assert (shuffle.phase, shuffle.tasks_done, shuffle.bytes_done) == ("shuffle", 2, 100)
    assert (shuffle.tasks_total, shuffle.bytes_total) == (2, 100)

    decision = sched.on_output("o1", [(0, 1), (1, 1)], "n1")
    assert decision.commit
    assert report.message(12.0, 9.0, sched, book, summary, 0).phase == "reduce"
    book.complete("n1", p.PartitionComplete(job_id="j1", node_id="n1", partition=0,
                                            records=7, chunks=3), 12.5)
    fetch = report.message(13.0, 9.0, sched, book, summary, 2)
    assert (fetch.phase, fetch.records, fetch.chunks_total, fetch.chunks_fetched) == \
        ("fetch", 7, 3, 2)
    end = report.message(14.0, 9.0, None, book, summary, 3, "done")
    assert (end.phase, end.state, end.tasks_committed, end.number) == ("done", "done", 2, 5)
