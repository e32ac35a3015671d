"""An executor's map side: batches of map tasks, flushes, the shuffle and re-sends.

Tasks of a job are mapped into one ``mapside.MapSide`` (a *batch*) until a flush, which
cuts the records by partition, packs them into chunks, pushes them to the reducers and
keeps them (``retained.py``) for re-sends. A cancelled attempt in the batch discards it.

No sockets here: reports to the daemon go through ``send(msg, *payload)``, chunks to the
reducers through ``push_chunks`` (``shufflepush.ShufflePushes.send_chunks`` in the
executor), and ``drain`` lets the executor read the daemon's socket between pieces of a
task, so a cancel that arrives meanwhile is applied (``mark_cancelled``) at once. Tests
pass lists and plain functions.

Hot path: ``MapSide.add_split`` and the loops of ``flush`` are per pair / per chunk; what
this class adds is per task, per partition or per chunk only.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..engine.ledger import chained_crc32
from ..engine.mapside import Cancelled, MapFailed, MapSide
from ..engine.retained import RetainedOutputs
from ..engine.runs import chunk_ranges
from ..jobs.program import JobProgram
from ..wire import protocol as p
from ..wire.keys import partition_hashes
from .shufflepush import CHUNK_RECORDS

log = logging.getLogger(__name__)

#: Retained map outputs an executor keeps in memory; older ones spill to the node's disk.
RETAINED_MEMORY_LIMIT = 256 << 20

#: ``push_chunks(job_id, output_id, partition, endpoint, [(seq, chunk)], epoch) -> taken``
PushChunks = Callable[[str, str, int, str, list[tuple[int, bytes]], int], bool]
#: ``send(msg, *payload)``: a report to the daemon
Send = Callable[..., None]


@dataclass
class MapJob:
    """One job's map side in this executor: the batch being built and the kept outputs."""

    spec: p.ExecJob
    program: JobProgram | None
    broken: str = ""  # why the program did not load: every task fails with it
    mapside: MapSide | None = None
    pending: list[list[int]] = field(default_factory=list)  # [task, attempt] not flushed
    cancelled: set[tuple[int, int]] = field(default_factory=set)  # (task, attempt)
    flushes: int = 0
    retained: RetainedOutputs = field(default_factory=lambda: RetainedOutputs(None))


