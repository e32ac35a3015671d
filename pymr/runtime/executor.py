"""An executor process: its loop, and the jobs it loads and ends.

One per slot, started by the node daemon with ``spawn`` at a lower priority. It
talks to its daemon over a local DEALER (ipc, CURVE) and pushes shuffle chunks
straight to the reducer nodes' shuffle PULL sockets. All the heavy work of a
node happens here, so the daemon never blocks.

The loop only reads, dispatches (``HANDLERS``) and owns the sockets and the program
cache. The work is done by two parts without sockets: ``maprunner.MapRunner`` (map
batches, flushes, the shuffle, re-sends) and ``reducehost.ReduceHost`` (the ledger,
merging, finishing, spills, serving fetches); ``shufflepush.ShufflePushes`` holds the
PUSH sockets to the reducers.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from ..engine.heap import JobHeap
from ..errors import JobLoadError, ProtocolError
from ..jobs import JobSpec
from ..jobs.program import ProgramCache
from ..net.security import ClusterKey, secure_connect
from ..net.transport import LogOnce, make_socket
from ..wire import protocol as p
from .maprunner import MapRunner
from .reducehost import MISSING_CHECK_S, ReduceHost
from .shufflepush import ShufflePushes

log = logging.getLogger(__name__)


class Executor:
    """The executor's loop; ``run`` returns when told to stop or the daemon is gone."""

    def __init__(self, index: int, node_id: str, daemon_endpoint: str, key: ClusterKey,
                 parent_pid: int) -> None:
        self.index = index
        self.node_id = node_id
        self.daemon_endpoint = daemon_endpoint
        self.key = key
        self.parent_pid = parent_pid
        self.cache = ProgramCache()
        self.heap = JobHeap(freeze=True)  # the job's data is not scanned by the collector
        self.drop = LogOnce(log)
        self.ctx: zmq.Context | None = None
        self.sock: zmq.Socket | None = None
        self.shuffle: ShufflePushes | None = None
        self.deferred: deque[list[Any]] = deque()  # read while a task ran, not handled yet
        self.maps = MapRunner(node_id, index, self._send, self._push_chunks,
                              drain=self._drain_daemon)
        self.reduces = ReduceHost(node_id, index, self._send,
                                  lambda who, why: self.drop(who, why))
        #: every job this executor knows, each with its map side and its reduce side
        self.jobs = self.maps.jobs

    # ---------------------------------------------------------------- I/O
    def _send(self, msg: p.Message, *payload: Any) -> None:
        assert self.sock is not None
        self.sock.send_multipart(p.encode(msg, *payload), copy=False)

    def _push_chunks(self, job_id: str, output_id: str, part: int, endpoint: str,
                     chunks: list[tuple[int, bytes]], epoch: int) -> bool:
        assert self.shuffle is not None
        return self.shuffle.send_chunks(job_id, output_id, part, endpoint, chunks, epoch)

    def _close_unused_pushes(self) -> None:
        if self.shuffle is not None:
            self.shuffle.close_unused(self.maps.shuffle_endpoints())

    def _drain_daemon(self) -> None:
        """Between pieces of a task: read what the daemon sent; apply cancels at once, keep
        the rest for the main loop."""
        assert self.sock is not None
        while self.sock.poll(0):
            frames = self.sock.recv_multipart(copy=False)
            try:
                msg = p.decode_header(frames[0].buffer)
            except ProtocolError:
                msg = None
            if isinstance(msg, p.CancelTask):
                self.maps.mark_cancelled(msg.job_id, msg.task_id, msg.attempt)
            else:
                self.deferred.append(frames)

    def run(self) -> None:
        self.ctx = zmq.Context()
        self.shuffle = ShufflePushes(self.ctx, self.key)
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
                    self.reduces.report_missing(time.monotonic())
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
            self.maps.close()
            self.shuffle.close()
            if self.sock is not None:
                self.sock.close(linger=200)
            self.ctx.destroy(linger=0)

    # ---------------------------------------------------------------- dispatch
    def handle(self, msg: p.Message, payload: list[Any]) -> None:
        """One message from the daemon, through ``HANDLERS`` (type -> handler)."""
        if isinstance(msg, p.ExecJob):
            self.start_job(msg)
            return
        handler = HANDLERS.get(type(msg))
        if handler is None:
            self.drop("daemon", f"unexpected {msg.TYPE}")
            return
        if getattr(msg, "job_id", "") not in self.jobs:
            if isinstance(msg, p.ExecJobEnd):  # a job this executor never ran
                self._close_unused_pushes()
            else:
                self.drop("daemon", f"{msg.TYPE} for unknown job")
            return
        handler(self, msg, payload)

    def start_job(self, msg: p.ExecJob) -> None:
        """A new job, or an update of a known one (partitions moved: new epoch)."""
        known = self.maps.jobs.get(msg.job_id)
        program = known.program if known is not None else None
        broken = ""
        if known is None:
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
        self.maps.start_job(msg, program, broken)
        self.reduces.start_job(msg, program)

    def end_job(self, msg: p.ExecJobEnd) -> None:
        sha256 = self.maps.jobs[msg.job_id].spec.sha256
        self.maps.end_job(msg.job_id)
        self.reduces.end_job(msg.job_id)
        if not any(j.spec.sha256 == sha256 for j in self.maps.jobs.values()):
            self.cache.forget(sha256)
        self._close_unused_pushes()


#: What the executor does with each message the daemon routes to it (besides ``ExecJob``),
#: once it knows the message's job: the map runner, the reduce host, or the loop itself.
HANDLERS: dict[type[p.Message], Callable[[Executor, Any, list[Any]], None]] = {
    p.MapTask: lambda ex, msg, payload: ex.maps.run_task(msg, payload),
    p.CancelTask: lambda ex, msg, payload: ex.maps.cancel(msg),
    p.Flush: lambda ex, msg, payload: ex.maps.on_flush(msg),
    p.ResendChunks: lambda ex, msg, payload: ex.maps.resend(msg),
    p.ShuffleChunk: lambda ex, msg, payload: ex.reduces.on_chunk(msg, payload),
    p.Commit: lambda ex, msg, payload: ex.reduces.on_commit(msg),
    p.DropOutput: lambda ex, msg, payload: ex.reduces.drop_output(msg),
    p.InputComplete: lambda ex, msg, payload: ex.reduces.input_complete(msg),
    p.FetchPartition: lambda ex, msg, payload: ex.reduces.serve_fetch(msg),
    p.ExecJobEnd: lambda ex, msg, payload: ex.end_job(msg),
}


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
