"""The master's map phase: the job's input read as credit allows, map tasks pushed to the
nodes, and the commit rule's answers turned into sends.

``MapDispatch`` holds the ``Scheduler`` (from the job's start until its end: ``sched`` is
None outside, and the master's handlers then ignore map reports), the split source and the
splits planned so far. It asks the nodes to flush once every task has executed, tells them
the number of tasks once the input is read, and for each ``OutputDone`` commits it or drops
it, cancels the attempts that lost, and has chunks sent under an older partition map sent
again to their partition's new owner. Task PUSHes go through ``push`` (the links' task
socket in the master, a fake in tests).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from ..config import JobOptions
from ..engine.commits import Commits
from ..engine.control import ControlChannel
from ..engine.inputs import InputFile
from ..engine.partitions import PartitionBook
from ..engine.scheduler import Scheduler
from ..engine.summary import JobSummary, add_counters
from ..engine.task_source import SplitRef, split_size, split_source
from ..jobs.program import JobProgram
from ..net.transport import send_nowait
from ..wire import protocol as p
from .links import NodeLink, NodeLinks


def push_task(link: NodeLink, frames: list[Any]) -> bool:
    """A MapTask on the node's task PUSH, without blocking: False when the socket is full."""
    assert link.task is not None
    return send_nowait(link.task, frames)


