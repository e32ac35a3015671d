"""An executor's reduce side: the partitions it reduces, exactly once, and serving them.

Shuffle chunks and commits go through each partition's ``ledger.ReducerLedger``, which
hands every committed (output, partition) pair to ``reduceside.ReduceSide`` once. When
every task is merged the partition is finished into a sorted run, reported complete and
served to the master chunk by chunk. Under a memory budget the largest partitions spill.
Stalled pairs are asked for again (``report_missing``), backing off.

No sockets here: what goes to the daemon goes through ``send(msg, *payload)``, dropped
messages through ``drop(who, why)``; the time comes from ``clock`` or the caller. Tests
drive it with explicit messages and times.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..engine.ledger import Manifest, ReducerLedger
from ..engine.reduceside import ReduceError, ReduceSide, SortedRun
from ..engine.runs import SpillError
from ..jobs.program import JobProgram
from ..wire import protocol as p
from .shufflepush import CHUNK_RECORDS

log = logging.getLogger(__name__)

#: How often a reducer looks for committed outputs whose chunks stalled. A pair is asked
#: for again once no chunk of the job arrived for this long and its gap stayed the same
#: since the last check; repeats back off (x2 up to MISSING_BACKOFF_MAX_S), so a slow link
#: that still delivers is never flooded with re-send requests.
MISSING_CHECK_S = 0.5
MISSING_BACKOFF_MAX_S = 16.0

#: ``send(msg, *payload)``: a report to the daemon
Send = Callable[..., None]


@dataclass
class ReduceJob:
    """One job's partitions in this executor."""

    spec: p.ExecJob
    program: JobProgram | None
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


class ReduceHost:
    """The reduce partitions of every job of one executor."""

    def __init__(self, node_id: str, index: int, send: Send,
                 drop: Callable[[str, str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node_id = node_id
        self.index = index
        self.send = send
        self.drop = drop
        self.clock = clock
        self.jobs: dict[str, ReduceJob] = {}

    # ---------------------------------------------------------------- jobs
    def start_job(self, spec: p.ExecJob, program: JobProgram | None) -> ReduceJob:
        """A new job, or a new spec of a known one: partitions that moved away go."""
        job = self.jobs.get(spec.job_id)
        if job is None:
            job = ReduceJob(spec=spec, program=program)
            self.jobs[spec.job_id] = job
        moved_away = [x for x in job.ledgers if x not in spec.partitions] \
            if spec.epoch > job.spec.epoch else []  # a replacement's map-only copy drops none
        job.spec = spec
        for part in moved_away:
            # The partition moved away (its reducer was slow, or this node was thought
            # lost): its merge here is moot, and chunks still queued for it are dropped.
            job.ledgers.pop(part, None)
            self._drop_partition(job, part)
            job.completed.discard(part)
        for part in spec.partitions:
            if part not in job.ledgers and job.program is not None:
                job.ledgers[part] = ReducerLedger([part])
                job.reducers[part] = ReduceSide(
                    job.program, os.path.join(spec.spill_dir, "reduce") if spec.spill_dir
                    else "", f"p{part}.e{spec.epoch}")
        if spec.num_tasks >= 0:
            job.num_tasks = spec.num_tasks
        self.check_complete(job)
        return job

    def end_job(self, job_id: str) -> None:
        """Free the job's partitions and its spill files."""
        ended = self.jobs.pop(job_id, None)
        if ended is None:
            return
        for part in list(ended.reducers) + list(ended.sorted_runs):
            self._drop_partition(ended, part)
        if ended.spec.spill_dir:
            shutil.rmtree(os.path.join(ended.spec.spill_dir, "reduce"), ignore_errors=True)

    # ---------------------------------------------------------------- messages
    def on_chunk(self, msg: p.ShuffleChunk, payload: list[Any]) -> None:
        job = self.jobs[msg.job_id]
        ledger = job.ledgers.get(msg.partition)
        if ledger is None or not payload:
            if msg.partition not in job.given_up:  # chunks still in flight: expected
                self.drop("shuffle", "chunk for a partition this executor does not reduce")
            return
        frame = payload[0]
        data = frame.bytes if hasattr(frame, "bytes") else bytes(frame)
        job.last_chunk_at = self.clock()
        ledger.stage(msg.output_id, msg.partition, msg.seq, data)
        self.merge_ready(job, ledger)

    def on_commit(self, msg: p.Commit) -> None:
        job = self.jobs[msg.job_id]
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

    def drop_output(self, msg: p.DropOutput) -> None:
        for ledger in self.jobs[msg.job_id].ledgers.values():
            ledger.drop_output(msg.output_id)

    def input_complete(self, msg: p.InputComplete) -> None:
        job = self.jobs[msg.job_id]
        job.num_tasks = msg.num_tasks
        self.check_complete(job)

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
                        self.send(p.ChunksMissing(job_id=job.spec.job_id,
                                                  node_id=self.node_id, output_id=output_id,
                                                  partition=part, seqs=list(seqs)))
                        asked += 1
                        due = now + min(MISSING_BACKOFF_MAX_S, MISSING_CHECK_S * 2 ** asked)
                    seen[key] = (due, asked)
            job.missing_seen = seen

    def serve_fetch(self, msg: p.FetchPartition) -> None:
        """The asked window of a finished partition's chunks (records, or TSV lines)."""
        job = self.jobs[msg.job_id]
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
            self.send(p.PartitionData(job_id=job.spec.job_id, partition=msg.partition,
                                      seq=seq, last=seq == nchunks - 1), payload)

    # ---------------------------------------------------------------- merging
    def merge_ready(self, job: ReduceJob, ledger: ReducerLedger) -> None:
        """Fold the pairs the ledger releases into their partitions, once each."""
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

    def _keep_reduce_budget(self, job: ReduceJob) -> None:
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

    def check_complete(self, job: ReduceJob) -> None:
        """Finish every partition into which all the job's tasks are merged."""
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
            self.send(p.PartitionComplete(
                job_id=job.spec.job_id, node_id=self.node_id, partition=part,
                records=run.count, chunks=run.num_chunks(CHUNK_RECORDS),
                counters=run.counters, key_types=sorted(run.key_types),
                value_types=sorted(run.value_types), spilled_bytes=reducer.spilled_bytes,
                spilled_runs=reducer.spilled_runs))

    # ---------------------------------------------------------------- failures
    def _reduce_failed(self, job: ReduceJob, part: int, key: str, exc_type: str,
                       message: str, tb: str, user_tb: str) -> None:
        self.send(p.ReduceFailed(job_id=job.spec.job_id, node_id=self.node_id, partition=part,
                                 key=key, exc_type=exc_type, message=message,
                                 traceback=tb or traceback.format_exc(),
                                 user_traceback=user_tb))

    def _partition_lost(self, job: ReduceJob, part: int, reason: str) -> None:
        """This executor cannot hold the partition (its disk refused a spill): free it and
        tell the master, which moves it to another node."""
        self._drop_partition(job, part)
        job.ledgers.pop(part, None)
        job.given_up.add(part)
        self.send(p.PartitionLost(job_id=job.spec.job_id, node_id=self.node_id,
                                  partition=part, reason=reason, disk=True))

    @staticmethod
    def _drop_partition(job: ReduceJob, part: int) -> None:
        reducer = job.reducers.pop(part, None)
        if reducer is not None:
            reducer.discard()
        run = job.sorted_runs.pop(part, None)
        if run is not None:
            run.remove()
