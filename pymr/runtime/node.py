"""The node daemon: owns the sockets, routes messages, never runs user code.

It binds a task PULL, a shuffle PULL, a control ROUTER and an events PUB (all
CURVE), plus a local ROUTER its executors connect to. It only moves messages:
map tasks to idle executors, shuffle chunks to the executor that reduces their
partition, reports to the master that owns the job. Sends never block. What to do
with a job's messages is decided by the ``JobTable``; the executor processes are
kept by the ``Supervisor``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from .._version import __version__
from ..config import UNICODE_VERSION, NodeOptions
from ..engine.jobtable import JobTable, NodeJob, Send
from ..errors import ProtocolError
from ..jobs import builtin_hashes
from ..net.members import MemberBook
from ..net.security import Authenticator, ClusterKey, prove_rejects_strangers, secure_bind
from ..net.transport import LogOnce, make_socket, send_nowait
from ..wire import protocol as p
from ._exec_entry import exec_endpoint, make_run_dir
from .machine import LoadMeter
from .state import DATA_DIR
from .supervisor import ExecutorSlot, Supervisor

log = logging.getLogger(__name__)

#: Longest notice text and traceback a node relays from a master to its PUB socket.
NOTICE_TEXT_MAX = 1000
NOTICE_TRACEBACK_MAX = 20_000
#: Most messages read from one socket per loop turn, so that no socket starves the others.
DRAIN_MAX = 1000


@dataclass(frozen=True, slots=True)
class NodeEndpoints:
    control: str
    task: str
    shuffle: str
    events: str


def spill_root(opts: NodeOptions, node_id: str, run_dir: Path) -> Path:
    """Where executors spill retained map outputs: a run directory in the node's data
    dir (a real disk, unlike a tmpfs /tmp); the embedded cluster keeps to its run dir
    and never writes to the user's home."""
    if opts.embedded:
        return run_dir / "spill"
    data = opts.home / DATA_DIR
    try:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(make_run_dir(node_id, parent=str(data)))
    except OSError as exc:
        log.warning("cannot use %s for spilled map outputs (%s); using %s", data,
                    exc.strerror, run_dir)
        return run_dir / "spill"


def drain(sock: zmq.Socket, handle: Callable[[list[Any]], None],
          limit: int | None = DRAIN_MAX) -> None:
    """Handle what the socket holds, up to ``limit`` messages (None: all of it)."""
    count = 0
    while limit is None or count < limit:
        try:
            frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        handle(frames)
        count += 1


class NodeSockets:
    """The daemon's zmq context, its ZAP authenticator and its five CURVE sockets."""

    def __init__(self, key: ClusterKey) -> None:
        self.ctx = zmq.Context()
        try:
            self.auth = Authenticator(self.ctx, key).start()
        except BaseException:
            self.ctx.destroy(linger=0)
            raise

    def bind(self, opts: NodeOptions, exec_endpoint: str) -> NodeEndpoints:
        """Bind everything (TCP at base+0..3, or free ports); refuse to serve unless a
        stranger without the key is turned away."""
        host, base = opts.host, opts.base_port

        def ep(offset: int) -> str:
            return f"tcp://{host}:{base + offset}" if base else f"tcp://{host}:*"

        self.exec = make_socket(self.ctx, zmq.ROUTER, sndhwm=0, rcvhwm=0)
        self.exec.router_handover = True  # a replacement executor reuses the identity
        secure_bind(self.exec, exec_endpoint, self.auth)
        self.task = make_socket(self.ctx, zmq.PULL, rcvhwm=4)
        task = secure_bind(self.task, ep(0), self.auth)
        self.shuffle = make_socket(self.ctx, zmq.PULL, rcvhwm=256)
        shuffle = secure_bind(self.shuffle, ep(1), self.auth)
        self.control = make_socket(self.ctx, zmq.ROUTER, sndhwm=10_000, rcvhwm=10_000)
        control = secure_bind(self.control, ep(2), self.auth)
        self.events = make_socket(self.ctx, zmq.PUB, sndhwm=1000)
        events = secure_bind(self.events, ep(3), self.auth)
        prove_rejects_strangers(self.ctx, control, self.auth)
        return NodeEndpoints(control, task, shuffle, events)

    def close(self) -> None:
        self.auth.stop()
        self.ctx.destroy(linger=0)


