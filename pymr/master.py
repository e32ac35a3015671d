"""The master (the ``pymr job`` process): plan, dispatch, commit, fetch, merge.

It binds nothing: one DEALER (control), one PUSH (tasks) and one SUB (events)
per node, all connected. Decisions live in ``Scheduler``; this loop only turns
socket traffic into scheduler calls and scheduler answers into sends.
"""

from __future__ import annotations

import heapq
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import zmq

from . import __version__
from . import protocol as p
from .config import HEARTBEAT_INTERVAL_S, RESEND_INTERVAL_S, UNICODE_VERSION, JobOptions
from .errors import ClusterLost, JobError, ProtocolError, TaskFailed, TransportError
from .inputs import InputFile, iter_bytes_splits
from .jobs import JobSpec
from .scheduler import JobFailedError, Scheduler
from .security import ClusterKey, secure_connect
from .transport import LogOnce, make_socket, send_nowait

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


@dataclass
class JobSummary:
    job_id: str
    total_words: int = 0
    distinct_words: int = 0
    tasks: int = 0
    nodes: list[str] = field(default_factory=list)
    input_bytes: int = 0
    bad_bytes: int = 0
    elapsed_s: float = 0.0


@dataclass(eq=False)
class NodeLink:
    """The master's sockets to one node and what it said in its hello."""

    endpoint: str
    control: zmq.Socket
    node_id: str = ""
    name: str = ""
    slots: int = 0
    local: bool = False
    task: zmq.Socket | None = None
    events: zmq.Socket | None = None
    shuffle_endpoint: str = ""
    last_seen: float = 0.0
    heard_heartbeat: bool = False


@dataclass
class PendingControl:
    node_id: str
    frames: list[Any]
    sent_at: float


@dataclass
class SplitRef:
    """Where a task's bytes are: re-readable by (input, offset, length)."""

    input_index: int
    offset: int
    length: int
    data: Any = None            # the bytes of a streamed split until first dispatch