class MapDispatch:
    """Reads the input, dispatches and backs up map tasks, applies the commit rule."""

    def __init__(self, job_id: str, task_token: str, program: JobProgram,
                 inputs: list[InputFile], opts: JobOptions, nodes: NodeLinks,
                 control: ControlChannel, book: PartitionBook, commits: Commits,
                 summary: JobSummary, report: Callable[[str], None],
                 push: Callable[[NodeLink, list[Any]], bool] = push_task) -> None:
        self.job_id = job_id
        self.task_token = task_token    # travels in each MapTask, so executors trust it
        self.program = program
        self.inputs = inputs
        self.opts = opts
        self.nodes = nodes
        self.control = control
        self.book = book
        self.commits = commits
        self.summary = summary
        self.report = report            # an event for the user and observers
        self.push = push
        # A path that is not UTF-8 (a file name in another encoding) cannot be a msgpack
        # string: such a file's splits travel as bytes, even to nodes that could read it.
        self.named_on_wire = [_utf8_encodable(f.path) for f in inputs]
        #: the tasks planned so far (task id -> split), growing as the input is read
        self.splits: list[SplitRef] = []
        #: None before the job starts and once it ends (no more dispatching)
        self.sched: Scheduler | None = None
        self.source: Generator[SplitRef, None, None] | None = None
        self.flushed_at = -1            # committed count when Flush was last sent

    @property
    def running(self) -> bool:
        """Between the job's start and its end: map reports are expected."""
        return self.sched is not None

    def start(self, slots: dict[str, int]) -> None:
        """The job started on these nodes (node id -> slots): plan the splits for them."""
        self.sched = Scheduler(slots, prefetch=self.opts.prefetch,
                               byte_budget=self.opts.byte_budget,
                               max_attempts=self.opts.max_attempts)
        self.source = split_source(
            self.inputs, split_size(self.opts, list(slots.values()), self.inputs),
            self.opts.max_token, lines=self.program.line_mode,
            positions=self.program.map_takes_position)

    def stop(self) -> None:
        """The job is ending: nothing more is dispatched, late map reports are ignored."""
        self.sched = None

    def close(self) -> None:
        """Closes the input file the split planner holds open."""
        if self.source is not None:
            self.source.close()

    # ---------------------------------------------------------------- dispatch
    def step(self) -> None:
        """Read input as credit allows, dispatch, back up stragglers, ask for flushes."""
        sched = self.sched
        if sched is None or self.book.updating:
            return
        while sched.wants_input():
            assert self.source is not None
            ref = next(self.source, None)
            if ref is None:
                sched.finish_input()
                self._input_complete()
                break
            self.splits.append(ref)
            sched.add_task(ref.length)
        for a in sched.assign():
            self._dispatch(a.task_id, a.attempt, a.node_id, a.alone)
        for a in sched.backups():
            self.report(f"task {a.task_id} is slow; backup attempt on "
                        f"{self.nodes.links[a.node_id].name}")
            self._dispatch(a.task_id, a.attempt, a.node_id, True)
        if sched.all_executed() and not sched.all_committed() \
                and self.flushed_at != sched.committed_count:
            self.flushed_at = sched.committed_count
            for link in self.nodes.live():
                self.control.send(link.node_id, p.Flush(seq=self.control.next_seq(),
                                                        job_id=self.job_id))

    def _input_complete(self) -> None:
        assert self.sched is not None
        self.summary.tasks = self.sched.num_tasks
        self.summary.input_bytes = sum(s.length for s in self.splits)
        for link in self.nodes.live():
            self.control.send(link.node_id, p.InputComplete(
                seq=self.control.next_seq(), job_id=self.job_id,
                num_tasks=self.sched.num_tasks))

    def _dispatch(self, task_id: int, attempt: int, node_id: str, alone: bool) -> None:
        ref = self.splits[task_id]
        link = self.nodes.links[node_id]
        assert link.alive and self.sched is not None
        f = self.inputs[ref.input_index]
        where: dict[str, Any] = ({"file": f.display, "first_line": ref.first_line}
                                 if ref.first_line else {})
        if link.local and f.seekable_plain and self.named_on_wire[ref.input_index]:
            frames = p.encode(p.MapTask(job_id=self.job_id, task_id=task_id, attempt=attempt,
                                        path=f.path, offset=ref.offset, length=ref.length,
                                        alone=alone, token=self.task_token, **where))
        else:
            data = ref.data if ref.data is not None else f.read(ref.offset, ref.length)
            ref.data = None
            frames = p.encode(p.MapTask(job_id=self.job_id, task_id=task_id, attempt=attempt,
                                        alone=alone, token=self.task_token, **where), data)
        # Credit from the scheduler bounds what is queued, so the PUSH is rarely full; when
        # it stays full (the node is gone or frozen) the task is handed back, not blocked on.
        if self.push(link, frames):
            return
        self.sched.on_failed(task_id, attempt, node_id, lost=True)
        self.sched.pause(node_id, 1.0)  # never block the loop on one node's full socket

    # ---------------------------------------------------------------- reports
    def executed(self, node_id: str, msg: p.TaskExecuted) -> bool:
        """A task ran (frees its credit); False once the job is ending (ignored)."""
        if self.sched is None:
            return False
        self.sched.on_executed(msg.task_id, msg.attempt, node_id)
        return True

    def on_output(self, link: NodeLink, msg: p.OutputDone) -> None:
        """A map output reached the reducers: commit it (cancel the attempts that lost) or
        have every node drop it; ignored once the job is ending."""
        if self.sched is None:
            return
        decision = self.sched.on_output(msg.output_id, [(t, a) for t, a in msg.tasks],
                                        link.node_id)
        if not decision.commit:
            for x in self.nodes.live():
                self.control.send(x.node_id, p.DropOutput(
                    seq=self.control.next_seq(), job_id=self.job_id, output_id=msg.output_id))
            return
        for task_id, attempt, node_id in decision.cancel:
            loser = self.nodes.links.get(node_id)
            if loser is not None and loser.alive:
                self.nodes.send_on(loser, p.encode(p.CancelTask(
                    job_id=self.job_id, task_id=task_id, attempt=attempt)))
                self.summary.cancelled += 1
                self.report(f"task {task_id} done by another attempt; attempt "
                            f"{attempt} on {loser.name} cancelled")
        add_counters(self.summary.counters, msg.counters)
        self.commits.add(msg.output_id, link.node_id, [t for t, _ in msg.tasks], msg.manifest,
                         msg.counters)
        # Chunks sent under an older partition map went to a partition's former owner:
        # have them sent to the new one now rather than when it finds them missing (while
        # a move is being acked, its refill covers this output).
        for part in self.book.stale_parts(msg.manifest, msg.epoch):
            target = self.nodes.links[self.book.partition_map[part]]
            self.control.send(link.node_id, p.ResendChunks(
                seq=self.control.next_seq(), job_id=self.job_id, output_id=msg.output_id,
                partition=part, endpoint=target.shuffle_endpoint, epoch=self.book.epoch))


def _utf8_encodable(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes kept as surrogates (PEP 383)
        return False
    return True