class Waker:
    """A pipe that wakes the loop's poll at once: written by ``stop()`` and, through
    ``signal.set_wakeup_fd``, by any signal. A signal caught by another thread (the ZAP
    authenticator's) only sets a flag that the loop would see after its poll times out
    (up to 100 ms: every embedded job paid it at random when its node was told to stop)."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    def wake(self) -> None:
        if self.w >= 0:
            with contextlib.suppress(OSError):
                os.write(self.w, b"x")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self.r, 4096)

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        """Signals wake the loop while it runs (only the main thread may ask this)."""
        in_main = threading.current_thread() is threading.main_thread()
        old = signal.set_wakeup_fd(self.w, warn_on_full_buffer=False) if in_main else -1
        try:
            yield
        finally:
            if in_main:
                signal.set_wakeup_fd(old)

    def close(self) -> None:
        for fd in (self.r, self.w):
            if fd >= 0:
                os.close(fd)
        self.r = self.w = -1


class ExecutorReports:
    """The daemon's executors' messages: bookkeeping of what each holds, events for
    observers, then (unless kept here) the relay to the master of their job."""

    def __init__(self, node_id: str, sup: Supervisor, table: JobTable, drop: LogOnce,
                 publish: Callable[[bytes, p.Message], None],
                 to_control: Callable[[list[Any]], bool],
                 send: Callable[[list[Send]], None]) -> None:
        self.node_id = node_id
        self.sup = sup
        self.table = table
        self.drop = drop
        self.publish = publish
        self.to_control = to_control
        self.send = send
        self.tasks_done = 0
        self.bytes_processed = 0

    def on_message(self, frames: list[Any]) -> None:
        """One message from an executor: bookkeeping through ``EXECUTOR_HANDLERS``, then,
        unless the handler kept it here, relayed to the master of its job."""
        ident = frames[0].bytes
        try:
            msg, payload = p.decode(frames[1:])
        except ProtocolError as exc:
            self.drop("executor", str(exc))
            return
        e = self.sup.by_identity(ident)
        if e is None:
            return
        handler = EXECUTOR_HANDLERS.get(type(msg))
        if handler is not None and not handler(self, e, msg):
            return
        owner = self.table.jobs.get(getattr(msg, "job_id", ""))
        if owner is None:
            return
        if not self.to_control([owner.master, *frames[1:]]):
            log.warning("job %s: master unreachable; report dropped", owner.job_id)

    def ready(self, e: ExecutorSlot, msg: p.ExecutorReady) -> bool:
        """Send what was held for it and, to a replacement, the running jobs; not relayed."""
        self.sup.mark_ready(e)
        if e.replacement:
            self.send(self.table.replay(e.index))
        return False

    def output_done(self, e: ExecutorSlot, msg: p.OutputDone) -> bool:
        """The output's tasks are flushed: no longer lost with this executor."""
        for t, a in msg.tasks:
            e.unflushed.discard((msg.job_id, t, a))
        return True

    def task_executed(self, e: ExecutorSlot, msg: p.TaskExecuted) -> bool:
        """The task is done but unflushed (lost if the executor dies); observers see it."""
        key = (msg.job_id, msg.task_id, msg.attempt)
        e.task_over(key)
        e.unflushed.add(key)
        self.tasks_done += 1
        self.bytes_processed += msg.nbytes
        self.publish(p.TOPIC_PROGRESS, p.Progress(
            job_id=msg.job_id, node_id=self.node_id, task_id=msg.task_id,
            attempt=msg.attempt, nbytes=msg.nbytes))
        return True

    def task_failed(self, e: ExecutorSlot, msg: p.TaskFailedReport) -> bool:
        """The task is over on this executor; observers see the error."""
        e.task_over((msg.job_id, msg.task_id, msg.attempt))
        self.publish(p.TOPIC_ERROR, p.ErrorEvent(
            job_id=msg.job_id, node_id=self.node_id, task_id=msg.task_id,
            attempt=msg.attempt, exc_type=msg.exc_type, message=msg.message,
            traceback=msg.traceback))
        return True


