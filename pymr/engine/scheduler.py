"""The master's task ledger: credits, attempts, retries and commits, with no sockets.

The master's loop turns socket traffic into calls here and does what the return
values say. Everything about *which* task runs *where* and *which output
counts* is decided here, so it can be tested with plain scripts of events.

The master calls ``wants_input``, ``assign``, ``backups`` and ``all_executed`` on every
turn of its loop, so none of them may scan every node or every task: the nodes with
credit are a heap, the free capacity a running total, the running and the unsettled
tasks small sets. The master's CPU per task then stays flat from 4 to 256 nodes
(bench/SCALE.md).
"""

from __future__ import annotations

import bisect
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    """Credit-based assignment of map tasks to nodes, and the commit rule."""

    def __init__(self, node_slots: dict[str, int], *, prefetch: int = 1,
                 byte_budget: int = 256 << 20, max_attempts: int = 4,
                 clock: Callable[[], float] = time.monotonic,
                 backup_after_s: float = 1.0) -> None:
        self.node_slots: dict[str, int] = {}
        self.prefetch = prefetch
        self.byte_budget = byte_budget
        self.max_attempts = max_attempts
        self.tasks: list[Task] = []
        self.queue: list[int] = []           # task ids waiting to (re)run, FIFO
        self.in_flight: dict[str, int] = {}
        self.bytes_in_flight = 0
        self.input_done = False
        self.committed_count = 0
        self.clock = clock
        self.backup_after_s = backup_after_s
        self.alone: set[int] = set()          # re-runs and backups flush alone
        self.started: dict[tuple[int, int], float] = {}
        self.durations: list[float] = []     # sorted: the median is a lookup
        self.backups_started = 0
        self.slow_nodes: set[str] = set()     # nodes whose attempts needed a backup
        self.last_served: dict[str, int] = {}
        self.serve_count = 0
        self.paused: dict[str, float] = {}
        # Incremental books (see the module docstring); tests check them against scans.
        self._capacity = 0                     # sum of slots * (1 + prefetch)
        self._in_flight_total = 0
        self._heap: list[tuple[int, int, int, int, str]] = []  # (-credit, served, order, v, n)
        self._version: dict[str, int] = {}
        self._order: dict[str, int] = {}
        self._added = 0
        self._running_tasks: set[int] = set()
        self._unsettled: set[int] = set()      # uncommitted, and running or not executed
        for node, slots in node_slots.items():
            self.add_node(node, slots)

    # ---------------------------------------------------------------- nodes
    def pause(self, node_id: str, seconds: float) -> None:
        """Give this node nothing for a while (its task socket stays full)."""
        self.paused[node_id] = self.clock() + seconds

    def credit(self, node_id: str) -> int:
        """Tasks this node may still receive: slots plus a small prefetch."""
        until = self.paused.get(node_id)
        if until is not None:
            if self.clock() < until:
                return 0
            del self.paused[node_id]
        return max(0, self._cap(node_id) - self.in_flight.get(node_id, 0))

    def _cap(self, node_id: str) -> int:
        slots = self.node_slots.get(node_id, 0)
        return slots + self.prefetch * slots

    def _push(self, node_id: str) -> None:
        """The node's credit or turn changed: a new heap entry (older ones are stale)."""
        version = self._version.get(node_id, 0) + 1
        self._version[node_id] = version
        free = self._cap(node_id) - self.in_flight[node_id]
        if free > 0:
            heapq.heappush(self._heap, (-free, self.last_served.get(node_id, -1),
                                        self._order[node_id], version, node_id))
        if len(self._heap) > 4 * len(self.node_slots) + 64:
            self._heap = [e for e in self._heap if self._version.get(e[4]) == e[3]]
            heapq.heapify(self._heap)

    def _best_node(self) -> str | None:
        """The node with the most credit, ties to the one served longest ago."""
        paused = []
        best = None
        while self._heap:
            entry = self._heap[0]
            node = entry[4]
            if self._version.get(node) != entry[3] or node not in self.node_slots:
                heapq.heappop(self._heap)
            elif self.credit(node) <= 0:      # paused for now: keep its entry
                paused.append(heapq.heappop(self._heap))
            else:
                best = node
                break
        for entry in paused:
            heapq.heappush(self._heap, entry)
        return best

    def _room(self) -> int:
        """Sum of every node's credit, without visiting every node."""
        room = self._capacity - self._in_flight_total
        for node in list(self.paused):
            if node in self.node_slots and self.credit(node) == 0 and node in self.paused:
                room -= self._cap(node) - self.in_flight[node]
        return room

    def _busy(self, node_id: str, delta: int) -> None:
        if node_id in self.in_flight:
            self.in_flight[node_id] += delta
            self._in_flight_total += delta
            self._push(node_id)

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
        if node_id in self.node_slots:
            self._capacity -= self._cap(node_id)
        else:  # ties on credit and turn go to the node added first, as in node_slots
            self._added += 1
            self._order[node_id] = self._added
        self.node_slots[node_id] = slots
        self._capacity += self._cap(node_id)
        self.in_flight.setdefault(node_id, 0)
        self._push(node_id)

    def remove_node(self, node_id: str) -> list[int]:
        """A node is gone: its running and unflushed attempts run again elsewhere."""
        if node_id in self.node_slots:
            self._capacity -= self._cap(node_id)
        self.node_slots.pop(node_id, None)
        self._in_flight_total -= self.in_flight.pop(node_id, 0)
        self._version[node_id] = self._version.get(node_id, 0) + 1
        self.paused.pop(node_id, None)
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
        return (not self.input_done and len(self.queue) < self._room()
                and self.bytes_in_flight < self.byte_budget)

    def assign(self) -> list[Assignment]:
        """Hand queued tasks to the nodes with the most credit left."""
        out: list[Assignment] = []
        while self.queue and self.bytes_in_flight < self.byte_budget:
            node = self._best_node()
            if node is None:
                break
            index = 0
            task = self.tasks[self.queue[0]]
            if task.failed_on:
                picked = self._pick_elsewhere()
                if picked is None:
                    break
                index, task, node = picked
            del self.queue[index]
            self.serve_count += 1
            self.last_served[node] = self.serve_count
            out.append(self._start(task, node, task.task_id in self.alone))
        return out

    def _pick_elsewhere(self) -> tuple[int, Task, str] | None:
        """The first queued task that can run now, for a queue headed by a task that
        raised somewhere: it runs elsewhere, so it waits for another node's credit unless
        every node has failed it already (a scan, but only while such tasks wait)."""
        nodes = [n for n in self.node_slots if self.credit(n) > 0]
        for i, tid in enumerate(self.queue):
            task = self.tasks[tid]
            fresh = [n for n in nodes if n not in task.failed_on]
            if fresh or all(n in task.failed_on for n in self.node_slots):
                candidates = fresh or nodes
                # Most credit first; ties go to the node served longest ago (round-robin).
                node = max(candidates,
                           key=lambda n: (self.credit(n), -self.last_served.get(n, -1)))
                return i, task, node
        return None

    def _start(self, task: Task, node: str, alone: bool) -> Assignment:
        attempt = task.next_attempt
        task.next_attempt += 1
        task.attempts += 1
        task.running[attempt] = node
        self.bytes_in_flight += task.size
        self.started[(task.task_id, attempt)] = self.clock()
        self._busy(node, +1)
        self._mark(task)
        return Assignment(task.task_id, attempt, node, task.size, alone)

    def backups(self) -> list[Assignment]:
        """Near the end, idle slots run backup attempts of the slowest running tasks.

        Only when nothing is queued; a task gets one backup, on another node, once it
        has run longer than twice the median task (and ``backup_after_s``).
        """
        if not self.input_done or self.queue or not self.durations:
            return []
        now = self.clock()
        d = self.durations
        median = d[len(d) // 2] if len(d) % 2 else (d[len(d) // 2 - 1] + d[len(d) // 2]) / 2
        limit = max(self.backup_after_s, 2 * median)
        slow = []
        for tid in sorted(self._running_tasks):
            t = self.tasks[tid]
            if t.committed is not None or t.executed or len(t.running) != 1:
                continue
            (attempt, node), = t.running.items()
            age = now - self.started.get((t.task_id, attempt), now)
            if age > limit:
                slow.append((age, t, node))
        out = []
        for _, t, node in sorted(slow, key=lambda x: -x[0]):
            others = [n for n in self.node_slots if n != node and self.credit(n) > 0
                      and self.in_flight[n] < self.node_slots[n]]
            if not others:
                continue
            target = max(others, key=lambda n: (self.credit(n), n))
            self.alone.add(t.task_id)
            self.backups_started += 1
            self.slow_nodes.add(node)
            out.append(self._start(t, target, True))
        return out

    def _release(self, task: Task, attempt: int, timed: bool = True) -> str | None:
        """The attempt no longer runs: free its credit (``timed``: it finished, so its
        duration feeds the backup threshold; a cancelled loser's does not)."""
        started = self.started.pop((task.task_id, attempt), None)
        node = task.running.pop(attempt, None)
        if timed and node is not None and started is not None:
            bisect.insort(self.durations, self.clock() - started)
        if node is not None:
            self.bytes_in_flight -= task.size
            self._busy(node, -1)
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
