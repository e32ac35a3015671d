"""Executor supervision: a node's executor processes, started, watched and replaced.

The daemon never runs user code, so an executor can crash or be stopped (SIGSTOP) at any
time. The supervisor keeps one slot per executor with what it holds (tasks given to it,
executed tasks whose output is not flushed yet, messages waiting until it is ready): that is
what is lost with it, and what its replacement must be told. No socket is touched here.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import EXECUTOR_STOPPED_S
from ..engine.jobtable import TaskKey
from ..net.security import ClusterKey
from ._exec_entry import spawn_executors

log = logging.getLogger(__name__)

#: Map tasks an executor holds at once (one running, one waiting in its socket).
EXECUTOR_TASK_DEPTH = 2


def is_stopped(pid: int) -> bool:
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
    """One executor process and what the daemon has given it."""

    index: int
    identity: bytes
    process: Any
    ready: bool = False
    tasks: deque[TaskKey] = field(default_factory=deque)
    unflushed: set[TaskKey] = field(default_factory=set)
    outbox: list[list[Any]] = field(default_factory=list)   # held until the executor is ready
    started: float = field(default_factory=time.monotonic)
    replacement: bool = False
    stopped_since: float | None = None   # when it was first seen stopped (SIGSTOP)

    def task_over(self, key: TaskKey) -> None:
        """The executor no longer holds the task (executed or failed)."""
        if key in self.tasks:
            self.tasks.remove(key)
        self.unflushed.discard(key)

    def holds(self, key: TaskKey) -> bool:
        """The task is queued or running here, or executed but not flushed yet."""
        return key in self.tasks or key in self.unflushed


class Supervisor:
    """Starts the executors, finds the ones that died or stay stopped, replaces them."""

    def __init__(self, node_id: str, endpoint: str, key: ClusterKey, nice: int,
                 prespawned: list[Any] | None = None,
                 stopped: Callable[[int], bool] = is_stopped) -> None:
        self.node_id = node_id
        self.endpoint = endpoint
        self.key = key
        self.nice = nice
        self.slots: list[ExecutorSlot] = []
        self._prespawned = prespawned or []
        self._stopped = stopped
        self._send: Callable[[list[Any]], bool] = lambda frames: False

    def attach(self, send: Callable[[list[Any]], bool]) -> None:
        """How messages reach an executor ([identity, *frames] on the daemon's socket)."""
        self._send = send

    # ---------------------------------------------------------------- processes
    def start(self, count: int) -> None:
        """``count`` executors, unless the caller started them already (before any zmq
        object existed, as the embedded node does)."""
        procs = self._prespawned or self._spawn(count, 0)
        self.slots = [ExecutorSlot(index=i, identity=f"e{i}".encode(), process=proc)
                      for i, proc in enumerate(procs)]

    def _spawn(self, count: int, first_index: int) -> list[Any]:
        return spawn_executors(count, self.node_id, self.endpoint, self.key.public,
                               self.key.secret, self.nice,
                               logging.getLogger().getEffectiveLevel(), first_index=first_index)

    def replace(self, index: int) -> ExecutorSlot:
        """A fresh executor in the slot of a dead one; it must be given the running jobs
        once it is ready."""
        new = ExecutorSlot(index=index, identity=f"e{index}".encode(),
                           process=self._spawn(1, index)[0], replacement=True)
        self.slots[index] = new
        return new

    def faults(self, now: float) -> list[tuple[ExecutorSlot, str]]:
        """The executors to replace, with why: exited, or stopped for too long (killed
        here: a stopped executor holds its tasks and partitions while the node keeps
        heartbeating for it, so nobody else would ever notice)."""
        found = []
        for e in self.slots:
            why = self._fault(e, now)
            if why:
                found.append((e, why))
        return found

    def _fault(self, e: ExecutorSlot, now: float) -> str:
        if not e.process.is_alive():
            return f"executor exited with code {e.process.exitcode}"
        if not self._stopped(e.process.pid):
            e.stopped_since = None
            return ""
        if e.stopped_since is None:
            e.stopped_since = now
        if now - e.stopped_since < EXECUTOR_STOPPED_S:
            return ""
        why = f"executor stopped for {now - e.stopped_since:.0f} s (SIGSTOP?); killed"
        e.process.kill()
        e.process.join(timeout=5)
        return why

    def died_at_start(self) -> ExecutorSlot | None:
        """An executor whose process is gone (while the node waits for all to be ready)."""
        return next((e for e in self.slots if not e.process.is_alive()), None)

    def shutdown(self, send_stop: Callable[[ExecutorSlot], None] | None) -> None:
        """Ask ready executors to stop (``send_stop``; None once the sockets are gone),
        terminate the ones still starting (they hold nothing yet), then wait for all and
        kill those that linger."""
        for e in self.slots:
            if e.ready and send_stop is not None:
                send_stop(e)
            elif e.process.is_alive():
                e.process.terminate()
        for e in self.slots:
            e.process.join(timeout=5)
            if e.process.is_alive():
                e.process.kill()
                e.process.join(timeout=5)

    # ---------------------------------------------------------------- messages to them
    def deliver(self, index: int, frames: list[Any]) -> None:
        """To executor ``index``, or held in its outbox until it is ready (a replacement,
        or the embedded node's executors still starting)."""
        e = self.slots[index]
        if not e.ready:
            e.outbox.append(frames)
            return
        if not self._send([e.identity, *frames]):
            log.warning("executor %d unreachable; message dropped", index)

    def mark_ready(self, e: ExecutorSlot) -> None:
        """The executor said it is ready: send what was held for it."""
        e.ready = True
        held, e.outbox = e.outbox, []
        for frames in held:
            self.deliver(e.index, frames)

    # ---------------------------------------------------------------- what they hold
    def by_identity(self, identity: bytes) -> ExecutorSlot | None:
        return next((e for e in self.slots if e.identity == identity), None)

    def all_ready(self) -> bool:
        return all(e.ready for e in self.slots)

    def ready_count(self) -> int:
        return sum(1 for e in self.slots if e.ready)

    def busy_count(self) -> int:
        """Executors holding at least one map task (for heartbeats and status)."""
        return sum(1 for e in self.slots if e.tasks)

    def free(self) -> ExecutorSlot | None:
        """The ready executor with room for another task that holds the fewest (so tasks
        spread evenly), or None when all are full."""
        free = [e for e in self.slots if e.ready and len(e.tasks) < EXECUTOR_TASK_DEPTH]
        return min(free, key=lambda x: len(x.tasks)) if free else None

    def holder(self, key: TaskKey) -> ExecutorSlot | None:
        """The executor that holds the task attempt, if any."""
        return next((e for e in self.slots if e.holds(key)), None)