class NodeDaemon:
    """One per machine (or several per machine in the embedded cluster and tests)."""

    def __init__(self, opts: NodeOptions, key: ClusterKey, node_id: str | None = None,
                 run_dir: str | None = None, executors: list[Any] | None = None) -> None:
        self.opts = opts
        self.key = key
        self.node_id = node_id or secrets.token_hex(4)
        self.incarnation = secrets.token_hex(4)
        self.name = opts.name or socket.gethostname()
        self.slots = opts.slots or os.cpu_count() or 1
        self.started = time.monotonic()
        self.drop = LogOnce(log)
        self.load = LoadMeter()
        self.members = MemberBook(self.node_id)   # for peer exchange (filled by the keeper)
        self._stop = False
        self.run_dir = Path(run_dir or make_run_dir(self.node_id))
        self.spill_root = spill_root(opts, self.node_id, self.run_dir)
        self.exec_endpoint = exec_endpoint(str(self.run_dir))
        self.sup = Supervisor(self.node_id, self.exec_endpoint, key, opts.nice, executors)
        self.table = JobTable(opts, self.node_id, self.name, self.spill_root,
                              builtin_hashes() if opts.builtin_only else set())
        self.reports = ExecutorReports(self.node_id, self.sup, self.table, self.drop,
                                       self._publish, self._to_control, self._send)
        self.socks: NodeSockets | None = None
        self.endpoints: NodeEndpoints | None = None
        self._waker = Waker()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> NodeEndpoints:
        """Start executors (before any zmq object exists), then bind everything."""
        self.sup.start(self.slots)
        self.slots = self.table.executors = len(self.sup.slots)
        self.socks = NodeSockets(self.key)
        self.endpoints = self.socks.bind(self.opts, self.exec_endpoint)
        exec_sock = self.socks.exec
        self.sup.attach(lambda frames: send_nowait(exec_sock, frames))
        if not self.opts.embedded:
            self._wait_executors_ready()
        # The embedded node answers at once: executors finish starting while the master
        # says hello; messages for them wait in their outbox until they are ready.
        return self.endpoints

    def _wait_executors_ready(self, timeout_s: float = 60.0) -> None:
        assert self.socks is not None
        deadline = time.monotonic() + timeout_s
        while not self.sup.all_ready():
            if time.monotonic() > deadline:
                raise RuntimeError("executors did not start")
            if self.socks.exec.poll(200):
                self.reports.on_message(self.socks.exec.recv_multipart(copy=False))
            dead = self.sup.died_at_start()
            if dead is not None:
                raise RuntimeError(f"executor {dead.index} died at start-up")

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler): wakes its poll at once."""
        self._stop = True
        self._waker.wake()

    def close(self) -> None:
        """Stop executors, close sockets, remove the run directory."""
        self.sup.shutdown(self._send_stop if self.socks is not None else None)
        if self.socks is not None:
            self.socks.close()
            self.socks = None
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.spill_root, ignore_errors=True)
        self._waker.close()

    def _send_stop(self, e: ExecutorSlot) -> None:
        assert self.socks is not None
        send_nowait(self.socks.exec, [e.identity, *p.encode(p.ExecStop())])

    def run(self) -> None:
        """Serve until ``stop()``; every wait is bounded."""
        with self._waker.on_signals():
            self._serve()

    def _serve(self) -> None:
        s = self.socks
        assert s is not None
        poller = zmq.Poller()
        for sock in (s.control, s.task, s.shuffle, s.exec):
            poller.register(sock, zmq.POLLIN)
        poller.register(self._waker.r, zmq.POLLIN)
        next_beat = 0.0
        parent = os.getppid()
        while not self._stop:
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat()
                self._check_executors()
                self._expire_leases(now)
                if self.opts.embedded and os.getppid() != parent:
                    log.info("embedded node: its job process is gone, stopping")
                    return
                next_beat = now + self.opts.heartbeat_interval_s
            events = dict(poller.poll(max(1, min(100, int((next_beat - now) * 1000)))))
            if self._waker.r in events:
                self._waker.drain()  # stop() and signals: woken, now drained
            if s.exec in events:
                drain(s.exec, self.reports.on_message)
            if s.control in events:
                drain(s.control, self._on_control)
            if s.shuffle in events:
                drain(s.shuffle, self._on_shuffle)
            if s.task in events:
                drain(s.task, self._on_task, limit=None)
            self._dispatch()

    # ---------------------------------------------------------------- sending
    def _to_control(self, frames: list[Any]) -> bool:
        """To a peer of the control socket: ``frames`` start with its identity."""
        assert self.socks is not None
        return send_nowait(self.socks.control, frames)

    def _reply(self, peer: bytes, msg: p.Message) -> None:
        self._to_control([peer, *p.encode(msg)])

    def _send(self, sends: list[Send]) -> None:
        """Carry out the job table's answer: to executors by index, to masters by id."""
        for dest, msg in sends:
            if isinstance(dest, int):
                self.sup.deliver(dest, p.encode(msg))
            else:
                self._reply(dest, msg)

    def _publish(self, topic: bytes, msg: p.Message) -> None:
        assert self.socks is not None
        send_nowait(self.socks.events, p.encode_topic(topic, msg))

    # ---------------------------------------------------------------- control
    def _on_control(self, frames: list[Any]) -> None:
        """One message from a master or an observer, through ``CONTROL_HANDLERS``."""
        if len(frames) < 2:
            return
        peer = frames[0].bytes
        try:
            msg, _ = p.decode(frames[1:])
        except ProtocolError as exc:
            self.drop(peer.hex(), str(exc))
            return
        handler = CONTROL_HANDLERS.get(type(msg))
        if handler is None:
            self.drop(peer.hex(), f"unexpected {msg.TYPE} on control")
            return
        handler(self, peer, msg)

    def _on_hello(self, peer: bytes, msg: p.Hello) -> None:
        """Who this node is and where to reach it (and the members it knows, if asked)."""
        assert self.endpoints is not None
        if msg.member:
            self.members.joined(msg.member)     # a node joining through this one
        self._reply(peer, p.HelloReply(
            seq=msg.seq, node_id=self.node_id, name=self.name,
            incarnation=self.incarnation, pymr_version=__version__,
            unicode_version=UNICODE_VERSION, slots=self.slots,
            task_endpoint=self.endpoints.task, shuffle_endpoint=self.endpoints.shuffle,
            events_endpoint=self.endpoints.events, builtin_only=self.opts.builtin_only,
            python_version=platform.python_version(),
            peers=self.members.answer() if msg.want_peers else []))

    def _on_status_request(self, peer: bytes, msg: p.StatusRequest) -> None:
        self._reply(peer, self._status(msg.seq))

    def _on_job_start_msg(self, peer: bytes, msg: p.JobStart) -> None:
        self._send(self.table.start(peer, msg, time.monotonic()))

    def _on_lease(self, peer: bytes, msg: p.Lease) -> None:
        self.table.renew(peer, msg.job_id, time.monotonic())

    def _on_job_notice(self, peer: bytes, msg: p.JobNotice) -> None:
        """Relay the master's notice to observers, cut to size, under this node's id."""
        if self.table.owned(peer, msg.job_id) is not None:
            self._publish(p.TOPIC_PROGRESS, dataclasses.replace(
                msg, text=msg.text[:NOTICE_TEXT_MAX], message=msg.message[:NOTICE_TEXT_MAX],
                where=msg.where[:NOTICE_TEXT_MAX], failed_on=msg.failed_on[:200],
                exc_type=msg.exc_type[:200], traceback=msg.traceback[:NOTICE_TRACEBACK_MAX],
                node_id=self.node_id))

    def _on_job_progress(self, peer: bytes, msg: p.JobProgress) -> None:
        """Relay the master's job progress to dashboards, under this node's id."""
        if self.table.owned(peer, msg.job_id) is not None:
            self._publish(p.TOPIC_JOB, dataclasses.replace(
                msg, error=msg.error[:NOTICE_TEXT_MAX], node_id=self.node_id))

    def _on_cancel_task(self, peer: bytes, msg: p.CancelTask) -> None:
        """Drop a losing attempt still queued here, or tell the executor that has it."""
        job = self._job_of(peer, msg.job_id)
        if job is None or self.table.unqueue(job, msg.task_id, msg.attempt):
            return
        holder = self.sup.holder((msg.job_id, msg.task_id, msg.attempt))
        if holder is not None:
            self.sup.deliver(holder.index, p.encode(msg))

    def _on_fetch_partition(self, peer: bytes, msg: p.FetchPartition) -> None:
        job = self._job_of(peer, msg.job_id)
        if job is not None:
            self._send(self.table.fetch_route(job, msg))

    def _job_of(self, peer: bytes, job_id: str) -> NodeJob | None:
        job = self.table.owned(peer, job_id)
        if job is None:
            self.drop(peer.hex(), "message for a job this peer does not own")
        return job

    def _on_job_control(self, peer: bytes, msg: Any) -> None:
        """An acked message of a job's master, through ``JOB_CONTROL_HANDLERS``, then acked."""
        job = self.table.jobs.get(msg.job_id)
        if job is None:
            # Idempotent: a re-sent JobEnd or a late message for a finished job.
            self._reply(peer, p.Ack(seq=msg.seq))
            return
        if job.master != peer:
            self.drop(peer.hex(), "control message for a job this peer does not own")
            return
        self._send(JOB_CONTROL_HANDLERS[type(msg)](self.table, job, msg))
        self._reply(peer, p.Ack(seq=msg.seq))

    def _expire_leases(self, now: float) -> None:
        for job in self.table.expired(now):
            log.warning("job %s: its master stopped renewing the lease; dropping it",
                        job.job_id)
            self._send(self.table.end(job, "lease expired"))

    # ---------------------------------------------------------------- tasks and shuffle
    def _on_task(self, frames: list[Any]) -> None:
        """A map task from a master: queued for an executor, or dropped."""
        try:
            msg, _ = p.decode(frames)
        except ProtocolError as exc:
            self.drop("task socket", str(exc))
            return
        if not isinstance(msg, p.MapTask):
            self.drop("task socket", f"unexpected {msg.TYPE}")
            return
        why, sends = self.table.take_task(msg, frames)
        if why:
            self.drop("task socket", why)
        self._send(sends)

    def _dispatch(self) -> None:
        """Give queued tasks to executors with room, round-robin across jobs."""
        while self.table.has_tasks():
            e = self.sup.free()
            if e is None:
                return
            item = self.table.next_task()
            if item is None:
                continue
            task, frames = item
            e.tasks.append((task.job_id, task.task_id, task.attempt))
            self.sup.deliver(e.index, frames)

    def _on_shuffle(self, frames: list[Any]) -> None:
        """A chunk from a mapper, to the executor that reduces its partition."""
        try:
            msg, _ = p.decode(frames[:1])
        except ProtocolError as exc:
            self.drop("shuffle socket", str(exc))
            return
        if not isinstance(msg, p.ShuffleChunk) or len(frames) != 2:
            self.drop("shuffle socket", "not a shuffle chunk")
            return
        owner = self.table.owner(msg.job_id, msg.partition)
        if owner is None:
            self.drop("shuffle socket", "chunk for an unknown job or partition")
            return
        self.sup.deliver(owner, frames)

    # ---------------------------------------------------------------- executors
    def _check_executors(self) -> None:
        """Replace dead or stopped executors; their masters hear what was lost with them."""
        if self._stop:
            return
        for e, why in self.sup.faults(time.monotonic()):
            log.error("executor %d: %s; replacing it", e.index, why)
            self._send(self.table.lost_reports(e.index, e.tasks, e.unflushed, why))
            self.sup.replace(e.index)

    # ---------------------------------------------------------------- observers
    def _heartbeat(self) -> None:
        load = self.load.read()
        self._publish(p.TOPIC_HEARTBEAT, p.Heartbeat(
            node_id=self.node_id, incarnation=self.incarnation, slots=self.slots,
            busy=self.sup.busy_count(), tasks_done=self.reports.tasks_done,
            jobs=list(self.table.jobs), bytes_processed=self.reports.bytes_processed,
            **(load.fields() if load else {})))

    def _status(self, seq: int) -> p.StatusReply:
        return p.StatusReply(
            seq=seq, node_id=self.node_id, name=self.name, incarnation=self.incarnation,
            pymr_version=__version__, slots=self.slots, busy=self.sup.busy_count(),
            tasks_done=self.reports.tasks_done, bytes_processed=self.reports.bytes_processed,
            uptime_s=time.monotonic() - self.started, jobs=list(self.table.jobs),
            addresses=[self.endpoints.control] if self.endpoints else [],
            ready=self.sup.ready_count(),
            **(self.load.last.fields() if self.load.last else {}))


