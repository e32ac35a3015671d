"""An executor process: runs map + combine, shuffles, and reduces its partitions.

One per slot, started by the node daemon with ``spawn`` at a lower priority. It
talks to its daemon over a local DEALER (ipc, CURVE) and pushes shuffle chunks
straight to the reducer nodes' shuffle PULL sockets. All the heavy work of a
node happens here, so the daemon never blocks.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
import zlib
from dataclasses import dataclass, field
from typing import Any

import zmq

from . import protocol as p
from .errors import ProtocolError
from .jobs import JobCache
from .ledger import Manifest, ReducerLedger
from .security import ClusterKey, secure_connect
from .transport import LogOnce, make_socket

log = logging.getLogger(__name__)

#: Records per shuffle / result chunk: keeps every frame far below MAX_FRAME_BYTES.
CHUNK_RECORDS = 65_536
#: How often a reducer looks for committed outputs whose chunks stalled.
MISSING_CHECK_S = 2.0
#: How long a shuffle send may wait for a reducer. A reducer that does not take a
#: chunk in time is skipped: the output is retained, and the reducer (or the node its
#: partition moves to) gets the chunks again when it reports them missing.
SHUFFLE_SEND_TIMEOUT_MS = 2_000


def partition_of(key: bytes, num_partitions: int) -> int:
    """Stable across processes and machines (never Python's salted ``hash()``)."""
    return zlib.crc32(key) % num_partitions


@dataclass
class ExecutorJob:
    """One job as this executor sees it: map side and reduce side."""

    spec: p.ExecJob
    module: Any
    broken: str = ""
    combiner: Any = None
    pending: list[list[int]] = field(default_factory=list)  # [task, attempt] not flushed
    flushes: int = 0
    retained: dict[str, dict[int, list[bytes]]] = field(default_factory=dict)
    ledgers: dict[int, ReducerLedger] = field(default_factory=dict)
    missing_seen: set[tuple[str, int, tuple[int, ...]]] = field(default_factory=set)
    counts: dict[int, dict[bytes, int]] = field(default_factory=dict)
    num_tasks: int | None = None
    sorted_runs: dict[int, list[tuple[bytes, int]]] = field(default_factory=dict)
    completed: set[int] = field(default_factory=set)


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
        self.cache = JobCache()
        self.pushes: dict[str, zmq.Socket] = {}
        self.drop = LogOnce(log)
        self.ctx: zmq.Context | None = None
        self.sock: zmq.Socket | None = None

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
                    self.report_missing()
                if not poller.poll(int(MISSING_CHECK_S * 1000)):
                    continue
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
        finally:
            for s in self.pushes.values():
                s.close(linger=0)
            if self.sock is not None:
                self.sock.close(linger=200)
            self.ctx.destroy(linger=0)

    # ---------------------------------------------------------------- dispatch
    def handle(self, msg: p.Message, payload: list[Any]) -> None:
        if isinstance(msg, p.ExecJob):
            self.start_job(msg)
            return
        job = self.jobs.get(getattr(msg, "job_id", ""))
        if job is None:
            self.drop("daemon", f"{msg.TYPE} for unknown job")
            return
        if isinstance(msg, p.MapTask):
            self.run_task(job, msg, payload)
        elif isinstance(msg, p.ShuffleChunk):
            self.on_chunk(job, msg, payload)
        elif isinstance(msg, p.Commit):
            self.on_commit(job, msg)
        elif isinstance(msg, p.DropOutput):
            for ledger in job.ledgers.values():
                ledger.drop_output(msg.output_id)
        elif isinstance(msg, p.ResendChunks):
            self.resend(job, msg)
        elif isinstance(msg, p.Flush):
            self.safe_flush(job)
        elif isinstance(msg, p.InputComplete):
            job.num_tasks = msg.num_tasks
            self.check_complete(job)
        elif isinstance(msg, p.FetchPartition):
            self.serve_fetch(job, msg)
        elif isinstance(msg, p.ExecJobEnd):
            self.jobs.pop(msg.job_id, None)
            self._close_unused_pushes()
        else:
            self.drop("daemon", f"unexpected {msg.TYPE}")

    def start_job(self, msg: p.ExecJob) -> None:
        """A new job, or an update of a known one (partitions moved: new epoch)."""
        job = self.jobs.get(msg.job_id)
        if job is None:
            try:
                module = self.cache.load(msg.job_name, msg.source, msg.sha256)
                if msg.num_partitions < 1:
                    raise ValueError("a job needs at least one partition")
            except Exception as exc:  # the program does not load: every task fails with this
                module = None
                broken = f"{type(exc).__name__}: {exc}"
            else:
                broken = ""
            job = ExecutorJob(spec=msg, module=module, broken=broken)
            self.jobs[msg.job_id] = job
        job.spec = msg
        for part in msg.partitions:
            if part not in job.ledgers:
                job.ledgers[part] = ReducerLedger([part])
                job.counts[part] = {}
        if msg.num_tasks >= 0:
            job.num_tasks = msg.num_tasks
        self.check_complete(job)

    # ---------------------------------------------------------------- map side
    def run_task(self, job: ExecutorJob, task: p.MapTask, payload: list[Any]) -> None:
        try:
            if job.broken:
                raise RuntimeError(f"the job's program does not load here: {job.broken}")
            if task.alone and job.pending:
                self.flush(job)
            data = self._read_split(task, payload)
            if job.combiner is None:
                job.combiner = job.module.make_combiner(job.spec.tokenizer)
            job.combiner.add(data)
        except Exception as exc:  # the job's code failed: report, never crash
            lost = job.pending
            job.pending = []
            job.combiner = None
            self._send(p.TaskFailedReport(
                job_id=job.spec.job_id, node_id=self.node_id, task_id=task.task_id,
                attempt=task.attempt, exc_type=type(exc).__name__, message=str(exc),
                traceback=traceback.format_exc()))
            for t, a in lost:  # their combined counts were discarded with the batch
                self._send(p.TaskFailedReport(
                    job_id=job.spec.job_id, node_id=self.node_id, task_id=t, attempt=a,
                    exc_type="Lost", message="batch discarded after another task failed"))
            return
        job.pending.append([task.task_id, task.attempt])
        self._send(p.TaskExecuted(job_id=job.spec.job_id, node_id=self.node_id,
                                  task_id=task.task_id, attempt=task.attempt,
                                  nbytes=len(data)))
        if task.alone or job.combiner.distinct_raw() >= job.spec.flush_key_limit:
            self.safe_flush(job)

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
        except Exception as exc:
            job.pending = []
            job.combiner = None
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
        counts, bad = job.combiner.finish() if job.combiner is not None else ({}, 0)
        job.combiner = None
        spec = job.spec
        nparts = spec.num_partitions
        parts: list[dict[bytes, int]] = [{} for _ in range(nparts)]
        crc = zlib.crc32
        words = 0
        for k, v in counts.items():
            parts[crc(k) % nparts][k] = v
            words += v
        job.flushes += 1
        output_id = f"{self.node_id}.{self.index}.{os.getpid()}.{job.flushes}"
        manifest: dict[int, list[int]] = {}
        retained: dict[int, list[bytes]] = {}
        for part, d in enumerate(parts):
            items = list(d.items())
            payloads = [p.pack_records(dict(items[i:i + CHUNK_RECORDS]))
                        for i in range(0, len(items), CHUNK_RECORDS)]
            checksum = 0
            for pl in payloads:
                checksum = zlib.crc32(pl, checksum)
            manifest[part] = [len(payloads), len(items), checksum]
            retained[part] = payloads
        tasks = job.pending
        job.pending = []
        for part, payloads in retained.items():
            if not self._send_chunks(job, output_id, part, spec.shuffle_endpoints[part],
                                     list(enumerate(payloads)), spec.epoch):
                log.warning("reducer of partition %d did not take output %s; it will be "
                            "re-sent on request", part, output_id)
        job.retained[output_id] = retained
        self._send(p.OutputDone(job_id=spec.job_id, node_id=self.node_id, output_id=output_id,
                                tasks=tasks, manifest=manifest, words=words, bad_bytes=bad))

    # ---------------------------------------------------------------- reduce side
    def _send_chunks(self, job: ExecutorJob, output_id: str, part: int, endpoint: str,
                     chunks: list[tuple[int, bytes]], epoch: int) -> bool:
        """Push numbered chunks to a reducer; False if it did not take them in time."""
        sock = self._push(endpoint)
        try:
            for seq, payload in chunks:
                sock.send_multipart(p.encode(p.ShuffleChunk(
                    job_id=job.spec.job_id, output_id=output_id, partition=part, seq=seq,
                    epoch=epoch), payload), copy=False)
        except zmq.Again:
            return False
        return True

    def resend(self, job: ExecutorJob, msg: p.ResendChunks) -> None:
        """Send a retained output's chunks again (a gap, or the partition moved)."""
        retained = job.retained.get(msg.output_id)
        if retained is None:
            self._send(p.OutputLost(job_id=job.spec.job_id, node_id=self.node_id,
                                    output_id=msg.output_id))
            return
        payloads = retained.get(msg.partition, [])
        wanted = [seq for seq in (msg.seqs or range(len(payloads)))
                  if 0 <= seq < len(payloads)]
        if not self._send_chunks(job, msg.output_id, msg.partition, msg.endpoint,
                                 [(seq, payloads[seq]) for seq in wanted], msg.epoch):
            log.warning("resend of %s to %s timed out", msg.output_id, msg.endpoint)

    def on_chunk(self, job: ExecutorJob, msg: p.ShuffleChunk, payload: list[Any]) -> None:
        ledger = job.ledgers.get(msg.partition)
        if ledger is None or not payload:
            self.drop("shuffle", "chunk for a partition this executor does not reduce")
            return
        frame = payload[0]
        data = frame.bytes if hasattr(frame, "bytes") else bytes(frame)
        ledger.stage(msg.output_id, msg.partition, msg.seq, data)
        self.merge_ready(job, ledger)

    def on_commit(self, job: ExecutorJob, msg: p.Commit) -> None:
        for part, (chunks, records, checksum) in msg.manifest.items():
            ledger = job.ledgers.get(part)
            if ledger is not None:
                ledger.commit(msg.output_id, msg.tasks, part,
                              Manifest(chunks, records, checksum))
                self.merge_ready(job, ledger)

    def report_missing(self) -> None:
        """Committed pairs whose chunks stalled since the last check: ask for them again."""
        for job in self.jobs.values():
            now: set[tuple[str, int, tuple[int, ...]]] = set()
            for ledger in job.ledgers.values():
                for output_id, part, seqs in ledger.missing():
                    key = (output_id, part, tuple(seqs))
                    now.add(key)
                    if key in job.missing_seen:
                        self._send(p.ChunksMissing(job_id=job.spec.job_id,
                                                   node_id=self.node_id, output_id=output_id,
                                                   partition=part, seqs=list(seqs)))
            job.missing_seen = now

    def merge_ready(self, job: ExecutorJob, ledger: ReducerLedger) -> None:
        ready = ledger.take_ready()
        for r in ready:
            target = job.counts[r.partition]
            for pl in r.payloads:
                chunk = p.unpack_records(pl)
                if not target:
                    target.update(chunk)
                    continue
                get = target.get
                for k, v in chunk.items():
                    target[k] = get(k, 0) + v
        if ready:
            self.check_complete(job)

    def check_complete(self, job: ExecutorJob) -> None:
        if job.num_tasks is None:
            return
        for part, ledger in job.ledgers.items():
            if part in job.completed:
                continue
            if len(ledger.merged_tasks(part)) < job.num_tasks:
                continue
            counts = job.counts.pop(part, {})
            run = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            job.sorted_runs[part] = run
            job.completed.add(part)
            self._send(p.PartitionComplete(
                job_id=job.spec.job_id, node_id=self.node_id, partition=part,
                records=len(run), total=sum(counts.values()),
                chunks=max(1, -(-len(run) // CHUNK_RECORDS))))

    def serve_fetch(self, job: ExecutorJob, msg: p.FetchPartition) -> None:
        run = job.sorted_runs.get(msg.partition)
        if run is None:
            self.drop("master", "fetch of a partition that is not complete")
            return
        nchunks = max(1, -(-len(run) // CHUNK_RECORDS))
        for seq in range(msg.start, min(msg.start + msg.count, nchunks)):
            piece = run[seq * CHUNK_RECORDS:(seq + 1) * CHUNK_RECORDS]
            self._send(p.PartitionData(job_id=job.spec.job_id, partition=msg.partition,
                                       seq=seq, last=seq == nchunks - 1),
                       p.pack_records(piece))


def executor_main(index: int, node_id: str, daemon_endpoint: str, public: bytes,
                  secret: bytes, parent_pid: int, nice: int, log_level: int) -> None:
    """Entry point of the spawned executor process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    logging.basicConfig(level=log_level, format="%(levelname)s executor: %(message)s")
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    started = time.monotonic()
    Executor(index, node_id, daemon_endpoint, ClusterKey(public, secret), parent_pid).run()
    log.debug("executor %d ran %.1f s", index, time.monotonic() - started)
