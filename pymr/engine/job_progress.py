"""The master's ``JobProgress`` for dashboards: how far a job is, counted from its
scheduler, partition book and summary; no sockets (the master publishes what this builds).
"""

from __future__ import annotations

from ..wire import protocol as p
from .inputs import InputFile
from .partitions import PartitionBook
from .scheduler import Scheduler
from .summary import JobSummary
from .task_source import SplitRef

#: How often the master publishes ``JobProgress`` for dashboards (through every node).
JOB_PROGRESS_INTERVAL_S = 0.5
#: Inputs named in ``JobProgress`` (the rest are counted).
PROGRESS_INPUTS_MAX = 20


class JobProgressReport:
    """The numbered ``JobProgress`` messages of one job, and the tasks mapped so far."""

    def __init__(self, job_id: str, job_name: str, inputs: list[InputFile],
                 splits: list[SplitRef]) -> None:
        self.job_id = job_id
        self.job_name = job_name
        self.inputs = inputs
        self.splits = splits            # the master's, growing as the input is read
        self.number = 0
        self.at = 0.0                   # when the last one was built
        self.executed: set[int] = set()       # tasks mapped at least once
        self.bytes_executed = 0

    def task_executed(self, task_id: int) -> None:
        """A task ran (its bytes count once, whatever its attempts)."""
        if task_id not in self.executed and 0 <= task_id < len(self.splits):
            self.executed.add(task_id)
            self.bytes_executed += self.splits[task_id].length

    def due(self, now: float) -> bool:
        return now - self.at >= JOB_PROGRESS_INTERVAL_S

    def message(self, now: float, started: float, sched: Scheduler | None,
                book: PartitionBook, summary: JobSummary, chunks_fetched: int,
                state: str = "running", error: str = "") -> p.JobProgress:
        """The next ``JobProgress`` (``sched`` None: not started yet, or ending)."""
        self.at = now
        self.number += 1
        done = book.done
        if state != "running":
            phase = state
        elif sched is None or not sched.all_executed():
            phase = "map"
        elif not sched.all_committed():
            phase = "shuffle"
        elif not book.all_done():
            phase = "reduce"
        else:
            phase = "fetch"
        input_done = sched is not None and sched.input_done or bool(summary.tasks)
        known = input_done or all(f.seekable_plain for f in self.inputs)
        inputs = [f.display for f in self.inputs[:PROGRESS_INPUTS_MAX]]
        if len(self.inputs) > PROGRESS_INPUTS_MAX:
            inputs.append(f"(and {len(self.inputs) - PROGRESS_INPUTS_MAX} more)")
        return p.JobProgress(
            job_id=self.job_id, job_name=self.job_name, number=self.number,
            elapsed_s=round(now - started, 3), state=state, phase=phase,
            inputs=inputs,
            bytes_total=(summary.input_bytes if input_done
                         else sum(f.size for f in self.inputs) if known else -1),
            bytes_done=self.bytes_executed,
            tasks_total=summary.tasks if input_done else -1,
            tasks_done=len(self.executed),
            tasks_committed=sched.committed_count if sched is not None else
            (summary.tasks if state == "done" else 0),
            partitions=len(book.partition_map), partitions_done=len(done),
            chunks_total=sum(x.chunks for x in done.values()) if book.all_done() else 0,
            chunks_fetched=chunks_fetched,
            records=sum(x.records for x in done.values()),
            retries=summary.retries,
            backups=sched.backups_started if sched is not None else summary.backups,
            nodes=list(summary.nodes), nodes_lost=list(summary.nodes_lost),
            error=error)
