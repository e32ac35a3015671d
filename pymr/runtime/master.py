"""The master (the ``pymr job`` process): plan, dispatch, commit, recover, fetch, merge.

It binds nothing: one DEALER (control), one PUSH (tasks) and one SUB (events)
per node, all connected (``links.NodeLinks``, which also receives). Decisions live in
sans-I/O units: tasks in ``Scheduler``, the partition map and its moves in
``partitions.PartitionBook``, committed outputs and their Commit batches in
``commits.Commits``, acked sends in ``control.ControlChannel``, silence in
``liveness.Liveness``. Three parts of the master turn their answers into sends:
``jobstart.JobStarter`` admits nodes and sends their JobStarts, ``mapdispatch.MapDispatch``
reads the input, dispatches map tasks and applies the commit rule, and
``recovery.Recovery`` turns losses into re-runs and moves. This loop runs the phases
(start, map, reduce, fetch, end), turns socket traffic into their events through
``MASTER_HANDLERS``, and sends what they return.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..config import HEARTBEAT_INTERVAL_S, JobOptions
from ..engine.commits import Commits
from ..engine.control import ControlChannel
from ..engine.fetch import PartitionStreams
from ..engine.heap import JobHeap
from ..engine.inputs import InputFile
from ..engine.job_progress import JobProgressReport
from ..engine.liveness import Liveness
from ..engine.partitions import PartitionBook
from ..engine.results import JobRecords
from ..engine.summary import JobSummary
from ..engine.task_failures import TaskPlaces, reduce_failure
from ..errors import ClusterLost, JobError, ProtocolError, PymrError
from ..jobs import JobSpec
from ..jobs.program import JobProgram, load_program
from ..net.security import ClusterKey
from ..net.transport import LogOnce
from ..wire import protocol as p
from ..wording import count_of
from .jobstart import JobStarter
from .links import NodeLink, NodeLinks
from .mapdispatch import MapDispatch
from .recovery import Recovery

log = logging.getLogger(__name__)

#: How long a node may take to answer the hello and the job start.
HELLO_TIMEOUT_S = 10.0
#: How long the master waits for JobEnd acks before giving up on a node.
JOB_END_TIMEOUT_S = 3.0


class Reporter(Protocol):
    """What the master tells the user about (the CLI draws it)."""

    def start(self, total_bytes: int, nodes: list[str]) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def phase(self, name: str) -> None: ...
    def event(self, text: str) -> None: ...


class QuietReporter:
    def start(self, total_bytes: int, nodes: list[str]) -> None: pass
    def advance(self, nbytes: int) -> None: pass
    def phase(self, name: str) -> None: pass
    def event(self, text: str) -> None: pass


class _NoticeReporter:
    """Passes the master's events to the user's reporter and to the nodes' PUB sockets."""

    def __init__(self, inner: Reporter, master: Master) -> None:
        self.inner = inner
        self.master = master

    def start(self, total_bytes: int, nodes: list[str]) -> None:
        self.inner.start(total_bytes, nodes)

    def advance(self, nbytes: int) -> None:
        self.inner.advance(nbytes)

    def phase(self, name: str) -> None:
        self.inner.phase(name)

    def event(self, text: str) -> None:
        self.inner.event(text)
        self.master.notify(text)


