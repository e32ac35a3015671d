"""The node daemon: owns the sockets, routes messages, never runs user code.

It binds a task PULL, a shuffle PULL, a control ROUTER and an events PUB (all
CURVE), plus a local ROUTER its executors connect to. It only moves messages:
map tasks to idle executors, shuffle chunks to the executor that reduces their
partition, reports to the master that owns the job. Sends never block.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from . import protocol as p
from ._exec_entry import exec_endpoint, make_run_dir, spawn_executors
from ._version import __version__
from .config import EXECUTOR_STOPPED_S, UNICODE_VERSION, NodeOptions, executor_share
from .errors import ProtocolError
from .jobs import builtin_hashes, bundle_sha256
from .machine import LoadMeter
from .members import MemberBook
from .security import Authenticator, ClusterKey, prove_rejects_strangers, secure_bind
from .state import DATA_DIR
from .transport import LogOnce, make_socket, send_nowait

log = logging.getLogger(__name__)

#: Map tasks an executor holds at once (one running, one waiting in its socket).
EXECUTOR_TASK_DEPTH = 2
#: Longest notice text and traceback a node relays from a master to its PUB socket.
NOTICE_TEXT_MAX = 1000
NOTICE_TRACEBACK_MAX = 20_000


def _job_start_problem(msg: p.JobStart) -> str:
    """Why a JobStart cannot run here (a member's malformed job), or ""."""
    if not 1 <= msg.num_partitions <= 1_000_000:
        return f"bad partition count {msg.num_partitions}"
    if sorted(msg.partition_map) != list(range(msg.num_partitions)):
        return "the partition map does not name every partition exactly once"
    for node, endpoint in msg.shuffle_endpoints.items():
        if not endpoint.startswith("tcp://") or ":" not in endpoint[6:]:
            return f"bad shuffle endpoint for node {node}"
    if any(node not in msg.shuffle_endpoints for node in msg.partition_map.values()):
        return "the partition map names a node without a shuffle endpoint"
    if bundle_sha256(msg.source, msg.modules) != msg.sha256:
        return "the job's program does not match its sha256"
    return ""


def _is_stopped(pid: int) -> bool:
    """The process is stopped by a signal (state T in /proc; Linux). Not t (traced): an
    executor paused in a debugger or sampled by a profiler is left alone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat.rpartition(b")")[2].split()
    return bool(fields) and fields[0] == b"T"


@dataclass
class ExecutorSlot:
    index: int
    identity: bytes
    process: Any
    ready: bool = False
    tasks: deque[tuple[str, int, int]] = field(default_factory=deque)
    unflushed: set[tuple[str, int, int]] = field(default_factory=set)
    outbox: list[list[Any]] = field(default_factory=list)   # held until the executor is ready
    started: float = field(default_factory=time.monotonic)
    replacement: bool = False
    stopped_since: float | None = None   # when it was first seen stopped (SIGSTOP)


@dataclass
class NodeJob:
    """What the daemon keeps of a job: routing, not data."""

    job_id: str
    master: bytes
    spec: p.JobStart
    owners: dict[int, int]                 # partition -> executor index
    last_lease: float
    queue: deque[list[Any]] = field(default_factory=deque)
    num_tasks: int = -1


@dataclass(frozen=True, slots=True)
class NodeEndpoints:
    control: str
    task: str
    shuffle: str
    events: str


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
        self.tasks_done = 0
        self.bytes_processed = 0
        self.jobs: dict[str, NodeJob] = {}
        self.rr: deque[str] = deque()          # round-robin order of jobs with queued tasks
        self.executors: list[ExecutorSlot] = []
        self.drop = LogOnce(log)
        self.load = LoadMeter()
        self.members = MemberBook(self.node_id)   # for peer exchange (filled by the keeper)
        self._stop = False
        self.run_dir = Path(run_dir or make_run_dir(self.node_id))
        self.spill_root = self._spill_root()
        self.exec_endpoint = exec_endpoint(str(self.run_dir))
        self._prespawned = executors or []
        self.ctx: zmq.Context | None = None
        self.auth: Authenticator | None = None
        self.endpoints: NodeEndpoints | None = None
        self.builtin_hashes = builtin_hashes() if opts.builtin_only else set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def _spill_root(self) -> Path:
        """Where executors spill retained map outputs: a run directory in the node's data
        dir (a real disk, unlike a tmpfs /tmp); the embedded cluster keeps to its run dir
        and never writes to the user's home."""
        if self.opts.embedded:
            return self.run_dir / "spill"
        data = self.opts.home / DATA_DIR
        try:
            data.mkdir(parents=True, exist_ok=True, mode=0o700)
            return Path(make_run_dir(self.node_id, parent=str(data)))
        except OSError as exc:
            log.warning("cannot use %s for spilled map outputs (%s); using %s", data,
                        exc.strerror, self.run_dir)
            return self.run_dir / "spill"

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> NodeEndpoints:
        """Start executors (before any zmq object exists), then bind everything."""
        procs = self._prespawned or spawn_executors(
            self.slots, self.node_id, self.exec_endpoint, self.key.public, self.key.secret,
            self.opts.nice, logging.getLogger().getEffectiveLevel())
        self.executors = [ExecutorSlot(index=i, identity=f"e{i}".encode(), process=proc)
                          for i, proc in enumerate(procs)]
        self.slots = len(self.executors)
        self.ctx = zmq.Context()
        self.auth = Authenticator(self.ctx, self.key).start()
        host = self.opts.host
        base = self.opts.base_port

        def ep(offset: int) -> str:
            return f"tcp://{host}:{base + offset}" if base else f"tcp://{host}:*"

        self.exec_sock = make_socket(self.ctx, zmq.ROUTER, sndhwm=0, rcvhwm=0)
        self.exec_sock.router_handover = True  # a replacement executor reuses the identity
        secure_bind(self.exec_sock, self.exec_endpoint, self.auth)
        self.task_sock = make_socket(self.ctx, zmq.PULL, rcvhwm=4)
        task = secure_bind(self.task_sock, ep(0), self.auth)
        self.shuffle_sock = make_socket(self.ctx, zmq.PULL, rcvhwm=256)
        shuffle = secure_bind(self.shuffle_sock, ep(1), self.auth)
        self.control = make_socket(self.ctx, zmq.ROUTER, sndhwm=10_000, rcvhwm=10_000)
        control = secure_bind(self.control, ep(2), self.auth)
        self.events = make_socket(self.ctx, zmq.PUB, sndhwm=1000)
        events = secure_bind(self.events, ep(3), self.auth)
        self.endpoints = NodeEndpoints(control, task, shuffle, events)
        prove_rejects_strangers(self.ctx, control, self.auth)
        if not self.opts.embedded:
            self._wait_executors_ready()
        # The embedded node answers at once: executors finish starting while the master
        # says hello; messages for them wait in their outbox until they are ready.
        return self.endpoints

    def _spawn_executor(self, index: int) -> ExecutorSlot:
        proc = spawn_executors(1, self.node_id, self.exec_endpoint, self.key.public,
                               self.key.secret, self.opts.nice,
                               logging.getLogger().getEffectiveLevel(), first_index=index)[0]
        return ExecutorSlot(index=index, identity=f"e{index}".encode(), process=proc)

    def _wait_executors_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(e.ready for e in self.executors):
            if time.monotonic() > deadline:
                raise RuntimeError("executors did not start")
            if self.exec_sock.poll(200):
                self._on_executor(self.exec_sock.recv_multipart(copy=False))
            for e in self.executors:
                if not e.process.is_alive():
                    raise RuntimeError(f"executor {e.index} died at start-up")

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler): wakes its poll at once."""
        self._stop = True
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def close(self) -> None:
        """Stop executors, close sockets, remove the run directory."""
        for e in self.executors:
            if e.ready and self.ctx is not None:
                send_nowait(self.exec_sock, [e.identity, *p.encode(p.ExecStop())])
            elif e.process.is_alive():
                e.process.terminate()  # still starting: it holds nothing yet
        for e in self.executors:
            e.process.join(timeout=5)
            if e.process.is_alive():
                e.process.kill()
                e.process.join(timeout=5)
        if self.auth is not None:
            self.auth.stop()
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
            self.ctx = None
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.spill_root, ignore_errors=True)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def run(self) -> None:
        """Serve until ``stop()``; every wait is bounded."""
        # A signal caught by another thread (the ZAP authenticator's) only sets a flag
        # that this thread sees after its poll times out (up to 100 ms: every embedded
        # job paid it at random when its node was told to stop). The wake-up fd makes the
        # poll return at once, so the handler (stop) runs at once.
        in_main = threading.current_thread() is threading.main_thread()
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False) \
            if in_main else -1
        try:
            self._serve()
        finally:
            if in_main:
                signal.set_wakeup_fd(old_wakeup)

    def _serve(self) -> None:
        poller = zmq.Poller()
        for s in (self.control, self.task_sock, self.shuffle_sock, self.exec_sock):
            poller.register(s, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
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
            if self._wake_r in events:
                try:
                    os.read(self._wake_r, 4096)  # stop() and signals: woken, now drained
                except OSError:
                    pass
            if self.exec_sock in events:
                for _ in range(1000):
                    try:
                        frames = self.exec_sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_executor(frames)
            if self.control in events:
                for _ in range(1000):
                    try:
                        frames = self.control.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_control(frames)
            if self.shuffle_sock in events:
                for _ in range(1000):
                    try:
                        frames = self.shuffle_sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_shuffle(frames)
            if self.task_sock in events:
                self._pull_tasks()
            self._dispatch()

    # ---------------------------------------------------------------- control
    def _reply(self, peer: bytes, msg: p.Message) -> None:
        send_nowait(self.control, [peer, *p.encode(msg)])

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
        self._reply(peer, self._job_start(peer, msg))

    def _on_lease(self, peer: bytes, msg: p.Lease) -> None:
        """The job's master still wants it (anyone else's lease is ignored)."""
        job = self.jobs.get(msg.job_id)
        if job is not None and job.master == peer:
            job.last_lease = time.monotonic()

    def _on_job_notice(self, peer: bytes, msg: p.JobNotice) -> None:
        """Relay the master's notice to observers, cut to size, under this node's id."""
        job = self.jobs.get(msg.job_id)
        if job is not None and job.master == peer:
            send_nowait(self.events, p.encode_topic(p.TOPIC_PROGRESS, dataclasses.replace(
                msg, text=msg.text[:NOTICE_TEXT_MAX], message=msg.message[:NOTICE_TEXT_MAX],
                where=msg.where[:NOTICE_TEXT_MAX], failed_on=msg.failed_on[:200],
                exc_type=msg.exc_type[:200], traceback=msg.traceback[:NOTICE_TRACEBACK_MAX],
                node_id=self.node_id)))

    def _on_job_progress(self, peer: bytes, msg: p.JobProgress) -> None:
        """Relay the master's job progress to dashboards, under this node's id."""
        job = self.jobs.get(msg.job_id)
        if job is not None and job.master == peer:
            send_nowait(self.events, p.encode_topic(p.TOPIC_JOB, dataclasses.replace(
                msg, error=msg.error[:NOTICE_TEXT_MAX], node_id=self.node_id)))

    def _on_cancel_task(self, peer: bytes, msg: p.CancelTask) -> None:
        job = self._job_of(peer, msg.job_id)
        if job is not None:
            self._cancel_task(job, msg)

    def _on_fetch_partition(self, peer: bytes, msg: p.FetchPartition) -> None:
        """To the executor that reduces the partition."""
        job = self._job_of(peer, msg.job_id)
        if job is not None and msg.partition in job.owners:
            self._to_executor(job.owners[msg.partition], p.encode(msg))

    def _job_of(self, peer: bytes, job_id: str) -> NodeJob | None:
        job = self.jobs.get(job_id)
        if job is None or job.master != peer:
            self.drop(peer.hex(), "message for a job this peer does not own")
            return None
        return job

    def _job_start(self, peer: bytes, msg: p.JobStart) -> p.Ack:
        if msg.job_id in self.jobs:
            return p.Ack(seq=msg.seq)
        if self.builtin_hashes and (msg.sha256 not in self.builtin_hashes or msg.modules
                                    or bundle_sha256(msg.source, {}) != msg.sha256):
            return p.Ack(seq=msg.seq, ok=False,
                         error=f"node {self.name} runs only built-in jobs (--builtin-only)")
        problem = _job_start_problem(msg)
        if problem:
            return p.Ack(seq=msg.seq, ok=False, error=problem)
        mine = sorted(part for part, node in msg.partition_map.items() if node == self.node_id)
        owners = {part: i % len(self.executors) for i, part in enumerate(mine)}
        endpoints = {part: msg.shuffle_endpoints.get(node, "")
                     for part, node in msg.partition_map.items()}
        if any(not e for e in endpoints.values()):
            return p.Ack(seq=msg.seq, ok=False, error="partition map names an unknown node")
        job = NodeJob(job_id=msg.job_id, master=peer, spec=msg, owners=owners,
                      last_lease=time.monotonic())
        self.jobs[msg.job_id] = job
        for e in self.executors:
            self._to_executor(e.index, p.encode(self._exec_job(msg, owners, e.index)))
        log.info("job %s started by a master; reducing partitions %s", msg.job_id, mine)
        return p.Ack(seq=msg.seq)

    def _exec_job(self, msg: p.JobStart, owners: dict[int, int], index: int,
                  map_only: bool = False, num_tasks: int = -1) -> p.ExecJob:
        parts = [] if map_only else [part for part, idx in owners.items() if idx == index]
        endpoints = {part: msg.shuffle_endpoints[node] for part, node in msg.partition_map.items()}
        return p.ExecJob(
            job_id=msg.job_id, job_name=msg.job_name, source=msg.source, sha256=msg.sha256,
            filename=msg.filename, modules=msg.modules, params=msg.params,
            memory=executor_share(self.opts.memory, msg.memory, len(self.executors)),
            num_partitions=msg.num_partitions, partitions=parts,
            shuffle_endpoints=endpoints, flush_key_limit=msg.flush_key_limit,
            num_tasks=num_tasks, epoch=msg.epoch,
            spill_dir=str(self.spill_root / f"{msg.job_id}.{index}"),
            retain_memory=self.opts.retain_memory)

    def _job_update(self, job: NodeJob, msg: p.JobUpdate) -> None:
        """Partitions moved: adopt the new map, give new partitions to live executors."""
        if msg.epoch < job.spec.epoch:
            return  # a stale update re-sent late
        job.spec = dataclasses.replace(job.spec, partition_map=msg.partition_map,
                                       shuffle_endpoints=msg.shuffle_endpoints, epoch=msg.epoch)
        if msg.num_tasks >= 0:
            job.num_tasks = msg.num_tasks
        mine = sorted(part for part, node in msg.partition_map.items() if node == self.node_id)
        owners = {part: idx for part, idx in job.owners.items() if part in mine}
        for part in mine:
            if part not in owners:
                load = {e.index: 0 for e in self.executors}
                for idx in owners.values():
                    load[idx] += 1
                owners[part] = min(load, key=lambda i: (load[i], i))
        job.owners = owners
        for e in self.executors:
            self._to_executor(e.index, p.encode(self._exec_job(job.spec, owners, e.index,
                                                               num_tasks=job.num_tasks)))

    def _on_job_control(self, peer: bytes, msg: Any) -> None:
        """An acked message of a job's master, through ``JOB_CONTROL_HANDLERS``, then acked."""
        job = self.jobs.get(msg.job_id)
        if job is None:
            # Idempotent: a re-sent JobEnd or a late message for a finished job.
            self._reply(peer, p.Ack(seq=msg.seq))
            return
        if job.master != peer:
            self.drop(peer.hex(), "control message for a job this peer does not own")
            return
        JOB_CONTROL_HANDLERS[type(msg)](self, peer, job, msg)
        self._reply(peer, p.Ack(seq=msg.seq))

    def _job_commit(self, peer: bytes, job: NodeJob, msg: p.Commit) -> None:
        self._route_commit(job, msg)

    def _job_end_msg(self, peer: bytes, job: NodeJob, msg: p.JobEnd) -> None:
        self._end_job(job, msg.reason)

    def _job_update_msg(self, peer: bytes, job: NodeJob, msg: p.JobUpdate) -> None:
        self._job_update(job, msg)

    def _job_resend(self, peer: bytes, job: NodeJob, msg: p.ResendChunks) -> None:
        """To the executor that retains the output; when it is gone, the output is lost."""
        index = p.output_executor(msg.output_id)
        if 0 <= index < len(self.executors):
            self._to_executor(index, p.encode(msg))
        else:
            send_nowait(self.control, [peer, *p.encode(p.OutputLost(
                job_id=job.job_id, node_id=self.node_id, output_id=msg.output_id))])

    def _job_input_complete(self, peer: bytes, job: NodeJob, msg: p.InputComplete) -> None:
        """Kept for executors started later (replacements), and told to every executor."""
        job.num_tasks = msg.num_tasks
        self._job_to_executors(peer, job, msg)

    def _job_to_executors(self, peer: bytes, job: NodeJob, msg: p.Message) -> None:
        for e in self.executors:
            self._to_executor(e.index, p.encode(msg))

    def _route_commit(self, job: NodeJob, msg: p.Commit) -> None:
        """Split a batch of commits by the executor that reduces each partition."""
        per_exec: dict[int, tuple[list[str], list[list[int]], list[dict[int, list[int]]]]] = {}
        for output_id, tasks, manifest in msg.entries():
            by_exec: dict[int, dict[int, list[int]]] = {}
            for part, man in manifest.items():
                if part in job.owners:
                    by_exec.setdefault(job.owners[part], {})[part] = man
            for idx, subset in by_exec.items():
                ids, task_lists, manifests = per_exec.setdefault(idx, ([], [], []))
                ids.append(output_id)
                task_lists.append(tasks)
                manifests.append(subset)
        for idx, (ids, task_lists, manifests) in per_exec.items():
            self._to_executor(idx, p.encode(p.Commit(
                seq=msg.seq, job_id=msg.job_id, output_ids=ids, tasks=task_lists,
                manifests=manifests, epoch=msg.epoch)))

    def _end_job(self, job: NodeJob, reason: str) -> None:
        self.jobs.pop(job.job_id, None)
        if job.job_id in self.rr:
            self.rr.remove(job.job_id)
        for e in self.executors:
            self._to_executor(e.index, p.encode(p.ExecJobEnd(job_id=job.job_id)))
        log.info("job %s ended (%s)", job.job_id, reason)

    def _expire_leases(self, now: float) -> None:
        for job in list(self.jobs.values()):
            if now - job.last_lease > self.opts.lease_timeout_s:
                log.warning("job %s: its master stopped renewing the lease; dropping it",
                            job.job_id)
                self._end_job(job, "lease expired")

    # ---------------------------------------------------------------- tasks
    def _pull_tasks(self) -> None:
        while True:
            try:
                frames = self.task_sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                msg, _ = p.decode(frames)
            except ProtocolError as exc:
                self.drop("task socket", str(exc))
                continue
            if not isinstance(msg, p.MapTask):
                self.drop("task socket", f"unexpected {msg.TYPE}")
                continue
            job = self.jobs.get(msg.job_id)
            if job is None:
                self.drop("task socket", "map task for an unknown job")
                continue
            if msg.path and not self.opts.read_paths:
                # Only nodes that share the master's files (the embedded cluster, or
                # --shared-fs) read splits by path: never let a member name a local file.
                self.drop("task socket", "map task naming a file on a node that reads none")
                send_nowait(self.control, [job.master, *p.encode(p.TaskFailedReport(
                    job_id=msg.job_id, node_id=self.node_id, task_id=msg.task_id,
                    attempt=msg.attempt, exc_type="Refused",
                    message="this node does not read input files by path (no --shared-fs)"))])
                continue
            if not hmac.compare_digest(msg.token, job.spec.task_token):
                self.drop("task socket", "map task without this job's token (not its master)")
                continue
            job.queue.append(frames)
            if job.job_id not in self.rr:
                self.rr.append(job.job_id)

    def _dispatch(self) -> None:
        """Give queued tasks to executors with room, round-robin across jobs."""
        while self.rr:
            free = [e for e in self.executors if e.ready and len(e.tasks) < EXECUTOR_TASK_DEPTH]
            if not free:
                return
            e = min(free, key=lambda x: len(x.tasks))
            job_id = self.rr.popleft()
            job = self.jobs.get(job_id)
            if job is None or not job.queue:
                continue
            frames = job.queue.popleft()
            msg = p.decode_header(frames[0].buffer)
            assert isinstance(msg, p.MapTask)
            e.tasks.append((job_id, msg.task_id, msg.attempt))
            self._to_executor(e.index, frames)
            if job.queue:
                self.rr.append(job_id)

    def _cancel_task(self, job: NodeJob, msg: p.CancelTask) -> None:
        """Drop a losing attempt still queued here, or tell the executor that has it."""
        key = (job.job_id, msg.task_id, msg.attempt)
        for frames in job.queue:
            task = p.decode_header(frames[0].buffer)
            assert isinstance(task, p.MapTask)
            if (task.task_id, task.attempt) == key[1:]:
                job.queue.remove(frames)
                return
        for e in self.executors:
            if key in e.tasks or key in e.unflushed:
                self._to_executor(e.index, p.encode(msg))
                return

    def _to_executor(self, index: int, frames: list[Any]) -> None:
        e = self.executors[index]
        if not e.ready:
            e.outbox.append(frames)
            return
        if not send_nowait(self.exec_sock, [e.identity, *frames]):
            log.warning("executor %d unreachable; message dropped", index)

    # ---------------------------------------------------------------- shuffle
    def _on_shuffle(self, frames: list[Any]) -> None:
        try:
            msg, _ = p.decode(frames[:1])
        except ProtocolError as exc:
            self.drop("shuffle socket", str(exc))
            return
        if not isinstance(msg, p.ShuffleChunk) or len(frames) != 2:
            self.drop("shuffle socket", "not a shuffle chunk")
            return
        job = self.jobs.get(msg.job_id)
        if job is None or msg.partition not in job.owners:
            self.drop("shuffle socket", "chunk for an unknown job or partition")
            return
        self._to_executor(job.owners[msg.partition], frames)

    # ---------------------------------------------------------------- executors
    def _on_executor(self, frames: list[Any]) -> None:
        """One message from an executor: bookkeeping through ``EXECUTOR_HANDLERS``, then,
        unless the handler kept it here, relayed to the master of its job."""
        ident = frames[0].bytes
        try:
            msg, payload = p.decode(frames[1:])
        except ProtocolError as exc:
            self.drop("executor", str(exc))
            return
        e = next((x for x in self.executors if x.identity == ident), None)
        if e is None:
            return
        handler = EXECUTOR_HANDLERS.get(type(msg))
        if handler is not None and not handler(self, e, msg):
            return
        owner = self.jobs.get(getattr(msg, "job_id", ""))
        if owner is None:
            return
        if not send_nowait(self.control, [owner.master, *frames[1:]]):
            log.warning("job %s: master unreachable; report dropped", owner.job_id)

    def _executor_ready(self, e: ExecutorSlot, msg: p.ExecutorReady) -> bool:
        """Send what was held for it and, to a replacement, the running jobs; not relayed."""
        e.ready = True
        held, e.outbox = e.outbox, []
        for frames in held:
            self._to_executor(e.index, frames)
        for job in self.jobs.values() if e.replacement else ():  # give it the jobs
            self._to_executor(e.index, p.encode(self._exec_job(job.spec, job.owners,
                                                               e.index, map_only=True)))
        return False

    def _executor_output_done(self, e: ExecutorSlot, msg: p.OutputDone) -> bool:
        """The output's tasks are flushed: no longer lost with this executor."""
        for t, a in msg.tasks:
            e.unflushed.discard((msg.job_id, t, a))
        return True

    def _executor_task_executed(self, e: ExecutorSlot, msg: p.TaskExecuted) -> bool:
        """The task is done but unflushed (lost if the executor dies); observers see it."""
        key = self._executor_task_over(e, msg)
        e.unflushed.add(key)
        self.tasks_done += 1
        self.bytes_processed += msg.nbytes
        send_nowait(self.events, p.encode_topic(p.TOPIC_PROGRESS, p.Progress(
            job_id=msg.job_id, node_id=self.node_id, task_id=msg.task_id,
            attempt=msg.attempt, nbytes=msg.nbytes)))
        return True

    def _executor_task_failed(self, e: ExecutorSlot, msg: p.TaskFailedReport) -> bool:
        """The task is over on this executor; observers see the error."""
        self._executor_task_over(e, msg)
        send_nowait(self.events, p.encode_topic(p.TOPIC_ERROR, p.ErrorEvent(
            job_id=msg.job_id, node_id=self.node_id, task_id=msg.task_id,
            attempt=msg.attempt, exc_type=msg.exc_type, message=msg.message,
            traceback=msg.traceback)))
        return True

    @staticmethod
    def _executor_task_over(e: ExecutorSlot, msg: p.TaskExecuted | p.TaskFailedReport
                            ) -> tuple[str, int, int]:
        """The executor no longer holds the task; its key."""
        key = (msg.job_id, msg.task_id, msg.attempt)
        if key in e.tasks:
            e.tasks.remove(key)
        e.unflushed.discard(key)
        return key

    def _check_executors(self) -> None:
        now = time.monotonic()
        for e in self.executors:
            if self._stop:
                continue
            if e.process.is_alive():
                if not _is_stopped(e.process.pid):
                    e.stopped_since = None
                    continue
                if e.stopped_since is None:
                    e.stopped_since = now
                if now - e.stopped_since < EXECUTOR_STOPPED_S:
                    continue
                # A stopped executor holds its tasks and partitions while the node keeps
                # heartbeating for it: nobody else would ever notice.
                why = f"executor stopped for {now - e.stopped_since:.0f} s (SIGSTOP?); killed"
                e.process.kill()
                e.process.join(timeout=5)
            else:
                why = f"executor exited with code {e.process.exitcode}"
            log.error("executor %d: %s; replacing it", e.index, why)
            for job in self.jobs.values():
                for part, idx in job.owners.items():
                    if idx == e.index:
                        send_nowait(self.control, [job.master, *p.encode(p.PartitionLost(
                            job_id=job.job_id, node_id=self.node_id, partition=part,
                            reason=why))])
            for job_id, task_id, attempt in list(e.tasks) + sorted(e.unflushed):
                running = self.jobs.get(job_id)
                if running is not None:
                    send_nowait(self.control, [running.master, *p.encode(p.TaskFailedReport(
                        job_id=job_id, node_id=self.node_id, task_id=task_id,
                        attempt=attempt, exc_type=p.LOST if (job_id, task_id, attempt)
                        in e.unflushed else "ExecutorCrashed", message=why))])
            new = self._spawn_executor(e.index)
            new.replacement = True
            self.executors[e.index] = new

    def _heartbeat(self) -> None:
        busy = sum(1 for e in self.executors if e.tasks)
        load = self.load.read()
        send_nowait(self.events, p.encode_topic(p.TOPIC_HEARTBEAT, p.Heartbeat(
            node_id=self.node_id, incarnation=self.incarnation, slots=self.slots, busy=busy,
            tasks_done=self.tasks_done, jobs=list(self.jobs),
            bytes_processed=self.bytes_processed, **(load.fields() if load else {}))))

    def _status(self, seq: int) -> p.StatusReply:
        return p.StatusReply(
            seq=seq, node_id=self.node_id, name=self.name, incarnation=self.incarnation,
            pymr_version=__version__, slots=self.slots,
            busy=sum(1 for e in self.executors if e.tasks), tasks_done=self.tasks_done,
            bytes_processed=self.bytes_processed, uptime_s=time.monotonic() - self.started,
            jobs=list(self.jobs),
            addresses=[self.endpoints.control] if self.endpoints else [],
            ready=sum(1 for e in self.executors if e.ready),
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
#: are checked.
JOB_CONTROL_HANDLERS: dict[type[p.Message],
                           Callable[[NodeDaemon, bytes, NodeJob, Any], None]] = {
    p.Commit: NodeDaemon._job_commit,
    p.DropOutput: NodeDaemon._job_to_executors,
    p.Flush: NodeDaemon._job_to_executors,
    p.InputComplete: NodeDaemon._job_input_complete,
    p.JobEnd: NodeDaemon._job_end_msg,
    p.JobUpdate: NodeDaemon._job_update_msg,
    p.ResendChunks: NodeDaemon._job_resend,
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
EXECUTOR_HANDLERS: dict[type[p.Message], Callable[[NodeDaemon, ExecutorSlot, Any], bool]] = {
    p.ExecutorReady: NodeDaemon._executor_ready,
    p.OutputDone: NodeDaemon._executor_output_done,
    p.TaskExecuted: NodeDaemon._executor_task_executed,
    p.TaskFailedReport: NodeDaemon._executor_task_failed,
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
