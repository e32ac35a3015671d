"""The master's recovery: what it does when a node, an output, a partition or a task is lost.

Nodes silent past the death timeout are lost (all of several at once: the job fails). A
lost node's committed outputs are dropped and their tasks run again; its partitions move
to live nodes in a new epoch. A partition its owner lost (or whose spill its disk refused)
moves; chunks a reducer misses are sent again by their mapper (or the output is lost when
the mapper is gone). The decisions are the sans-I/O units' (``Scheduler``,
``PartitionBook``, ``Commits``); ``Recovery`` turns their answers into acked sends and
restarted fetches. Its methods return the error that fails the job, or None: the master
raises it from its loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..engine.commits import Commits
from ..engine.control import ControlChannel
from ..engine.fetch import PartitionStreams
from ..engine.partitions import Move, PartitionBook
from ..engine.scheduler import JobFailedError, Scheduler
from ..engine.summary import JobSummary, add_counters
from ..engine.task_failures import TaskPlaces, code_failure
from ..errors import ClusterLost, JobError, PymrError, TaskFailed
from ..wire import protocol as p
from .links import NodeLink, NodeLinks

#: How far into an input the master counts lines to say where a task failed (past it: the
#: line within the split).
WHERE_SCAN_MAX_BYTES = 64 << 20


class Recovery:
    """Turns losses into re-runs and moves; holds the units it drives, not the master."""

    def __init__(self, job_id: str, nodes: NodeLinks, control: ControlChannel,
                 book: PartitionBook, commits: Commits, streams: PartitionStreams,
                 summary: JobSummary, places: TaskPlaces,
                 scheduler: Callable[[], Scheduler | None],
                 report: Callable[[str], None], report_user: Callable[[str], None],
                 notify: Callable[..., None]) -> None:
        self.job_id = job_id
        self.nodes = nodes
        self.control = control
        self.book = book
        self.commits = commits
        self.streams = streams
        self.summary = summary
        self.places = places
        self.scheduler = scheduler      # the master's, None before the start and at the end
        self.report = report            # an event for the user and observers
        self.report_user = report_user  # for the user only (observers get ``notify``)
        self.notify = notify

    def num_tasks(self) -> int:
        """The job's task count once the input is read, else -1 (as JobUpdate has it)."""
        sched = self.scheduler()
        return sched.num_tasks if sched and sched.input_done else -1

    def send_move(self, move: Move) -> None:
        """Partitions got new owners: their fetches restart, every live node is told."""
        for part in move.parts:
            self.streams.restart(part)
        for send in move.sends:
            self.control.send(send.node_id, send.msg, send.then)

    # ---------------------------------------------------------------- nodes
    def nodes_silent(self, dead: dict[str, str]) -> PymrError | None:
        """Nodes ``Liveness`` found silent past the death timeout (node id -> why) are
        lost; when every node of several is, the job fails at once (no heir is left for
        their work)."""
        if not dead:
            return None
        live = self.nodes.live()
        overdue = [(link, dead[link.node_id]) for link in live if link.node_id in dead]
        if overdue and len(overdue) == len(live) > 1:
            self.summary.nodes_lost.extend(link.name for link, _ in overdue)
            for link, _ in overdue:
                self.nodes.mark_dead(link)
                self.nodes.close(link)
            return ClusterLost(
                f"nodes {', '.join(link.name for link, _ in overdue)} were lost ("
                f"{overdue[0][1]}) and no live node is left; the job was cancelled")
        for link, _ in overdue:
            self.nodes.mark_dead(link)  # nodes lost together are never named as each other's heirs
        for link, reason in overdue:
            error = self.node_lost(link, reason)
            if error is not None:
                return error
        return None

    def node_lost(self, link: NodeLink, reason: str) -> PymrError | None:
        """Re-run its tasks elsewhere, rebuild its partitions elsewhere (new epoch)."""
        self.nodes.mark_dead(link)
        self.summary.nodes_lost.append(link.name)
        self.nodes.close(link)
        self.control.drop_node(link.node_id)  # a JobUpdate waits for no ack from it
        sched = self.scheduler()
        if sched is not None:
            sched.remove_node(link.node_id)
        live = self.nodes.live()
        if not live:
            return ClusterLost(f"node {link.name} was lost ({reason}) and no live node "
                               "is left; the job was cancelled")
        self.report(f"node {link.name} lost ({reason}); its work moves to "
                    f"{', '.join(x.name for x in live)}")
        for output_id in self.commits.of_node(link.node_id):
            self.lose_output(output_id)
        move = self.book.node_lost(link.node_id, self.nodes.live_shuffle(), time.monotonic(),
                                   self.num_tasks())
        if move is not None:
            self.send_move(move)
        return None

    # ---------------------------------------------------------------- map outputs
    def lose_output(self, output_id: str) -> None:
        """A committed output whose data is gone: reducers drop what they have not
        merged, and its tasks run again, each alone (reducers that merged it already
        drop the re-run)."""
        lost = self.commits.lose(output_id)
        if lost is not None:  # its tasks run again and their new output counts instead
            add_counters(self.summary.counters, {k: -n for k, n in lost.counters.items()})
        for x in self.nodes.live():
            self.control.send(x.node_id, p.DropOutput(
                seq=self.control.next_seq(), job_id=self.job_id, output_id=output_id))
        sched = self.scheduler()
        assert sched is not None
        sched.uncommit(output_id)

    def output_lost(self, msg: p.OutputLost) -> None:
        """A mapper no longer has an output it was asked to send again."""
        if msg.output_id in self.commits.outputs:
            self.lose_output(msg.output_id)

    def chunks_missing(self, msg: p.ChunksMissing) -> None:
        """A reducer still misses chunks of a committed output: its mapper sends them
        again, or, when the mapper is gone, the output is lost."""
        out = self.commits.outputs.get(msg.output_id)
        owner = self.nodes.links.get(self.book.owner(msg.partition) or "")
        if out is None or owner is None:
            return
        mapper = self.nodes.links.get(out.node_id)
        if mapper is None or not mapper.alive:
            self.lose_output(msg.output_id)
            return
        self.summary.resends += 1
        self.control.send(out.node_id, p.ResendChunks(
            seq=self.control.next_seq(), job_id=self.job_id, output_id=msg.output_id,
            partition=msg.partition, endpoint=owner.shuffle_endpoint, epoch=self.book.epoch,
            seqs=msg.seqs))

    # ---------------------------------------------------------------- partitions
    def partition_lost(self, link: NodeLink, msg: p.PartitionLost) -> PymrError | None:
        """The owner of a partition lost it (executor crash, or its disk refused it)."""
        if not self.book.owns(link.node_id, msg.partition):
            return None
        if msg.disk:
            return self._disk_failure(link, msg)
        self.report(f"partition {msg.partition} lost on {link.name} "
                    f"({msg.reason}); rebuilding it")
        self.send_move(self.book.partition_lost(msg.partition, self.nodes.live_shuffle(),
                                                time.monotonic(), self.num_tasks()))
        return None

    def _disk_failure(self, link: NodeLink, msg: p.PartitionLost) -> PymrError | None:
        """A node's disk refused a partition's spill: move the partition to a node that has
        not failed it; when none is left, the job fails with the reason."""
        move = self.book.disk_refused(msg.partition, link.node_id, self.nodes.live_shuffle(),
                                      time.monotonic(), self.num_tasks())
        if move is None:
            return JobError(f"partition {msg.partition}: node {link.name} {msg.reason}"
                            "; no other node can take it: free disk space there "
                            "or give the job more memory (--memory)")
        self.report(f"partition {msg.partition}: node {link.name} {msg.reason}; "
                    "moving it to another node")
        self.send_move(move)
        return None

    def back_up_lagging_reducers(self, started: float) -> None:
        """Partitions still merging long after the others finished move, once, to the
        nodes that finished theirs (``PartitionBook.back_up_lagging`` judges)."""
        now = time.monotonic()
        sched = self.scheduler()
        lag = self.book.back_up_lagging(
            started, now, sched.stragglers.slow_nodes if sched is not None else set(),
            self.nodes.live_shuffle(), self.num_tasks())
        if lag is None:
            return
        links = self.nodes.links
        self.report(
            f"partition(s) {', '.join(map(str, lag.move.parts))} still merging on "
            f"{', '.join(sorted(links[n].name for n in lag.slow))} after "
            f"{now - started:.1f} s; "
            f"rebuilding them on {', '.join(links[n].name for n in lag.fast)}")
        self.send_move(lag.move)

    # ---------------------------------------------------------------- tasks
    def task_failed(self, link: NodeLink, msg: p.TaskFailedReport) -> PymrError | None:
        """A task raised or was lost: it runs again, or (fatal, or out of attempts) the
        job fails with the task's error."""
        sched = self.scheduler()
        assert sched is not None
        lost = msg.exc_type in (p.LOST, p.CANCELLED)
        if not lost:
            text = (f"task {msg.task_id} attempt {msg.attempt} failed on {link.name}: "
                    f"{msg.exc_type}: {msg.message}")
            if not msg.fatal:
                self.report_user(text)
            self.notify(text, task_id=msg.task_id, attempt=msg.attempt, failed_on=link.name,
                        where=self.places.where(msg, WHERE_SCAN_MAX_BYTES),
                        exc_type=msg.exc_type, message=msg.message,
                        traceback=msg.user_traceback or msg.traceback)
        if msg.fatal:  # another attempt would fail the same way: fail the job now
            return code_failure(link.name, msg, self.places)
        if not lost:
            self.summary.retries += 1
        try:
            sched.on_failed(msg.task_id, msg.attempt, link.node_id, lost=lost,
                            error=(link.name, msg.attempt, msg.exc_type, msg.message,
                                   msg.traceback))
        except JobFailedError as exc:
            if msg.stage:  # the job's own code raised, on every attempt
                return code_failure(link.name, msg, self.places)
            name, attempt, exc_type, message, tb = exc.task.last_error or (
                link.name, msg.attempt, msg.exc_type, msg.message, msg.traceback)
            return TaskFailed(name, exc.task.task_id, attempt, exc_type, message, tb)
        return None