class Master:
    """Runs one job on a set of nodes; ``run`` returns the summary or raises ``PymrError``."""

    def __init__(self, key: ClusterKey, control_endpoints: list[str],
                 program: JobProgram | JobSpec, inputs: list[InputFile], opts: JobOptions, *,
                 local_reads: bool,
                 reporter: Reporter | None = None,
                 discover: Callable[[], list[str]] | None = None) -> None:
        self.discover = discover        # polled for nodes that appear during the job
        if not isinstance(program, JobProgram):  # checked here, before any node is contacted
            program = load_program(program, opts.params)
        self.program = program
        self.spec = program.spec
        self.inputs = inputs
        self.opts = opts
        self.user_reporter: Reporter = reporter or QuietReporter()
        self.reporter: Reporter = _NoticeReporter(self.user_reporter, self)
        self.job_id = secrets.token_hex(6)
        self.task_token = secrets.token_hex(16)  # travels only on the acked control channel
        self.drop = LogOnce(log)
        self.liveness = Liveness(opts.death_timeout_s, time.monotonic())
        #: the sockets to every node, the poller over them, and which node is alive
        self.nodes = NodeLinks(key, self.job_id, list(control_endpoints),
                               local_reads=local_reads, liveness=self.liveness,
                               next_seq=self._next_seq, report=self.reporter.event,
                               drop=self.drop)
        self.links = self.nodes.links   # node id -> link (the same dict)
        self.control = ControlChannel(self.nodes.send_to)
        self.summary = JobSummary(job_id=self.job_id, job_name=self.spec.name)
        #: the partition map, its epoch and moves (sends nothing: the master sends its moves)
        self.book = PartitionBook(self.job_id, self._next_seq, self._refill)
        #: committed map outputs, and the Commits still to send to their reducers
        self.commits = Commits(self.job_id, self._next_seq, self.book)
        #: the map phase: the scheduler (None before the start and at the end), the splits
        self.dispatch = MapDispatch(self.job_id, self.task_token, program, inputs, opts,
                                    self.nodes, self.control, self.book, self.commits,
                                    self.summary, self.reporter.event)
        #: which nodes take the job, at its start or later, and their JobStarts
        self.starter = JobStarter(self.job_id, self.task_token, program, opts, self.nodes,
                                  self.control, self.book, self.summary,
                                  lambda: self.dispatch.sched, self.reporter.event)
        self.last_lease = 0.0
        self.failure: PymrError | None = None
        self.started = time.monotonic()
        self.places = TaskPlaces(inputs, self.dispatch.splits)  # where a failed task's record is
        #: the JobProgress messages for dashboards, and the tasks mapped so far
        self.progress = JobProgressReport(self.job_id, self.spec.name, inputs,
                                          self.dispatch.splits)
        #: the fetched chunks are not scanned by the cyclic collector (this may be the
        #: process of a program calling pymr.run: its own frozen objects are left alone)
        self.heap = JobHeap(freeze=False)
        self.streams = PartitionStreams(opts.fetch_credit, self._request_chunks,
                                        lambda: self._pump(100), self._chunks_of)
        #: lost nodes, outputs, partitions and tasks: re-runs and moves
        self.recovery = Recovery(self.job_id, self.nodes, self.control, self.book,
                                 self.commits, self.streams, self.summary, self.places,
                                 lambda: self.dispatch.sched, self.reporter.event,
                                 self.user_reporter.event, self.notify)

    # ---------------------------------------------------------------- public
    def run(self, consume: Callable[[JobRecords, JobSummary], None]
            ) -> JobSummary:
        started = self.started = time.monotonic()
        self.nodes.open()
        try:
            self.nodes.connect_all(HELLO_TIMEOUT_S)
            self._start_job()
            sched = self.dispatch.sched
            assert sched is not None
            while not sched.all_committed():
                self._pump(200)
            self.reporter.phase("reduce")
            reduce_started = time.monotonic()
            while not self.book.all_done():
                self._pump(200)
                self.recovery.back_up_lagging_reducers(reduce_started)
            for text in self.summary.add_partitions(
                    (self.links[self.book.partition_map[part]].name, done)
                    for part, done in self.book.done.items()):
                self.reporter.event(text)
            for f in self.inputs:
                f.check_unchanged()
            self.summary.elapsed_s = time.monotonic() - started
            try:
                self.heap.hold()
                consume(JobRecords(self.book, self.streams, self.program.order,
                                   self.reporter.phase), self.summary)
            finally:
                self.heap.release()
            self.summary.elapsed_s = time.monotonic() - started
            self.summary.backups = sched.backups_started
            self.summary.fetches_asked_again = self.streams.asked_again
            self._end_job("done")
            return self.summary
        except BaseException as exc:
            reason = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            try:
                self._end_job(reason, error="" if isinstance(exc, KeyboardInterrupt)
                              else str(exc) or type(exc).__name__)
            except Exception:  # cleanup must not hide the real error
                log.debug("job end after failure", exc_info=True)
            raise
        finally:
            self.dispatch.close()
            self.nodes.close_all()

    # ---------------------------------------------------------------- events, control, loop
    def notify(self, text: str, **failure: Any) -> None:
        """Publish a job event through every live node (observers see it in pymr events);
        ``failure``: the fields of ``JobNotice`` that describe a failed task."""
        self.nodes.publish(p.JobNotice(job_id=self.job_id, text=text, **failure))

    def _publish_progress(self, state: str = "running", error: str = "") -> None:
        """How far the job is, for dashboards (``JobProgress`` through every live node)."""
        self.nodes.publish(self.progress.message(
            time.monotonic(), self.started, self.dispatch.sched, self.book, self.summary,
            sum(self.streams.received.values()), state, error))

    def _next_seq(self) -> int:
        return self.control.next_seq()

    def _pump(self, timeout_ms: int) -> None:
        """Drive the job one step: leases, resends, receive within ``timeout_ms``, dispatch."""
        now = time.monotonic()
        if now - self.last_lease >= HEARTBEAT_INTERVAL_S:
            self.last_lease = now
            for link in self.nodes.live():
                self.nodes.send_on(link, p.encode(p.Lease(job_id=self.job_id)))
            self.control.resend(now)
            if self.discover is not None and self.dispatch.running:
                # Nodes that appeared during the job: hello, then JobStart, then map tasks.
                self.nodes.connect_new(self.discover())
        if self.progress.due(now) and self.dispatch.running:
            self._publish_progress()
        self.dispatch.step()
        for link, msg, payload in self.nodes.receive(timeout_ms):
            self._handle(link, msg, payload)
            if self.failure is not None:
                raise self.failure
        # Nodes silent past the death timeout are lost (their work moves) or fail the job.
        self.failure = self.recovery.nodes_silent(self.liveness.dead(time.monotonic())) \
            or self.failure
        if self.failure is not None:
            raise self.failure
        self.dispatch.step()
        self._flush_commits()

    # ---------------------------------------------------------------- job start
    def _start_job(self) -> None:
        """Every node acks its JobStart (``JobStarter.start``), then the map phase starts."""
        self.starter.start()
        deadline = time.monotonic() + HELLO_TIMEOUT_S
        while self.control.pending and time.monotonic() < deadline:
            self._pump(100)
        if self.control.pending:
            raise ClusterLost("nodes did not acknowledge the job start: " + ", ".join(
                sorted({self.links[x].name for x in self.control.waiting_on()})))
        self.summary.nodes = [x.name for x in self.links.values()]
        self.dispatch.start({x.node_id: x.slots for x in self.links.values()})
        total = sum(f.size for f in self.inputs)
        self.reporter.start(total, [f"{x.name} ({count_of(x.slots, 'slot')})"
                                    for x in self.links.values()])

    # ---------------------------------------------------------------- handlers
    def _handle(self, link: NodeLink, msg: p.Message, payload: list[Any]) -> None:
        """One message from a node, through ``MASTER_HANDLERS`` (type -> method), so that a
        message type without a handler is visible in one table (and caught by a test)."""
        # An Ack carries no job_id: it always passes this check.
        if getattr(msg, "job_id", self.job_id) != self.job_id:
            self.drop(link.endpoint, "message for another job")
            return
        handler = MASTER_HANDLERS.get(type(msg))
        if handler is not None:
            handler(self, link, msg, payload)
        elif type(msg) not in MASTER_IGNORED and self.dispatch.running:
            # Once the job is ending (dispatch stopped) stragglers are expected, not dropped.
            self.drop(link.endpoint, f"unexpected {msg.TYPE}")

    def _handle_ack(self, link: NodeLink, msg: p.Ack, payload: list[Any]) -> None:
        """A node applied (or refused) an acked control message."""
        if self.control.ack(msg.seq, msg.ok, msg.error) is not None:
            self.failure = JobError(f"node {link.name} refused the job: {msg.error}")

    def _handle_task_executed(self, link: NodeLink, msg: p.TaskExecuted,
                              payload: list[Any]) -> None:
        """A task ran (frees its credit); ignored once the job is ending."""
        if self.dispatch.executed(link.node_id, msg):
            self.reporter.advance(msg.nbytes)
            self.progress.task_executed(msg.task_id)

    def _handle_task_failed(self, link: NodeLink, msg: p.TaskFailedReport,
                            payload: list[Any]) -> None:
        """A task raised or was lost; ignored once the job is ending."""
        if self.dispatch.running:
            self.failure = self.recovery.task_failed(link, msg) or self.failure

    def _handle_output_done(self, link: NodeLink, msg: p.OutputDone,
                            payload: list[Any]) -> None:
        """A map output reached the reducers: the commit rule (``MapDispatch.on_output``)."""
        self.dispatch.on_output(link, msg)

    def _handle_reduce_failed(self, link: NodeLink, msg: p.ReduceFailed,
                              payload: list[Any]) -> None:
        """The job's reduce raised: the job fails (only if the sender owns the partition)."""
        if self.book.owns(link.node_id, msg.partition):
            self.failure = reduce_failure(link.name, msg)

    def _handle_partition_complete(self, link: NodeLink, msg: p.PartitionComplete,
                                   payload: list[Any]) -> None:
        """Every task is merged into a partition its owner reduces."""
        self.book.complete(link.node_id, msg, time.monotonic())

    def _handle_partition_data(self, link: NodeLink, msg: p.PartitionData,
                               payload: list[Any]) -> None:
        """One sorted chunk of a partition, from its owner, into the final merge."""
        if not self.book.owns(link.node_id, msg.partition) or not payload:
            return
        frame = payload[0]
        try:
            records = p.unpack_chunk(frame.buffer if hasattr(frame, "buffer") else frame)
        except ProtocolError:
            self.drop(link.endpoint, "partition data is not [keys, values]")
            return
        self.streams.on_data(msg.partition, msg.seq, msg.last, records)
        self.heap.settle()

    def _handle_partition_lost(self, link: NodeLink, msg: p.PartitionLost,
                               payload: list[Any]) -> None:
        """The owner of a partition lost it (executor crash, or its disk refused it)."""
        self.failure = self.recovery.partition_lost(link, msg) or self.failure

    def _handle_chunks_missing(self, link: NodeLink, msg: p.ChunksMissing,
                               payload: list[Any]) -> None:
        """A reducer still misses chunks of a committed output."""
        self.recovery.chunks_missing(msg)

    def _handle_output_lost(self, link: NodeLink, msg: p.OutputLost,
                            payload: list[Any]) -> None:
        """A mapper no longer has an output it was asked to send again."""
        self.recovery.output_lost(msg)

    def _handle_hello_reply(self, link: NodeLink, msg: p.HelloReply,
                            payload: list[Any]) -> None:
        """A node that answered after the job started joins it (a repeat is ignored)."""
        if not link.node_id and self.dispatch.running:
            self.starter.late_hello(link, msg)

    def _flush_commits(self) -> None:
        """One acked Commit per reducer node for everything committed since the last turn."""
        for send in self.commits.flush(lambda n: n in self.links and self.links[n].alive):
            self.control.send(send.node_id, send.msg)

    def _refill(self, parts: list[int]) -> None:
        """Every live node runs the new epoch: re-send committed outputs to the new owners."""
        for send in self.commits.refill(parts, lambda n: self.links[n].shuffle_endpoint):
            self.control.send(send.node_id, send.msg)

    # ---------------------------------------------------------------- fetch
    def _chunks_of(self, part: int) -> int | None:
        done = self.book.done.get(part)
        return done.chunks if done is not None else None

    def _request_chunks(self, part: int, start: int, count: int, lines: bool) -> None:
        link = self.links[self.book.partition_map[part]]
        self.nodes.send_on(link, p.encode(p.FetchPartition(
            job_id=self.job_id, partition=part, start=start, count=count, lines=lines)))

    # ---------------------------------------------------------------- end
    def _end_job(self, reason: str, error: str = "") -> None:
        live = self.nodes.live()
        if not live:
            return
        self.control.clear()
        if self.dispatch.running or reason == "done":
            # Before JobEnd on the same sockets: nodes relay it while they know the job.
            self._publish_progress(reason if reason in ("done", "cancelled") else "failed",
                                   error)
        for link in live:
            self.control.send(link.node_id, p.JobEnd(seq=self._next_seq(), job_id=self.job_id,
                                                      reason=reason))
        deadline = time.monotonic() + JOB_END_TIMEOUT_S
        self.failure = None
        self.dispatch.stop()  # no more dispatching
        while self.control.pending and time.monotonic() < deadline:
            try:
                self._pump(100)
            except Exception:
                self.failure = None
        if self.control.pending:
            log.warning("%d node(s) did not confirm the end of the job; they will drop it "
                        "when its lease expires", len(self.control.waiting_on()))
        for link in live:
            self.nodes.mark_dead(link)