#: What the daemon does with each message on its control socket (from masters, observers
#: and joining nodes).
CONTROL_HANDLERS: dict[type[p.Message], Callable[[NodeDaemon, bytes, Any], None]] = {
    p.Hello: NodeDaemon._on_hello,
    p.StatusRequest: NodeDaemon._on_status_request,
    p.JobStart: NodeDaemon._on_job_start_msg,
    p.Lease: NodeDaemon._on_lease,
    p.JobNotice: NodeDaemon._on_job_notice,
    p.JobProgress: NodeDaemon._on_job_progress,
    p.CancelTask: NodeDaemon._on_cancel_task,
    p.FetchPartition: NodeDaemon._on_fetch_partition,
    p.Commit: NodeDaemon._on_job_control,
    p.DropOutput: NodeDaemon._on_job_control,
    p.Flush: NodeDaemon._on_job_control,
    p.InputComplete: NodeDaemon._on_job_control,
    p.JobEnd: NodeDaemon._on_job_control,
    p.JobUpdate: NodeDaemon._on_job_control,
    p.ResendChunks: NodeDaemon._on_job_control,
}
#: The acked messages of a job's master (``_on_job_control``), once the job and its owner
#: are checked: the job table answers each with the messages to send before the ack.
JOB_CONTROL_HANDLERS: dict[type[p.Message],
                           Callable[[JobTable, NodeJob, Any], list[Send]]] = {
    p.Commit: JobTable.on_commit,
    p.DropOutput: JobTable.on_broadcast,
    p.Flush: JobTable.on_broadcast,
    p.InputComplete: JobTable.on_input_complete,
    p.JobEnd: JobTable.on_end,
    p.JobUpdate: JobTable.on_update,
    p.ResendChunks: JobTable.on_resend,
}
#: Never sent to a node's control socket: replies and reports a node sends, the task and
#: shuffle sockets' messages, the daemon-executor link and the PUB events. Dropped as
#: unexpected if they come.
NOT_ON_CONTROL: frozenset[type[p.Message]] = frozenset({
    p.HelloReply, p.Ack, p.StatusReply, p.MapTask, p.ShuffleChunk, p.TaskExecuted,
    p.TaskFailedReport, p.OutputDone, p.ReduceFailed, p.PartitionComplete, p.PartitionData,
    p.PartitionLost, p.ChunksMissing, p.OutputLost, p.ExecutorReady, p.ExecJob,
    p.ExecJobEnd, p.ExecStop, p.Heartbeat, p.Progress, p.ErrorEvent,
})
#: Bookkeeping for messages from executors; a handler returns whether the message goes on
#: to the master of its job.
EXECUTOR_HANDLERS: dict[type[p.Message],
                        Callable[[ExecutorReports, ExecutorSlot, Any], bool]] = {
    p.ExecutorReady: ExecutorReports.ready,
    p.OutputDone: ExecutorReports.output_done,
    p.TaskExecuted: ExecutorReports.task_executed,
    p.TaskFailedReport: ExecutorReports.task_failed,
}
#: Reports an executor sends that the daemon only relays to the master of their job.
EXECUTOR_RELAYED: frozenset[type[p.Message]] = frozenset({
    p.ReduceFailed, p.PartitionComplete, p.PartitionData, p.PartitionLost, p.ChunksMissing,
    p.OutputLost,
})
#: Never sent by an executor to its daemon (shuffle chunks go straight to the reducers'
#: nodes); relayed like a report if one carries a running job's id, dropped otherwise.
NEVER_FROM_EXECUTOR: frozenset[type[p.Message]] = frozenset({
    p.Hello, p.HelloReply, p.Ack, p.JobStart, p.MapTask, p.CancelTask, p.Flush, p.Commit,
    p.DropOutput, p.InputComplete, p.JobUpdate, p.ResendChunks, p.FetchPartition, p.Lease,
    p.JobEnd, p.StatusRequest, p.StatusReply, p.ShuffleChunk, p.ExecJob, p.ExecJobEnd,
    p.ExecStop, p.Heartbeat, p.Progress, p.ErrorEvent, p.JobNotice, p.JobProgress,
})