class MapRunner:
    """The map tasks of every job of one executor."""

    def __init__(self, node_id: str, index: int, send: Send, push_chunks: PushChunks,
                 drain: Callable[[], None] = lambda: None) -> None:
        self.node_id = node_id
        self.index = index
        self.send = send
        self.push_chunks = push_chunks
        self.drain = drain
        self.jobs: dict[str, MapJob] = {}

    # ---------------------------------------------------------------- jobs
    def start_job(self, spec: p.ExecJob, program: JobProgram | None, broken: str) -> MapJob:
        """A new job, or a new spec of a known one (a new epoch: partitions moved)."""
        job = self.jobs.get(spec.job_id)
        if job is None:
            retain = spec.retain_memory if spec.retain_memory >= 0 else RETAINED_MEMORY_LIMIT
            if spec.memory:
                retain = min(retain, spec.memory // 4)
            job = MapJob(spec=spec, program=program, broken=broken,
                         retained=RetainedOutputs(spec.spill_dir or None, retain))
            self.jobs[spec.job_id] = job
        job.spec = spec
        return job

    def end_job(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            job.retained.close()

    def close(self) -> None:
        for job in self.jobs.values():
            job.retained.close()

    def shuffle_endpoints(self) -> set[str]:
        """Every reducer endpoint a current job may push to."""
        return {ep for job in self.jobs.values() for ep in job.spec.shuffle_endpoints.values()}

    def mark_cancelled(self, job_id: str, task_id: int, attempt: int) -> None:
        """Remember a cancel read while a task ran; the running batch checks it."""
        job = self.jobs.get(job_id)
        if job is not None:
            job.cancelled.add((task_id, attempt))

    # ---------------------------------------------------------------- messages
    def cancel(self, msg: p.CancelTask) -> None:
        job = self.jobs[msg.job_id]
        job.cancelled.add((msg.task_id, msg.attempt))
        if [msg.task_id, msg.attempt] in job.pending:
            self._discard_batch(job, None)

    def run_task(self, task: p.MapTask, payload: list[Any]) -> None:
        job = self.jobs[task.job_id]
        if (task.task_id, task.attempt) in job.cancelled:
            self._report_lost(job, task.task_id, task.attempt, p.CANCELLED,
                              "cancelled before it started: another attempt won")
            return
        try:
            if job.program is None:
                self.send(p.TaskFailedReport(
                    job_id=job.spec.job_id, node_id=self.node_id, task_id=task.task_id,
                    attempt=task.attempt, exc_type="JobLoadError",
                    message=job.broken, stage="load",
                    fatal=True))
                return
            if task.alone and job.pending:
                self.flush(job)
            data = read_split(task, payload)
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
        self.send(p.TaskExecuted(job_id=job.spec.job_id, node_id=self.node_id,
                                 task_id=task.task_id, attempt=task.attempt,
                                 nbytes=len(data)))
        if task.alone or full:
            self.safe_flush(job)

    def on_flush(self, msg: p.Flush) -> None:
        self.safe_flush(self.jobs[msg.job_id])

    def resend(self, msg: p.ResendChunks) -> None:
        """Send a retained output's chunks again (a gap, or the partition moved)."""
        job = self.jobs[msg.job_id]
        try:
            payloads = job.retained.chunks(msg.output_id, msg.partition)
        except OSError as exc:  # a spilled file is gone or unreadable: its tasks run again
            log.warning("retained output %s unreadable: %s", msg.output_id, exc)
            payloads = None
        if payloads is None:
            self.send(p.OutputLost(job_id=job.spec.job_id, node_id=self.node_id,
                                   output_id=msg.output_id))
            return
        wanted = [seq for seq in (msg.seqs or range(len(payloads)))
                  if 0 <= seq < len(payloads)]
        if not self.push_chunks(job.spec.job_id, msg.output_id, msg.partition, msg.endpoint,
                                [(seq, payloads[seq]) for seq in wanted], msg.epoch):
            log.warning("resend of %s to %s timed out", msg.output_id, msg.endpoint)

    # ---------------------------------------------------------------- batches
    def _task_failed(self, job: MapJob, task_id: int, attempt: int, exc_type: str,
                     message: str, tb: str, **details: Any) -> None:
        """Report a failed task; the tasks of the batch being built go with it."""
        lost = job.pending
        job.pending = []
        job.mapside = None
        self.send(p.TaskFailedReport(
            job_id=job.spec.job_id, node_id=self.node_id, task_id=task_id, attempt=attempt,
            exc_type=exc_type, message=message, traceback=tb, **details))
        for t, a in lost:  # their combined output was discarded with the batch
            if (t, a) != (task_id, attempt):
                self._report_lost(job, t, a, p.LOST, "batch discarded after another task failed")

    def _cancel_arrived(self, job: MapJob, task: p.MapTask) -> bool:
        """Between pieces of a task: let the executor read the daemon's socket (cancels
        apply at once). True if the batch being built holds a loser."""
        self.drain()
        if not job.cancelled:
            return False
        return (task.task_id, task.attempt) in job.cancelled or any(
            (t, a) in job.cancelled for t, a in job.pending)

    def _discard_batch(self, job: MapJob, running: p.MapTask | None) -> None:
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

    def _report_lost(self, job: MapJob, task_id: int, attempt: int, kind: str,
                     why: str) -> None:
        self.send(p.TaskFailedReport(job_id=job.spec.job_id, node_id=self.node_id,
                                     task_id=task_id, attempt=attempt, exc_type=kind,
                                     message=why))

    def safe_flush(self, job: MapJob) -> None:
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
                self.send(p.TaskFailedReport(
                    job_id=job.spec.job_id, node_id=self.node_id, task_id=t, attempt=a,
                    exc_type=type(exc).__name__, message=f"flushing the output failed: {exc}",
                    traceback=traceback.format_exc()))

    def flush(self, job: MapJob) -> None:
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
            if not self.push_chunks(spec.job_id, output_id, part, spec.shuffle_endpoints[part],
                                    list(enumerate(payloads)), spec.epoch):
                log.warning("reducer of partition %d did not take output %s; it will be "
                            "re-sent on request", part, output_id)
        job.retained.add(output_id, retained)
        self.send(p.OutputDone(job_id=spec.job_id, node_id=self.node_id, output_id=output_id,
                               tasks=tasks, manifest=manifest, counters=counters,
                               epoch=spec.epoch))


def read_split(task: p.MapTask, payload: list[Any]) -> Any:
    """A task's split: its payload frame, or the byte range it names in a shared file."""
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


def split_by_partition(records: dict[Any, Any], num_partitions: int
                       ) -> list[tuple[list[Any], list[Any]]]:
    """A map output's records by reduce partition (``pymr.wire.keys.partition_hashes``), as
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
