"""The master's task ledger: attempts, retries, backups and commits, with no sockets.

The master's loop turns socket traffic into calls here and does what the return
values say. Everything about *which* task runs *where* and *which output
counts* is decided here, so it can be tested with plain scripts of events.
Two units it drives hold the rest, each testable alone: ``credits.NodeCredits`` says
which node has room (credit, pauses, turns), and ``stragglers.Stragglers`` which running
attempts are slow enough for a backup.

The master calls ``wants_input``, ``assign``, ``backups`` and ``all_executed`` on every
turn of its loop, so none of them may scan every node or every task: the nodes with
credit are a heap and the free capacity a running total (in ``NodeCredits``), the
running and the unsettled tasks small sets. The master's CPU per task then stays flat
from 4 to 256 nodes (bench/SCALE.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .credits import NodeCredits
from .stragglers import Stragglers

log = logging.getLogger(__name__)


@dataclass
class Task:
    task_id: int
    size: int
    attempts: int = 0                 # attempts started (failures count, losses do not)
    failures: int = 0
    next_attempt: int = 1
    running: dict[int, str] = field(default_factory=dict)   # attempt -> node id
    executed: dict[int, str] = field(default_factory=dict)  # attempt -> node id (unflushed)
    committed: str | None = None      # output id
    failed_on: set[str] = field(default_factory=set)   # nodes where an attempt raised
    cancelled: dict[int, str] = field(default_factory=dict)  # attempt -> node (lost the race)
    last_error: tuple[str, int, str, str, str] | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    task_id: int
    attempt: int
    node_id: str
    size: int
    alone: bool = False


@dataclass(frozen=True, slots=True)
class CommitDecision:
    commit: bool
    rerun: tuple[int, ...] = ()
    #: (task, attempt, node) of attempts that lost to this output: cancel them
    cancel: tuple[tuple[int, int, str], ...] = ()


class JobFailedError(Exception):
    """Raised by the scheduler when a task exhausted its attempts."""

    def __init__(self, task: Task) -> None:
        self.task = task
        super().__init__(f"task {task.task_id} failed")


class Scheduler:
    """Map tasks handed to nodes on credit under a byte budget, their attempts and
    retries, backups of stragglers, and the commit rule."""

    def __init__(self, node_slots: dict[str, int], *, prefetch: int = 1,
                 byte_budget: int = 256 << 20, max_attempts: int = 4,
                 clock: Callable[[], float] = time.monotonic,
                 backup_after_s: float = 1.0) -> None:
        # the scheduler's clock, read at each call (a test may set ``clock`` later)
        self.credits = NodeCredits(prefetch=prefetch, clock=lambda: self.clock())
        self.stragglers = Stragglers(backup_after_s)
        self.byte_budget = byte_budget
        self.max_attempts = max_attempts
        self.tasks: list[Task] = []
        self.queue: list[int] = []           # task ids waiting to (re)run, FIFO
        self.bytes_in_flight = 0
        self.input_done = False
        self.committed_count = 0
        self.clock = clock
        self.alone: set[int] = set()          # re-runs and backups flush alone
        # Incremental books (see the module docstring); tests check them against scans.
        self._running_tasks: set[int] = set()
        self._unsettled: set[int] = set()      # uncommitted, and running or not executed
        for node, slots in node_slots.items():
            self.add_node(node, slots)

    # ---------------------------------------------------------------- nodes
    def pause(self, node_id: str, seconds: float) -> None:
        """Give this node nothing for a while (its task socket stays full)."""
        self.credits.pause(node_id, seconds)

    def credit(self, node_id: str) -> int:
        """Tasks this node may still receive: slots plus a small prefetch."""
        return self.credits.credit(node_id)

    def _mark(self, task: Task) -> None:
        """Keep the running and unsettled sets true for this task."""
        if task.running:
            self._running_tasks.add(task.task_id)
        else:
            self._running_tasks.discard(task.task_id)
        if task.committed is None and (task.running or not task.executed):
            self._unsettled.add(task.task_id)
        else:
            self._unsettled.discard(task.task_id)

    def add_node(self, node_id: str, slots: int) -> None:
        self.credits.add(node_id, slots)

    def remove_node(self, node_id: str) -> list[int]:
        """A node is gone: its running and unflushed attempts run again elsewhere."""
        self.credits.remove(node_id)
        requeue = []
        for t in self.tasks:
            lost = [a for a, n in t.running.items() if n == node_id]
            for a in lost:
                del t.running[a]
                self.bytes_in_flight -= t.size
            gone = [a for a, n in t.executed.items() if n == node_id]
            for a in gone:
                del t.executed[a]
            if (lost or gone) and t.committed is None and not t.running and not t.executed \
                    and t.task_id not in self.queue:
                requeue.append(t.task_id)
                self.alone.add(t.task_id)
            if lost or gone:
                self._mark(t)
        self.queue.extend(requeue)
        return requeue

    # ---------------------------------------------------------------- tasks
    def add_task(self, size: int) -> int:
        task = Task(task_id=len(self.tasks), size=size)
        self.tasks.append(task)
        self.queue.append(task.task_id)
        self._unsettled.add(task.task_id)
        return task.task_id

    def finish_input(self) -> None:
        self.input_done = True

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def wants_input(self) -> bool:
        """True when another split would be dispatched at once (so read it now)."""
        return (not self.input_done and len(self.queue) < self.credits.room()
                and self.bytes_in_flight < self.byte_budget)

    def assign(self) -> list[Assignment]:
        """Hand queued tasks to the nodes with the most credit left."""
        out: list[Assignment] = []
        while self.queue and self.bytes_in_flight < self.byte_budget:
            node = self.credits.best()
            if node is None:
                break
            index = 0
            task = self.tasks[self.queue[0]]
            if task.failed_on:  # it runs elsewhere if it can: maybe a later task goes first
                picked = self.credits.place_avoiding(self.tasks[t].failed_on for t in self.queue)
                if picked is None:
                    break
                index, node = picked
                task = self.tasks[self.queue[index]]
            del self.queue[index]
            self.credits.served(node)
            out.append(self._start(task, node, task.task_id in self.alone))
        return out

    def _start(self, task: Task, node: str, alone: bool) -> Assignment:
        attempt = task.next_attempt
        task.next_attempt += 1
        task.attempts += 1
        task.running[attempt] = node
        self.bytes_in_flight += task.size
        self.stragglers.start(task.task_id, attempt, self.clock())
        self.credits.busy(node, +1)
        self._mark(task)
        return Assignment(task.task_id, attempt, node, task.size, alone)

    def backups(self) -> list[Assignment]:
        """Near the end, idle slots run backup attempts of the slowest running tasks.

        Only when nothing is queued; a task gets one backup, on another node, once it
        has run longer than twice the median task (and ``backup_after_s``).
        """
        if not self.input_done or self.queue:
            return []
        out = []
        for task_id, node in self.stragglers.overdue(self._lone_attempts(), self.clock()):
            target = self.credits.backup_target(besides=node)
            if target is None:
                continue
            self.alone.add(task_id)
            self.stragglers.backed_up(node)
            out.append(self._start(self.tasks[task_id], target, True))
        return out

    @property
    def backups_started(self) -> int:
        return self.stragglers.backups_started

    def _lone_attempts(self) -> Iterator[tuple[int, int, str]]:
        """(task, attempt, node) of the tasks a backup may help: uncommitted, not executed,
        one attempt running."""
        for tid in sorted(self._running_tasks):
            t = self.tasks[tid]
            if t.committed is None and not t.executed and len(t.running) == 1:
                (attempt, node), = t.running.items()
                yield tid, attempt, node

    def _release(self, task: Task, attempt: int, timed: bool = True) -> str | None:
        """The attempt no longer runs: free its credit (``timed``: it finished, so its
        duration feeds the backup threshold; a cancelled loser's does not)."""
        started = self.stragglers.stop(task.task_id, attempt)
        node = task.running.pop(attempt, None)
        if timed and node is not None and started is not None:
            self.stragglers.took(self.clock() - started)
        if node is not None:
            self.bytes_in_flight -= task.size
            self.credits.busy(node, -1)
        self._mark(task)
        return node

    def on_executed(self, task_id: int, attempt: int, node_id: str) -> None:
        task = self._task(task_id)
        if task is None or task.running.get(attempt) != node_id:
            return  # not an attempt this node was given: late, stale or forged
        if self._release(task, attempt) is not None:
            task.executed[attempt] = node_id
            self._mark(task)

    def on_failed(self, task_id: int, attempt: int, node_id: str, *, lost: bool,
                  error: tuple[str, int, str, str, str] | None = None) -> None:
        """A task attempt failed: retry it, or raise ``JobFailedError`` when out of attempts."""
        task = self._task(task_id)
        if task is None or node_id not in (task.running.get(attempt),
                                           task.executed.get(attempt)):
            return  # not an attempt this node was given
        ran = self._release(task, attempt) is not None
        was_executed = task.executed.pop(attempt, None) is not None
        if not (ran or was_executed) or task.committed is not None:
            return
        if not lost:
            task.failures += 1
            task.last_error = error
            task.failed_on.add(node_id)
            if task.failures >= self.max_attempts:
                raise JobFailedError(task)
        if not task.running and not task.executed and task_id not in self.queue:
            self.alone.add(task_id)
            self.queue.insert(0, task_id)
        self._mark(task)

    def on_output(self, output_id: str, tasks: list[tuple[int, int]],
                  node_id: str | None = None) -> CommitDecision:
        """The commit rule: an output counts only if none of its tasks is committed yet,
        and every attempt it names was given to the node that reports it."""
        known = [(self.tasks[t], a) for t, a in tasks if 0 <= t < len(self.tasks)]
        if len(known) != len(tasks) or not known or len({t for t, _ in tasks}) != len(tasks):
            return CommitDecision(False)  # unknown or repeated tasks: a bug or a forgery
        late = [(t, a) for t, a in known if a in t.cancelled
                and node_id in (None, t.cancelled[a])]
        if late:
            # Holds an attempt that lost to another (its cancel came too late): refused
            # like any output of a committed task, without a forgery warning.
            genuine = [(t, a) for t, a in known if (t, a) not in late]
            return CommitDecision(False, self._requeue_uncommitted(genuine))
        forged = [(t, a) for t, a in known
                  if (a not in t.executed and a not in t.running) or (
                      node_id is not None
                      and node_id not in (t.executed.get(a), t.running.get(a)))]
        if forged:
            # An attempt this master never started (forged, or from before a restart):
            # the output cannot count; its genuine tasks run again.
            log.warning("output %s names attempts that were never started: %s", output_id,
                        [(t.task_id, a) for t, a in forged])
            genuine = [(t, a) for t, a in known if (t, a) not in forged]
            for t, a in genuine:
                self._release(t, a)
            return CommitDecision(False, self._requeue_uncommitted(genuine))
        if any(t.committed is not None for t, _ in known):
            return CommitDecision(False, self._requeue_uncommitted(known))
        cancel: list[tuple[int, int, str]] = []
        for t, a in known:
            t.committed = output_id
            t.executed.pop(a, None)
            self.committed_count += 1
            cancel.extend(self._cancel_losers(t))
            self._mark(t)
        return CommitDecision(True, cancel=tuple(cancel))

    def _cancel_losers(self, task: Task) -> list[tuple[int, int, str]]:
        """The task is committed: its other attempts (running, or executed into a batch
        not flushed yet) lost. Free their credit now; they never count as attempts."""
        losers = [*task.running.items(), *task.executed.items()]
        for attempt, node in losers:
            self._release(task, attempt, timed=False)
            task.executed.pop(attempt, None)
            task.cancelled[attempt] = node
            task.attempts -= 1
        return [(task.task_id, attempt, node) for attempt, node in losers]

    def _requeue_uncommitted(self, attempts: list[tuple[Task, int]]) -> tuple[int, ...]:
        """An output that will not count: its tasks not committed elsewhere run again, alone."""
        rerun = []
        for t, a in attempts:
            t.executed.pop(a, None)
            if t.committed is None and not t.running and not t.executed \
                    and t.task_id not in self.queue:
                self.queue.append(t.task_id)
                self.alone.add(t.task_id)
                rerun.append(t.task_id)
            self._mark(t)
        return tuple(rerun)

    def uncommit(self, output_id: str) -> list[int]:
        """A committed output was lost (its mapper died): run its task set again."""
        rerun = [t.task_id for t in self.tasks if t.committed == output_id]
        for tid in rerun:
            self.tasks[tid].committed = None
            self.committed_count -= 1
            self.alone.add(tid)
            if tid not in self.queue:
                self.queue.append(tid)
            self._mark(self.tasks[tid])
        return rerun

    def _task(self, task_id: int) -> Task | None:
        return self.tasks[task_id] if 0 <= task_id < len(self.tasks) else None

    # ---------------------------------------------------------------- phases
    def all_executed(self) -> bool:
        """Input read and every uncommitted task has run (its output may be unflushed)."""
        return self.input_done and not self.queue and not self._unsettled

    def all_committed(self) -> bool:
        return self.input_done and self.committed_count == len(self.tasks)

    def running_count(self) -> int:
        return sum(len(self.tasks[tid].running) for tid in self._running_tasks)
