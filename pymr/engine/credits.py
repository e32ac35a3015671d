"""Which node gets the next map task: each node's credit, pauses and turns, with no sockets.

A node may hold ``slots * (1 + prefetch)`` tasks at once; its *credit* is what it may
still receive. ``Scheduler`` decides which task runs and counts; this unit only says which
node has room, so the credit rules can be read and tested apart from the commit rule.

The master asks for the best node and for the free capacity of all nodes on every turn of
its loop, so neither may visit every node: the nodes with credit are a heap whose entries
carry a version (a change pushes a new entry; older ones are skipped as stale), and the
free capacity is a running total (bench/SCALE.md). A paused node (its task socket was
full) has no credit until its pause ends; the clock is passed in.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable


class NodeCredits:
    """Each node's slots and tasks in flight, its pause, and when it was last served."""

    def __init__(self, *, prefetch: int, clock: Callable[[], float]) -> None:
        self.prefetch = prefetch
        self.clock = clock
        self.slots: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}     # tasks each node holds (running, not executed)
        self.last_served: dict[str, int] = {}   # node -> its turn (serve_count) when served
        self.serve_count = 0
        self.paused: dict[str, float] = {}      # node -> when its pause ends
        self._capacity = 0                      # sum of slots * (1 + prefetch)
        self._in_flight_total = 0
        self._heap: list[tuple[int, int, int, int, str]] = []  # (-credit, served, order, v, n)
        self._version: dict[str, int] = {}
        self._order: dict[str, int] = {}
        self._added = 0

    def add(self, node_id: str, slots: int) -> None:
        """A node joins, or a known node's slots change."""
        if node_id in self.slots:
            self._capacity -= self.cap(node_id)
        else:  # ties on credit and turn go to the node added first, as in ``slots``
            self._added += 1
            self._order[node_id] = self._added
        self.slots[node_id] = slots
        self._capacity += self.cap(node_id)
        self.in_flight.setdefault(node_id, 0)
        self._push(node_id)

    def remove(self, node_id: str) -> None:
        """A node is gone: its slots and the tasks it held no longer count."""
        if node_id in self.slots:
            self._capacity -= self.cap(node_id)
        self.slots.pop(node_id, None)
        self._in_flight_total -= self.in_flight.pop(node_id, 0)
        self._version[node_id] = self._version.get(node_id, 0) + 1
        self.paused.pop(node_id, None)

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
        return max(0, self.cap(node_id) - self.in_flight.get(node_id, 0))

    def cap(self, node_id: str) -> int:
        slots = self.slots.get(node_id, 0)
        return slots + self.prefetch * slots

    def busy(self, node_id: str, delta: int) -> None:
        """The node holds ``delta`` more tasks (a start) or fewer (an end); gone nodes are
        not counted."""
        if node_id in self.in_flight:
            self.in_flight[node_id] += delta
            self._in_flight_total += delta
            self._push(node_id)

    def served(self, node_id: str) -> None:
        """The node is handed a task: it has had its turn (the start's ``busy`` re-files it)."""
        self.serve_count += 1
        self.last_served[node_id] = self.serve_count

    def best(self) -> str | None:
        """The node with the most credit, ties to the one served longest ago."""
        paused = []
        best = None
        while self._heap:
            entry = self._heap[0]
            node = entry[4]
            if self._version.get(node) != entry[3] or node not in self.slots:
                heapq.heappop(self._heap)
            elif self.credit(node) <= 0:      # paused for now: keep its entry
                paused.append(heapq.heappop(self._heap))
            else:
                best = node
                break
        for entry in paused:
            heapq.heappush(self._heap, entry)
        return best

    def place_avoiding(self, avoid: Iterable[set[str]]) -> tuple[int, str] | None:
        """For queued tasks in order, each with the nodes where it raised: the index of the
        first that can run now and its node. A task waits for a node where it has not
        failed unless every node has failed it already; most credit first, ties to the
        node served longest ago (a scan, but only while such tasks wait)."""
        nodes = [n for n in self.slots if self.credit(n) > 0]
        for i, failed_on in enumerate(avoid):
            fresh = [n for n in nodes if n not in failed_on]
            if fresh or all(n in failed_on for n in self.slots):
                return i, max(fresh or nodes,
                              key=lambda n: (self.credit(n), -self.last_served.get(n, -1)))
        return None

    def backup_target(self, besides: str) -> str | None:
        """Where a backup of an attempt running on ``besides`` goes: another node with an
        idle slot (not merely prefetch room), the most credit first, ties by name."""
        others = [n for n in self.slots if n != besides and self.credit(n) > 0
                  and self.in_flight[n] < self.slots[n]]
        return max(others, key=lambda n: (self.credit(n), n)) if others else None

    def room(self) -> int:
        """Sum of every node's credit, without visiting every node."""
        room = self._capacity - self._in_flight_total
        for node in list(self.paused):
            if node in self.slots and self.credit(node) == 0 and node in self.paused:
                room -= self.cap(node) - self.in_flight[node]
        return room

    def _push(self, node_id: str) -> None:
        """The node's credit or turn changed: a new heap entry (older ones are stale)."""
        version = self._version.get(node_id, 0) + 1
        self._version[node_id] = version
        free = self.cap(node_id) - self.in_flight[node_id]
        if free > 0:
            heapq.heappush(self._heap, (-free, self.last_served.get(node_id, -1),
                                        self._order[node_id], version, node_id))
        if len(self._heap) > 4 * len(self.slots) + 64:
            self._heap = [e for e in self._heap if self._version.get(e[4]) == e[3]]
            heapq.heapify(self._heap)