class Master:
    """Runs one job on a set of nodes; ``run`` returns the summary or raises ``PymrError``."""

    def __init__(self, key: ClusterKey, control_endpoints: list[str], spec: JobSpec,
                 inputs: list[InputFile], opts: JobOptions, *, local_reads: bool,
                 reporter: Reporter | None = None) -> None:
        self.key = key
        self.endpoints = control_endpoints
        self.spec = spec
        self.inputs = inputs
        self.opts = opts
        self.local_reads = local_reads
        self.reporter = reporter or QuietReporter()
        self.job_id = secrets.token_hex(6)
        self.identity = f"m-{self.job_id}".encode()
        self.links: dict[str, NodeLink] = {}
        self.by_socket: dict[zmq.Socket, NodeLink] = {}
        self.seq = 0
        self.pending: dict[int, PendingControl] = {}
        self.acked_errors: list[str] = []
        self.splits: list[SplitRef] = []
        self.summary = JobSummary(job_id=self.job_id)
        self.partition_map: dict[int, str] = {}
        self.partition_done: dict[int, p.PartitionComplete] = {}
        self.fetch_buffers: dict[int, deque[list[Any]]] = {}
        self.fetch_next: dict[int, int] = {}
        self.fetch_received: dict[int, int] = {}
        self.fetch_last: dict[int, bool] = {}
        self.drop = LogOnce(log)
        self.ctx: zmq.Context | None = None
        self.poller = zmq.Poller()
        self.sched: Scheduler | None = None
        self.flushed_epoch = -1
        self.last_lease = 0.0
        self.failure: PymrErrorT | None = None

    # ---------------------------------------------------------------- public
    def run(self, consume: Callable[[Iterator[tuple[bytes, int]], JobSummary], None]
            ) -> JobSummary:
        started = time.monotonic()
        self.ctx = zmq.Context()
        try:
            self._connect_all()
            self._start_job()
            self._map_phase()
            self._wait_partitions()
            self.summary.elapsed_s = time.monotonic() - started
            for f in self.inputs:
                f.check_unchanged()
            consume(self._merged_records(), self.summary)
            self.summary.elapsed_s = time.monotonic() - started
            self._end_job("done")
            return self.summary
        except BaseException as exc:
            reason = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            try:
                self._end_job(reason)
            except Exception:  # cleanup must not hide the real error
                log.debug("job end after failure", exc_info=True)
            raise
        finally:
            self.ctx.destroy(linger=0)

    # ---------------------------------------------------------------- connect
    def _connect_all(self) -> None:
        assert self.ctx is not None
        for ep in self.endpoints:
            sock = make_socket(self.ctx, zmq.DEALER, identity=self.identity,
                               sndhwm=10_000, rcvhwm=10_000)
            sock.immediate = False
            secure_connect(sock, ep, self.key)
            link = NodeLink(endpoint=ep, control=sock)
            self.by_socket[sock] = link
            self.poller.register(sock, zmq.POLLIN)
            hello = p.Hello(seq=self._next_seq(), client_id=self.job_id,
                            pymr_version=__version__, unicode_version=UNICODE_VERSION)
            sock.send_multipart(p.encode(hello))
        deadline = time.monotonic() + HELLO_TIMEOUT_S
        waiting = list(self.by_socket.values())
        waiting_ids = {id(x) for x in waiting}
        while waiting_ids and time.monotonic() < deadline:
            for sock, _ in self.poller.poll(200):
                link = self.by_socket[sock]
                msg, _ = self._recv(sock)
                if isinstance(msg, p.HelloReply) and id(link) in waiting_ids:
                    self._accept_hello(link, msg)
                    waiting_ids.discard(id(link))
        if waiting_ids:
            missing = [x.endpoint for x in waiting if id(x) in waiting_ids]
            if len(missing) == len(self.by_socket):
                raise ClusterLost("no node answered (" + ", ".join(missing) +
                                  "); check that they run and hold this cluster's key")
            for x in waiting:
                if id(x) in waiting_ids:
                    self.reporter.event(f"node {x.endpoint} did not answer; not used")
                    self.poller.unregister(x.control)
                    del self.by_socket[x.control]
                    x.control.close(linger=0)

    def _accept_hello(self, link: NodeLink, msg: p.HelloReply) -> None:
        if msg.unicode_version != UNICODE_VERSION or msg.pymr_version != __version__:
            raise JobError(f"node {msg.name} runs pymr {msg.pymr_version} with Unicode "
                           f"{msg.unicode_version}; this machine has pymr {__version__} with "
                           f"Unicode {UNICODE_VERSION}: install the same version everywhere")
        assert self.ctx is not None
        link.node_id, link.name, link.slots = msg.node_id, msg.name, msg.slots
        link.last_seen = time.monotonic()
        link.shuffle_endpoint = msg.shuffle_endpoint
        link.local = self.local_reads
        link.task = make_socket(self.ctx, zmq.PUSH, sndhwm=4)
        secure_connect(link.task, msg.task_endpoint, self.key)
        link.events = make_socket(self.ctx, zmq.SUB, rcvhwm=10_000)
        for topic in (p.TOPIC_ERROR, p.TOPIC_HEARTBEAT):
            link.events.setsockopt(zmq.SUBSCRIBE, topic)
        secure_connect(link.events, msg.events_endpoint, self.key)
        self.poller.register(link.events, zmq.POLLIN)
        self.by_socket[link.events] = link
        self.links[link.node_id] = link

    # ---------------------------------------------------------------- control channel
    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _send_control(self, node_id: str, msg: p.Message) -> None:
        """Acked: re-sent until the node acks ``msg.seq``."""
        frames = p.encode(msg)
        seq = getattr(msg, "seq")
        self.pending[seq] = PendingControl(node_id, frames, time.monotonic())
        link = self.links.get(node_id)
        if link is not None:
            send_nowait(link.control, list(frames))

    def _resend(self, now: float) -> None:
        for pend in self.pending.values():
            if now - pend.sent_at >= RESEND_INTERVAL_S:
                link = self.links.get(pend.node_id)
                if link is not None:
                    send_nowait(link.control, list(pend.frames))
                pend.sent_at = now

    def _recv(self, sock: zmq.Socket) -> tuple[p.Message | None, list[Any]]:
        try:
            frames = sock.recv_multipart(copy=False)
        except zmq.ZMQError as exc:
            raise TransportError(f"receive failed: {exc.strerror}") from exc
        if frames and sock.type == zmq.SUB:
            frames = frames[1:]
        try:
            return p.decode(frames)
        except ProtocolError as exc:
            self.drop(self.by_socket[sock].endpoint, str(exc))
            return None, []

    def _pump(self, timeout_ms: int) -> None:
        """Receive whatever arrives within ``timeout_ms`` and handle it; keep leases."""
        now = time.monotonic()
        if now - self.last_lease >= HEARTBEAT_INTERVAL_S:
            self.last_lease = now
            for link in self.links.values():
                send_nowait(link.control, p.encode(p.Lease(job_id=self.job_id)))
            self._resend(now)
        for sock, _ in self.poller.poll(timeout_ms):
            for _ in range(10_000):
                if not sock.poll(0):
                    break
                msg, payload = self._recv(sock)
                if msg is not None:
                    link = self.by_socket[sock]
                    link.last_seen = time.monotonic()
                    if isinstance(msg, p.Heartbeat):
                        link.heard_heartbeat = True
                    self._handle(link, msg, payload)
        self._check_liveness()
        if self.failure is not None:
            raise self.failure

    def _check_liveness(self) -> None:
        """A node silent past the death timeout (timer starts at its first heartbeat)."""
        now = time.monotonic()
        for link in self.links.values():
            if link.heard_heartbeat and now - link.last_seen > self.opts.death_timeout_s:
                self.failure = ClusterLost(
                    f"node {link.name} stopped responding for {self.opts.death_timeout_s:.0f} s; "
                    "the job was cancelled (run it again)")

    # ---------------------------------------------------------------- job start
    def _start_job(self) -> None:
        if not self.links:
            raise ClusterLost("no node is available to run the job")
        order: list[str] = []
        for link in sorted(self.links.values(), key=lambda x: x.node_id):
            order.extend([link.node_id] * max(1, link.slots))
        nparts = self.opts.num_partitions or len(order)
        self.partition_map = {i: order[i % len(order)] for i in range(nparts)}
        shuffle = {x.node_id: x.shuffle_endpoint for x in self.links.values()}
        for link in self.links.values():
            self._send_control(link.node_id, p.JobStart(
                seq=self._next_seq(), job_id=self.job_id, job_name=self.spec.name,
                source=self.spec.source, sha256=self.spec.sha256, tokenizer=self.opts.tokenizer,
                num_partitions=nparts, partition_map=self.partition_map,
                shuffle_endpoints=shuffle, flush_key_limit=self.opts.flush_key_limit))
        deadline = time.monotonic() + HELLO_TIMEOUT_S
        while self.pending and time.monotonic() < deadline:
            self._pump(100)
        if self.pending:
            raise ClusterLost("nodes did not acknowledge the job start: "
                              + ", ".join(self.links[x.node_id].name
                                          for x in self.pending.values()))
        self.summary.nodes = [x.name for x in self.links.values()]
        self.sched = Scheduler({x.node_id: x.slots for x in self.links.values()},
                               prefetch=self.opts.prefetch, byte_budget=self.opts.byte_budget,
                               max_attempts=self.opts.max_attempts)
        total = sum(f.size for f in self.inputs)
        self.reporter.start(total, [f"{x.name} ({x.slots} slots)" for x in self.links.values()])

    # ---------------------------------------------------------------- map phase
    def _split_source(self) -> Iterator[SplitRef]:
        from .splits import plan_file_splits

        for index, f in enumerate(self.inputs):
            if f.seekable_plain:
                for s in plan_file_splits(f.path, self.opts.split_size, self.opts.max_token):
                    yield SplitRef(index, s.offset, s.length)
            else:
                for offset, length, data in iter_bytes_splits(
                        f, self.opts.split_size, self.opts.max_token):
                    yield SplitRef(index, offset, length, data)

    def _map_phase(self) -> None:
        assert self.sched is not None
        sched = self.sched
        source = self._split_source()
        while True:
            while sched.wants_input():
                ref = next(source, None)
                if ref is None:
                    sched.finish_input()
                    self._input_complete()
                    break
                self.splits.append(ref)
                sched.add_task(ref.length)
            for a in sched.assign():
                self._dispatch(a.task_id, a.attempt, a.node_id)
            if sched.all_committed():
                return
            if sched.all_executed() and self.flushed_epoch != sched.committed_count:
                self.flushed_epoch = sched.committed_count
                for link in self.links.values():
                    self._send_control(link.node_id, p.Flush(seq=self._next_seq(),
                                                             job_id=self.job_id))
            self._pump(200)

    def _input_complete(self) -> None:
        assert self.sched is not None
        self.summary.tasks = self.sched.num_tasks
        self.summary.input_bytes = sum(s.length for s in self.splits)
        for link in self.links.values():
            self._send_control(link.node_id, p.InputComplete(
                seq=self._next_seq(), job_id=self.job_id, num_tasks=self.sched.num_tasks))

    def _dispatch(self, task_id: int, attempt: int, node_id: str) -> None:
        ref = self.splits[task_id]
        link = self.links[node_id]
        f = self.inputs[ref.input_index]
        if link.local and f.seekable_plain:
            frames = p.encode(p.MapTask(job_id=self.job_id, task_id=task_id, attempt=attempt,
                                        path=f.path, offset=ref.offset, length=ref.length))
        else:
            data = ref.data if ref.data is not None else f.read(ref.offset, ref.length)
            ref.data = None
            frames = p.encode(p.MapTask(job_id=self.job_id, task_id=task_id, attempt=attempt),
                              data)
        assert link.task is not None
        # PUSH with a small HWM and credit from the scheduler: blocking here is bounded.
        link.task.send_multipart(frames, copy=False)

    # ---------------------------------------------------------------- handlers
    def _handle(self, link: NodeLink, msg: p.Message, payload: list[Any]) -> None:
        sched = self.sched
        if isinstance(msg, p.Ack):
            pend = self.pending.pop(msg.seq, None)
            if pend is not None and not msg.ok:
                self.failure = JobError(f"node {link.name} refused the job: {msg.error}")
        elif getattr(msg, "job_id", self.job_id) != self.job_id:
            self.drop(link.endpoint, "message for another job")
        elif isinstance(msg, p.TaskExecuted) and sched is not None:
            sched.on_executed(msg.task_id, msg.attempt, msg.node_id)
            self.reporter.advance(msg.nbytes)
        elif isinstance(msg, p.TaskFailedReport) and sched is not None:
            self._on_task_failed(link, msg)
        elif isinstance(msg, p.OutputDone) and sched is not None:
            self._on_output(msg)
        elif isinstance(msg, p.PartitionComplete):
            self.partition_done[msg.partition] = msg
        elif isinstance(msg, p.PartitionLost):
            self.failure = JobError(f"node {link.name} lost the data of partition "
                                    f"{msg.partition} ({msg.reason}); run the job again")
        elif isinstance(msg, p.PartitionData):
            self._on_partition_data(msg, payload)
        elif isinstance(msg, (p.Heartbeat, p.ErrorEvent, p.HelloReply)):
            pass  # liveness is the fault-tolerance layer's; errors come in the report
        else:
            self.drop(link.endpoint, f"unexpected {msg.TYPE}")

    def _on_task_failed(self, link: NodeLink, msg: p.TaskFailedReport) -> None:
        assert self.sched is not None
        lost = msg.exc_type == "Lost"
        if not lost:
            self.reporter.event(f"task {msg.task_id} attempt {msg.attempt} failed on "
                                f"{link.name}: {msg.exc_type}: {msg.message}; retrying")
        try:
            self.sched.on_failed(msg.task_id, msg.attempt, msg.node_id, lost=lost,
                                 error=(link.name, msg.attempt, msg.exc_type, msg.message,
                                        msg.traceback))
        except JobFailedError as exc:
            name, attempt, exc_type, message, tb = exc.task.last_error or (
                link.name, msg.attempt, msg.exc_type, msg.message, msg.traceback)
            self.failure = TaskFailed(name, exc.task.task_id, attempt, exc_type, message, tb)

    def _on_output(self, msg: p.OutputDone) -> None:
        assert self.sched is not None
        decision = self.sched.on_output(msg.output_id, [(t, a) for t, a in msg.tasks])
        if not decision.commit:
            for link in self.links.values():
                self._send_control(link.node_id, p.DropOutput(
                    seq=self._next_seq(), job_id=self.job_id, output_id=msg.output_id))
            return
        self.summary.bad_bytes += msg.bad_bytes
        tasks = [t for t, _ in msg.tasks]
        for link in self.links.values():
            mine = {part: man for part, man in msg.manifest.items()
                    if self.partition_map.get(part) == link.node_id}
            if mine:
                self._send_control(link.node_id, p.Commit(
                    seq=self._next_seq(), job_id=self.job_id, output_id=msg.output_id,
                    tasks=tasks, manifest=mine))

    # ---------------------------------------------------------------- reduce + fetch
    def _wait_partitions(self) -> None:
        self.reporter.phase("reduce")
        nparts = len(self.partition_map)
        while len(self.partition_done) < nparts or self.pending:
            self._pump(200)
        self.summary.total_words = sum(x.total for x in self.partition_done.values())
        self.summary.distinct_words = sum(x.records for x in self.partition_done.values())

    def _on_partition_data(self, msg: p.PartitionData, payload: list[Any]) -> None:
        part = msg.partition
        if part not in self.fetch_buffers or not payload:
            return
        if msg.seq != self.fetch_received[part]:
            self.drop("reducer", "partition chunk out of order")
            return
        self.fetch_received[part] += 1
        frame = payload[0]
        records = p.unpack_records(frame.buffer if hasattr(frame, "buffer") else frame)
        self.fetch_buffers[part].append(records)
        if msg.last:
            self.fetch_last[part] = True

    def _request(self, part: int) -> None:
        link = self.links[self.partition_map[part]]
        start = self.fetch_next[part]
        count = min(self.opts.fetch_credit, self.partition_done[part].chunks - start)
        if count <= 0:
            return
        self.fetch_next[part] = start + count
        send_nowait(link.control, p.encode(p.FetchPartition(
            job_id=self.job_id, partition=part, start=start, count=count)))

    def _stream(self, part: int) -> Iterator[tuple[int, bytes]]:
        """One partition's sorted run, fetched chunk by chunk on credit."""
        buf = self.fetch_buffers[part]
        while True:
            while not buf:
                if self.fetch_last[part]:
                    return
                if self.fetch_received[part] >= self.fetch_next[part] - 1:
                    self._request(part)
                self._pump(100)
            records = buf.popleft()
            if not buf and not self.fetch_last[part] \
                    and self.fetch_received[part] >= self.fetch_next[part] - 1:
                self._request(part)
            for word, count in records:
                yield -count, word

    def _merged_records(self) -> Iterator[tuple[bytes, int]]:
        """k-way merge of the sorted partitions: count desc, word asc, flat memory."""
        self.reporter.phase("merge")
        streams = []
        for part in sorted(self.partition_map):
            self.fetch_buffers[part] = deque()
            self.fetch_next[part] = 0
            self.fetch_received[part] = 0
            self.fetch_last[part] = False
            if self.partition_done[part].records:
                self._request(part)
                streams.append(self._stream(part))
        for neg, word in heapq.merge(*streams):
            yield word, -neg

    # ---------------------------------------------------------------- end
    def _end_job(self, reason: str) -> None:
        if not self.links:
            return
        self.pending.clear()
        for link in self.links.values():
            self._send_control(link.node_id, p.JobEnd(seq=self._next_seq(), job_id=self.job_id,
                                                      reason=reason))
        deadline = time.monotonic() + JOB_END_TIMEOUT_S
        self.failure = None
        while self.pending and time.monotonic() < deadline:
            try:
                self._pump(100)
            except Exception:
                self.failure = None
        if self.pending:
            log.warning("%d node(s) did not confirm the end of the job; they will drop it "
                        "when its lease expires", len({x.node_id for x in self.pending.values()}))
        self.links = {}


PymrErrorT = Exception
