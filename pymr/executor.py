"""An executor process: runs map + combine, shuffles, and reduces its partitions.

One per slot, started by the node daemon with ``spawn`` at a lower priority. It
talks to its daemon over a local DEALER (ipc, CURVE) and pushes shuffle chunks
straight to the reducer nodes' shuffle PULL sockets. All the heavy work of a
node happens here, so the daemon never blocks.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from . import protocol as p
from .errors import JobLoadError, ProtocolError
from .heap import JobHeap
from .jobs import JobSpec
from .jobs.program import JobProgram, ProgramCache
from .keys import partition_hashes
from .ledger import Manifest, ReducerLedger, chained_crc32
from .mapside import Cancelled, MapFailed, MapSide
from .reduceside import ReduceError, ReduceSide, SortedRun
from .retained import RetainedOutputs
from .runs import SpillError, chunk_ranges
from .security import ClusterKey, secure_connect
from .transport import LogOnce, make_socket

log = logging.getLogger(__name__)

#: Records per shuffle / result chunk: keeps every frame far below MAX_FRAME_BYTES.
CHUNK_RECORDS = 65_536
#: How often a reducer looks for committed outputs whose chunks stalled. A pair is asked
#: for again once no chunk of the job arrived for this long and its gap stayed the same
#: since the last check; repeats back off (x2 up to MISSING_BACKOFF_MAX_S), so a slow link
#: that still delivers is never flooded with re-send requests.
MISSING_CHECK_S = 0.5
MISSING_BACKOFF_MAX_S = 16.0
#: How long a shuffle send may wait for a reducer. A reducer that does not take a
#: chunk in time is skipped: the output is retained, and the reducer (or the node its
#: partition moves to) gets the chunks again when it reports them missing.
SHUFFLE_SEND_TIMEOUT_MS = 2_000
#: ... and how long once a send to that reducer timed out, until one goes through again.
STALLED_SEND_TIMEOUT_MS = 100
#: Retained map outputs an executor keeps in memory; older ones spill to the node's disk.
RETAINED_MEMORY_LIMIT = 256 << 20



@dataclass
class ExecutorJob:
    """One job as this executor sees it: map side and reduce side."""

    spec: p.ExecJob
    program: JobProgram | None
    broken: str = ""
    mapside: MapSide | None = None
    pending: list[list[int]] = field(default_factory=list)  # [task, attempt] not flushed
    cancelled: set[tuple[int, int]] = field(default_factory=set)  # (task, attempt)
    flushes: int = 0
    retained: RetainedOutputs = field(default_factory=lambda: RetainedOutputs(None))
    ledgers: dict[int, ReducerLedger] = field(default_factory=dict)
    #: (output, partition, absent seqs) -> (when to ask for them, times asked)
    missing_seen: dict[tuple[str, int, tuple[int, ...]], tuple[float, int]] = field(
        default_factory=dict)
    last_chunk_at: float = 0.0
    reducers: dict[int, ReduceSide] = field(default_factory=dict)
    num_tasks: int | None = None
    sorted_runs: dict[int, SortedRun] = field(default_factory=dict)
    completed: set[int] = field(default_factory=set)
    #: partitions this executor gave up (its disk refused a spill)
    given_up: set[int] = field(default_factory=set)


class Executor:
    """The executor's loop; ``run`` returns when told to stop or the daemon is gone."""

    def __init__(self, index: int, node_id: str, daemon_endpoint: str, key: ClusterKey,
                 parent_pid: int) -> None:
        self.index = index
        self.node_id = node_id
        self.daemon_endpoint = daemon_endpoint
        self.key = key
        self.parent_pid = parent_pid
        self.jobs: dict[str, ExecutorJob] = {}
        self.cache = ProgramCache()
        self.heap = JobHeap(freeze=True)  # the job's data is not scanned by the collector
        self.pushes: dict[str, zmq.Socket] = {}
        #: reducers that let a send time out: later sends to them do not wait (a dead node
        #: would otherwise cost every flush SHUFFLE_SEND_TIMEOUT_MS until it is declared lost)
        self.stalled: set[str] = set()
        self.drop = LogOnce(log)
        self.ctx: zmq.Context | None = None
        self.sock: zmq.Socket | None = None
        self.deferred: deque[list[Any]] = deque()  # read while a task ran, not handled yet

    # ---------------------------------------------------------------- I/O
    def _send(self, msg: p.Message, *payload: Any) -> None:
        assert self.sock is not None
        self.sock.send_multipart(p.encode(msg, *payload), copy=False)

    def _push(self, endpoint: str) -> zmq.Socket:
        sock = self.pushes.get(endpoint)
        if sock is None:
            assert self.ctx is not None
            sock = make_socket(self.ctx, zmq.PUSH, sndhwm=64)
            sock.sndtimeo = SHUFFLE_SEND_TIMEOUT_MS
            secure_connect(sock, endpoint, self.key)
            self.pushes[endpoint] = sock
        return sock

    def _close_unused_pushes(self) -> None:
        """Shuffle sockets to nodes no current job uses: close them (nodes come and go)."""
        used = {ep for job in self.jobs.values() for ep in job.spec.shuffle_endpoints.values()}
        for endpoint in [e for e in self.pushes if e not in used]:
            self.pushes.pop(endpoint).close(linger=0)
            self.stalled.discard(endpoint)

    def run(self) -> None:
        self.ctx = zmq.Context()
        try:
            self.sock = make_socket(self.ctx, zmq.DEALER, identity=f"e{self.index}".encode(),
                                    sndhwm=0, rcvhwm=0)
            self.sock.immediate = False
            secure_connect(self.sock, self.daemon_endpoint, self.key)
            self._send(p.ExecutorReady(index=self.index, pid=os.getpid()))
            poller = zmq.Poller()
            poller.register(self.sock, zmq.POLLIN)
            next_check = time.monotonic() + MISSING_CHECK_S
            while True:
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + MISSING_CHECK_S
                    if os.getppid() != self.parent_pid:
                        log.info("executor %d: daemon gone, exiting", self.index)
                        return
                    self.report_missing(time.monotonic())
                if self.deferred:
                    frames = self.deferred.popleft()
                elif not poller.poll(int(MISSING_CHECK_S * 1000)):
                    continue
                else:
                    frames = self.sock.recv_multipart(copy=False)
                try:
                    msg, payload = p.decode(frames)
                except ProtocolError as exc:
                    self.drop("daemon", str(exc))
                    continue
                if isinstance(msg, p.ExecStop):
                    return
                try:
                    self.handle(msg, payload)
                except Exception:  # a bug or a hostile member's message: never crash
                    log.exception("executor %d: failed to handle %s", self.index, msg.TYPE)
                if self.jobs:
                    self.heap.hold()
                    self.heap.settle()
                else:
                    self.heap.release()
        finally:
            for job in self.jobs.values():
                job.retained.close()
            for s in self.pushes.values():
                s.close(linger=0)
            if self.sock is not None:
                self.sock.close(linger=200)
            self.ctx.destroy(linger=0)

    # ---------------------------------------------------------------- dispatch
    def handle(self, msg: p.Message, payload: list[Any]) -> None:
        """One message from the daemon, through ``HANDLERS`` (type -> method)."""
        if isinstance(msg, p.ExecJob):
            self.start_job(msg)
            return
        handler = HANDLERS.get(type(msg))
        if handler is None:
            self.drop("daemon", f"unexpected {msg.TYPE}")
            return
        job = self.jobs.get(getattr(msg, "job_id", ""))
        if job is None:
            if isinstance(msg, p.ExecJobEnd):  # a job this executor never ran
                self._close_unused_pushes()
            else:
                self.drop("daemon", f"{msg.TYPE} for unknown job")
            return
        handler(self, job, msg, payload)

    def on_cancel(self, job: ExecutorJob, msg: p.CancelTask, payload: list[Any]) -> None:
        job.cancelled.add((msg.task_id, msg.attempt))
        if [msg.task_id, msg.attempt] in job.pending:
            self._discard_batch(job, None)

    def on_drop_output(self, job: ExecutorJob, msg: p.DropOutput, payload: list[Any]) -> None:
        for ledger in job.ledgers.values():
            ledger.drop_output(msg.output_id)

    def on_resend(self, job: ExecutorJob, msg: p.ResendChunks, payload: list[Any]) -> None:
        self.resend(job, msg)

    def on_flush(self, job: ExecutorJob, msg: p.Flush, payload: list[Any]) -> None:
        self.safe_flush(job)

    def on_input_complete(self, job: ExecutorJob, msg: p.InputComplete,
                          payload: list[Any]) -> None:
        job.num_tasks = msg.num_tasks
        self.check_complete(job)

    def on_fetch(self, job: ExecutorJob, msg: p.FetchPartition, payload: list[Any]) -> None:
        self.serve_fetch(job, msg)

    def on_job_end(self, job: ExecutorJob, msg: p.ExecJobEnd, payload: list[Any]) -> None:
        ended = self.jobs.pop(msg.job_id)
        for part in list(ended.reducers) + list(ended.sorted_runs):
            self._drop_partition(ended, part)
        ended.retained.close()
        if ended.spec.spill_dir:
            shutil.rmtree(os.path.join(ended.spec.spill_dir, "reduce"), ignore_errors=True)
        if not any(j.spec.sha256 == ended.spec.sha256 for j in self.jobs.values()):
            self.cache.forget(ended.spec.sha256)
        self._close_unused_pushes()

    def start_job(self, msg: p.ExecJob) -> None:
        """A new job, or an update of a known one (partitions moved: new epoch)."""
        job = self.jobs.get(msg.job_id)
        if job is None:
            program: JobProgram | None = None
            broken = ""
            try:
                if msg.num_partitions < 1:
                    raise ValueError("a job needs at least one partition")
                program = self.cache.load(JobSpec(msg.job_name, msg.source, msg.sha256,
                                                  msg.filename, dict(msg.modules)),
                                          dict(msg.params))
            except JobLoadError as exc:  # every task fails with this, at once
                broken = str(exc)
                if exc.missing_module:
                    broken = (f"module {exc.missing_module!r} is not installed on this node "
                              f"({exc})")
            except Exception as exc:  # a member's malformed job, or a pymr bug
                broken = f"{type(exc).__name__}: {exc}"
            retain = msg.retain_memory if msg.retain_memory >= 0 else RETAINED_MEMORY_LIMIT
            if msg.memory:
                retain = min(retain, msg.memory // 4)
            job = ExecutorJob(spec=msg, program=program, broken=broken,
                              retained=RetainedOutputs(msg.spill_dir or None, retain))
            self.jobs[msg.job_id] = job
        moved_away = [x for x in job.ledgers if x not in msg.partitions] \
            if msg.epoch > job.spec.epoch else []  # a replacement's map-only copy drops none
        job.spec = msg
        for part in moved_away:
            # The partition moved away (its reducer was slow, or this node was thought
            # lost): its merge here is moot, and chunks still queued for it are dropped.
            job.ledgers.pop(part, None)
            self._drop_partition(job, part)
            job.completed.discard(part)
        for part in msg.partitions:
            if part not in job.ledgers and job.program is not None:
                job.ledgers[part] = ReducerLedger([part])
                job.reducers[part] = ReduceSide(
                    job.program, os.path.join(msg.spill_dir, "reduce") if msg.spill_dir
                    else "", f"p{part}.e{msg.epoch}")
        if msg.num_tasks >= 0:
            job.num_tasks = msg.num_tasks
        self.check_complete(job)

    # ---------------------------------------------------------------- map side
    def run_task(self, job: ExecutorJob, task: p.MapTask, payload: list[Any]) -> None:
        if (task.task_id, task.attempt) in job.cancelled:
            self._report_lost(job, task.task_id, task.attempt, p.CANCELLED,
                              "cancelled before it started: another attempt won")
            return
        try:
            if job.program is None:
                self._send(p.TaskFailedReport(
                    job_id=job.spec.job_id, node_id=self.node_id, task_id=task.task_id,
                    attempt=task.attempt, exc_type="JobLoadError",
                    message=job.broken, stage="load",
                    fatal=True))
                return
            if task.alone and job.pending:
                self.flush(job)
            data = self._read_split(task, payload)
            if job.mapside is None:
                job.mapside = MapSide(job.program)
            job.mapside.add_split(data, file=task.file, first_line=task.first_line,
                                  check=lambda: self._cancel_arrived(job, task))
            full = job.mapside.size() >= job.spec.flush_key_limit or (
                job.spec.memory and job.mapside.approx_bytes() >= job.spec.memory // 4)
        except Cancelled:
            self._discard_batch(job, task)
            return
        except MapFailed as exc:
            self._task_failed(job, task.task_id, task.attempt, exc.exc_type, exc.message,
                              exc.full_tb or traceback.format_exc(), user_traceback=exc.user_tb,
                              record=exc.record,
                              stage=exc.stage, fatal=exc.fatal)
            return
        except Exception as exc:  # reading the split failed, or a pymr bug: report
            self._task_failed(job, task.task_id, task.attempt, type(exc).__name__, str(exc),
                              traceback.format_exc())
            return
        job.pending.append([task.task_id, task.attempt])
        self._send(p.TaskExecuted(job_id=job.spec.job_id, node_id=self.node_id,
                                  task_id=task.task_id, attempt=task.attempt,
                                  nbytes=len(data)))
        if task.alone or full:
            self.safe_flush(job)

    def _task_failed(self, job: ExecutorJob, task_id: int, attempt: int, exc_type: str,
                     message: str, tb: str, **details: Any) -> None:
        """Report a failed task; the tasks of the batch being built go with it."""
        lost = job.pending
        job.pending = []
        job.mapside = None
        self._send(p.TaskFailedReport(
            job_id=job.spec.job_id, node_id=self.node_id, task_id=task_id, attempt=attempt,
            exc_type=exc_type, message=message, traceback=tb, **details))
        for t, a in lost:  # their combined output was discarded with the batch
            if (t, a) != (task_id, attempt):
                self._report_lost(job, t, a, p.LOST, "batch discarded after another task failed")

    def _cancel_arrived(self, job: ExecutorJob, task: p.MapTask) -> bool:
        """Between pieces of a task: read what the daemon sent; apply cancels at once, keep
        the rest for the main loop. True if the batch being built holds a loser."""
        assert self.sock is not None
        while self.sock.poll(0):
            frames = self.sock.recv_multipart(copy=False)
            try:
                msg = p.decode_header(frames[0].buffer)
            except ProtocolError:
                msg = None
            if isinstance(msg, p.CancelTask) and msg.job_id in self.jobs:
                self.jobs[msg.job_id].cancelled.add((msg.task_id, msg.attempt))
            else:
                self.deferred.append(frames)
        if not job.cancelled:
            return False
        return (task.task_id, task.attempt) in job.cancelled or any(
            (t, a) in job.cancelled for t, a in job.pending)

    def _discard_batch(self, job: ExecutorJob, running: p.MapTask | None) -> None:
        """A loser is in the batch being combined: its counts cannot be taken out, so the
        batch goes; its other tasks are reported lost (they run again, not as a failure)."""
        tasks = [(t, a) for t, a in job.pending]
        if running is not None:
            tasks.append((running.task_id, running.attempt))
        job.pending = []
        job.mapside = None
        for t, a in tasks:
            if (t, a) in job.cancelled:
                self._report_lost(job, t, a, p.CANCELLED, "cancelled: another attempt won")
            else:
                self._report_lost(job, t, a, p.LOST,
                                  "batch discarded: it held an attempt that was cancelled")

    def _report_lost(self, job: ExecutorJob, task_id: int, attempt: int, kind: str,
                     why: str) -> None:
        self._send(p.TaskFailedReport(job_id=job.spec.job_id, node_id=self.node_id,
                                      task_id=task_id, attempt=attempt, exc_type=kind,
                                      message=why))

    @staticmethod
    def _read_split(task: p.MapTask, payload: list[Any]) -> Any:
        if not task.path:
            if not payload:
                raise ValueError("map task carries no split data")
            frame = payload[0]
            return frame.buffer if hasattr(frame, "buffer") else frame
        buf = bytearray(task.length)
        with open(task.path, "rb") as f:
            f.seek(task.offset)
            n = f.readinto(buf)
        if n != task.length:
            raise OSError(f"input changed while reading: {task.path} is shorter than planned")
        return buf

    def safe_flush(self, job: ExecutorJob) -> None:
        """Flush; if that fails, report its tasks failed so the master never waits for them."""
        tasks = list(job.pending)
        try:
            self.flush(job)
        except MapFailed as exc:  # the job's combine raised: the batch's first task carries it
            if not tasks:
                return
            detail = exc.message if not exc.key or exc.key in exc.message else \
                f"{exc.message} (combining key {exc.key})"
            self._task_failed(job, tasks[0][0], tasks[0][1], exc.exc_type, detail,
                              exc.full_tb or traceback.format_exc(),
                              user_traceback=exc.user_tb, stage=exc.stage,
                              fatal=exc.fatal)
        except Exception as exc:
            job.pending = []
            job.mapside = None
            log.exception("executor %d: flush failed", self.index)
            for t, a in tasks:
                self._send(p.TaskFailedReport(
                    job_id=job.spec.job_id, node_id=self.node_id, task_id=t, attempt=a,
                    exc_type=type(exc).__name__, message=f"flushing the output failed: {exc}",
                    traceback=traceback.format_exc()))

    def flush(self, job: ExecutorJob) -> None:
        """Send the combined output of the pending tasks as one map output."""
        if not job.pending:
            return
        records, counters = job.mapside.finish() if job.mapside is not None else ({}, {})
        job.mapside = None
        spec = job.spec
        parts = split_by_partition(records, spec.num_partitions)
        job.flushes += 1
        output_id = p.make_output_id(self.node_id, self.index, os.getpid(), job.flushes)
        manifest: dict[int, list[int]] = {}
        retained: dict[int, list[bytes]] = {}
        for part, (keys, values) in enumerate(parts):
            payloads = [p.pack_chunk(keys[a:b], values[a:b])
                        for a, b in chunk_ranges(values, CHUNK_RECORDS)]
            manifest[part] = [len(payloads), len(keys), chained_crc32(payloads)]
            retained[part] = payloads
        tasks = job.pending
        job.pending = []
        for part, payloads in retained.items():
            if not self._send_chunks(job, output_id, part, spec.shuffle_endpoints[part],
                                     list(enumerate(payloads)), spec.epoch):
                log.warning("reducer of partition %d did not take output %s; it will be "
                            "re-sent on request", part, output_id)
        job.retained.add(output_id, retained)
        self._send(p.OutputDone(job_id=spec.job_id, node_id=self.node_id, output_id=output_id,
                                tasks=tasks, manifest=manifest, counters=counters,
                                epoch=spec.epoch))

    # ---------------------------------------------------------------- reduce side
    def _send_chunks(self, job: ExecutorJob, output_id: str, part: int, endpoint: str,
                     chunks: list[tuple[int, bytes]], epoch: int) -> bool:
        """Push numbered chunks to a reducer; False if it did not take them in time."""
        sock = self._push(endpoint)
        sock.sndtimeo = (STALLED_SEND_TIMEOUT_MS if endpoint in self.stalled
                         else SHUFFLE_SEND_TIMEOUT_MS)
        try:
            for seq, payload in chunks:
                sock.send_multipart(p.encode(p.ShuffleChunk(
                    job_id=job.spec.job_id, output_id=output_id, partition=part, seq=seq,
                    epoch=epoch), payload), copy=False)
        except zmq.Again:
            self.stalled.add(endpoint)
            return False
        self.stalled.discard(endpoint)
        return True

    def resend(self, job: ExecutorJob, msg: p.ResendChunks) -> None:
        """Send a retained output's chunks again (a gap, or the partition moved)."""
        try:
            payloads = job.retained.chunks(msg.output_id, msg.partition)
        except OSError as exc:  # a spilled file is gone or unreadable: its tasks run again
            log.warning("retained output %s unreadable: %s", msg.output_id, exc)
            payloads = None
        if payloads is None:
            self._send(p.OutputLost(job_id=job.spec.job_id, node_id=self.node_id,
                                    output_id=msg.output_id))
            return
        wanted = [seq for seq in (msg.seqs or range(len(payloads)))
                  if 0 <= seq < len(payloads)]
        if not self._send_chunks(job, msg.output_id, msg.partition, msg.endpoint,
                                 [(seq, payloads[seq]) for seq in wanted], msg.epoch):
            log.warning("resend of %s to %s timed out", msg.output_id, msg.endpoint)

    def on_chunk(self, job: ExecutorJob, msg: p.ShuffleChunk, payload: list[Any]) -> None:
        ledger = job.ledgers.get(msg.partition)
        if ledger is None or not payload:
            if msg.partition not in job.given_up:  # chunks still in flight: expected
                self.drop("shuffle", "chunk for a partition this executor does not reduce")
            return
        frame = payload[0]
        data = frame.bytes if hasattr(frame, "bytes") else bytes(frame)
        job.last_chunk_at = time.monotonic()
        ledger.stage(msg.output_id, msg.partition, msg.seq, data)
        self.merge_ready(job, ledger)

    def on_commit(self, job: ExecutorJob, msg: p.Commit, payload: list[Any]) -> None:
        touched: dict[int, ReducerLedger] = {}
        for output_id, tasks, manifest in msg.entries():
            for part, entry in manifest.items():
                ledger = job.ledgers.get(part)
                if ledger is None:
                    continue
                if len(entry) != 3:
                    self.drop("daemon", "commit manifest entry is not [chunks, records, crc]")
                    continue
                chunks, records, checksum = entry
                ledger.commit(output_id, tasks, part, Manifest(chunks, records, checksum))
                touched[part] = ledger
        for ledger in touched.values():
            self.merge_ready(job, ledger)

    def report_missing(self, now: float) -> None:
        """Committed pairs whose chunks stalled while nothing arrived: ask for them again."""
        for job in self.jobs.values():
            if now - job.last_chunk_at < MISSING_CHECK_S:
                continue  # chunks are still arriving: the gap may be in flight
            seen: dict[tuple[str, int, tuple[int, ...]], tuple[float, int]] = {}
            for ledger in job.ledgers.values():
                for output_id, part, seqs in ledger.missing():
                    key = (output_id, part, tuple(seqs))
                    due, asked = job.missing_seen.get(key, (now + MISSING_CHECK_S, 0))
                    if now >= due:
                        self._send(p.ChunksMissing(job_id=job.spec.job_id,
                                                   node_id=self.node_id, output_id=output_id,
                                                   partition=part, seqs=list(seqs)))
                        asked += 1
                        due = now + min(MISSING_BACKOFF_MAX_S, MISSING_CHECK_S * 2 ** asked)
                    seen[key] = (due, asked)
            job.missing_seen = seen

    def merge_ready(self, job: ExecutorJob, ledger: ReducerLedger) -> None:
        ready = ledger.take_ready()
        for r in ready:
            reducer = job.reducers.get(r.partition)
            if reducer is None:
                continue
            try:
                for pl in r.payloads:
                    reducer.add_chunk(*p.unpack_chunk(pl))
            except ReduceError as exc:  # the job's combine raised on the reduce side
                self._reduce_failed(job, r.partition, exc.key, exc.exc_type, exc.message,
                                    exc.full_tb, exc.user_tb)
                self._drop_partition(job, r.partition)
                job.completed.add(r.partition)
        if ready:
            if job.spec.memory:
                self._keep_reduce_budget(job)
            self.check_complete(job)

    def _keep_reduce_budget(self, job: ExecutorJob) -> None:
        """Spill the largest partitions until the merged data fits half the share."""
        share = job.spec.memory // 2
        sizes = {part: r.approx_bytes() for part, r in job.reducers.items()}
        total = sum(sizes.values())
        for part in sorted(sizes, key=sizes.__getitem__, reverse=True):
            if total <= share:
                return
            reducer = job.reducers[part]
            try:
                written = reducer.spill(CHUNK_RECORDS)
            except SpillError as exc:
                self._partition_lost(job, part, str(exc))
                continue
            total -= sizes[part]
            log.debug("executor %d: partition %d spilled %d bytes", self.index, part, written)

    def _reduce_failed(self, job: ExecutorJob, part: int, key: str, exc_type: str,
                       message: str, tb: str, user_tb: str) -> None:
        self._send(p.ReduceFailed(job_id=job.spec.job_id, node_id=self.node_id, partition=part,
                                  key=key, exc_type=exc_type, message=message,
                                  traceback=tb or traceback.format_exc(),
                                  user_traceback=user_tb))

    def _partition_lost(self, job: ExecutorJob, part: int, reason: str) -> None:
        """This executor cannot hold the partition (its disk refused a spill): free it and
        tell the master, which moves it to another node."""
        self._drop_partition(job, part)
        job.ledgers.pop(part, None)
        job.given_up.add(part)
        self._send(p.PartitionLost(job_id=job.spec.job_id, node_id=self.node_id,
                                   partition=part, reason=reason, disk=True))

    @staticmethod
    def _drop_partition(job: ExecutorJob, part: int) -> None:
        reducer = job.reducers.pop(part, None)
        if reducer is not None:
            reducer.discard()
        run = job.sorted_runs.pop(part, None)
        if run is not None:
            run.remove()

    def check_complete(self, job: ExecutorJob) -> None:
        if job.num_tasks is None:
            return
        for part, ledger in job.ledgers.items():
            if part in job.completed:
                continue
            if len(ledger.merged_tasks(part)) < job.num_tasks:
                continue
            job.completed.add(part)
            reducer = job.reducers.pop(part)
            try:
                run = reducer.finish(job.spec.memory // 2, CHUNK_RECORDS)
            except SpillError as exc:
                reducer.discard()
                job.completed.discard(part)
                self._partition_lost(job, part, str(exc))
                continue
            except ReduceError as exc:
                self._reduce_failed(job, part, exc.key, exc.exc_type, exc.message,
                                    exc.full_tb, exc.user_tb)
                continue
            except Exception as exc:  # a pymr bug or a value msgpack refuses: never a hang
                self._reduce_failed(job, part, "", type(exc).__name__, str(exc),
                                    traceback.format_exc(), "")
                continue
            job.sorted_runs[part] = run
            self._send(p.PartitionComplete(
                job_id=job.spec.job_id, node_id=self.node_id, partition=part,
                records=run.count, chunks=run.num_chunks(CHUNK_RECORDS),
                counters=run.counters, key_types=sorted(run.key_types),
                value_types=sorted(run.value_types), spilled_bytes=reducer.spilled_bytes,
                spilled_runs=reducer.spilled_runs))

    def serve_fetch(self, job: ExecutorJob, msg: p.FetchPartition) -> None:
        run = job.sorted_runs.get(msg.partition)
        if run is None:
            self.drop("master", "fetch of a partition that is not complete")
            return
        nchunks = run.num_chunks(CHUNK_RECORDS)
        for seq in range(msg.start, min(msg.start + msg.count, nchunks)):
            try:
                # keys and values as two arrays: packed and unpacked without a tuple each
                payload = run.line_chunk(seq, CHUNK_RECORDS) if msg.lines \
                    else run.chunk(seq, CHUNK_RECORDS)
            except SpillError as exc:
                self._partition_lost(job, msg.partition, str(exc))
                return
            except Exception as exc:  # a value msgpack refuses: fail the job, never hang
                self._reduce_failed(job, msg.partition, "", type(exc).__name__, str(exc),
                                    traceback.format_exc(), "")
                return
            self._send(p.PartitionData(job_id=job.spec.job_id, partition=msg.partition,
                                       seq=seq, last=seq == nchunks - 1), payload)


#: What the executor does with each message the daemon routes to it (besides ``ExecJob``).
HANDLERS: dict[type[p.Message], Callable[[Executor, ExecutorJob, Any, list[Any]], None]] = {
    p.MapTask: Executor.run_task,
    p.ShuffleChunk: Executor.on_chunk,
    p.Commit: Executor.on_commit,
    p.CancelTask: Executor.on_cancel,
    p.DropOutput: Executor.on_drop_output,
    p.ResendChunks: Executor.on_resend,
    p.Flush: Executor.on_flush,
    p.InputComplete: Executor.on_input_complete,
    p.FetchPartition: Executor.on_fetch,
    p.ExecJobEnd: Executor.on_job_end,
}


def split_by_partition(records: dict[Any, Any], num_partitions: int
                       ) -> list[tuple[list[Any], list[Any]]]:
    """A map output's records by reduce partition (``pymr.keys.partition_hashes``), as
    ``(keys, values)`` per partition."""
    keys = list(records)
    values = list(records.values())
    if num_partitions == 1:
        return [(keys, values)]
    parts: list[tuple[list[Any], list[Any]]] = [([], []) for _ in range(num_partitions)]
    add_key = [k.append for k, _ in parts]
    add_value = [v.append for _, v in parts]
    for k, v, h in zip(keys, values, partition_hashes(keys), strict=True):
        i = h % num_partitions
        add_key[i](k)
        add_value[i](v)
    return parts


def executor_main(index: int, node_id: str, daemon_endpoint: str, public: bytes,
                  secret: bytes, parent_pid: int, nice: int, log_level: int) -> None:
    """Entry point of the spawned executor process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # (a closed terminal included)
    logging.basicConfig(level=log_level, format="%(levelname)s executor: %(message)s")
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    started = time.monotonic()
    Executor(index, node_id, daemon_endpoint, ClusterKey(public, secret), parent_pid).run()
    log.debug("executor %d ran %.1f s", index, time.monotonic() - started)