#: What the master does with each message type a node sends it (control replies and
#: reports, and the events it subscribes to).
MASTER_HANDLERS: dict[type[p.Message], Callable[[Master, NodeLink, Any, list[Any]], None]] = {
    p.Ack: Master._handle_ack,
    p.TaskExecuted: Master._handle_task_executed,
    p.TaskFailedReport: Master._handle_task_failed,
    p.OutputDone: Master._handle_output_done,
    p.ReduceFailed: Master._handle_reduce_failed,
    p.PartitionComplete: Master._handle_partition_complete,
    p.PartitionData: Master._handle_partition_data,
    p.PartitionLost: Master._handle_partition_lost,
    p.ChunksMissing: Master._handle_chunks_missing,
    p.OutputLost: Master._handle_output_lost,
    p.HelloReply: Master._handle_hello_reply,
}
#: Received and ignored on purpose: liveness is tracked in ``NodeLinks.receive`` (any
#: message counts), and a task's error comes in its ``TaskFailedReport``.
MASTER_IGNORED: frozenset[type[p.Message]] = frozenset({p.Heartbeat, p.ErrorEvent})
#: Never sent to a master (the master sends these, or they stay inside a node, or go to
#: observers on topics the master does not subscribe to); dropped as unexpected if they come.
MASTER_NEVER_RECEIVES: frozenset[type[p.Message]] = frozenset({
    p.Hello, p.JobStart, p.MapTask, p.CancelTask, p.Flush, p.Commit, p.DropOutput,
    p.InputComplete, p.JobUpdate, p.ResendChunks, p.FetchPartition, p.Lease, p.JobEnd,
    p.StatusRequest, p.StatusReply, p.ShuffleChunk, p.ExecutorReady, p.ExecJob,
    p.ExecJobEnd, p.ExecStop, p.Progress, p.JobNotice, p.JobProgress,
})

