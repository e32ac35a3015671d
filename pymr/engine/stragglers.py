"""When a running map attempt is slow enough to get a backup, with explicit times.

Near the end of the map phase a few slow attempts (a busy machine, a slow disk) would keep
every other slot waiting. ``Scheduler.backups`` asks this unit which attempts are overdue
and starts one backup of each on another node; the first output committed wins. An attempt
is overdue once it has run longer than ``backup_after_s`` and twice the median duration of
the attempts that finished. The durations stay sorted, so the median is a lookup, not a
sort on every turn of the master's loop.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable


class Stragglers:
    """Start times of running attempts, durations of finished ones, and the backups made."""

    def __init__(self, backup_after_s: float) -> None:
        self.backup_after_s = backup_after_s
        self.started: dict[tuple[int, int], float] = {}   # (task, attempt) -> start time
        self.durations: list[float] = []     # sorted: the median is a lookup
        self.backups_started = 0
        self.slow_nodes: set[str] = set()     # nodes whose attempts needed a backup

    def start(self, task_id: int, attempt: int, now: float) -> None:
        self.started[(task_id, attempt)] = now

    def stop(self, task_id: int, attempt: int) -> float | None:
        """The attempt no longer runs: forget it; returns when it started (None: unknown)."""
        return self.started.pop((task_id, attempt), None)

    def took(self, seconds: float) -> None:
        """An attempt finished in ``seconds``: it feeds the threshold."""
        bisect.insort(self.durations, seconds)

    def overdue(self, attempts: Iterable[tuple[int, int, str]],
                now: float) -> list[tuple[int, str]]:
        """Of these running ``(task, attempt, node)``, the ``(task, node)`` that have run
        longer than the threshold, slowest first; none before any attempt has finished."""
        d = self.durations
        if not d:
            return []
        median = d[len(d) // 2] if len(d) % 2 else (d[len(d) // 2 - 1] + d[len(d) // 2]) / 2
        limit = max(self.backup_after_s, 2 * median)
        slow = []
        for task_id, attempt, node in attempts:
            age = now - self.started.get((task_id, attempt), now)
            if age > limit:
                slow.append((age, task_id, node))
        slow.sort(key=lambda x: -x[0])
        return [(task_id, node) for _, task_id, node in slow]

    def backed_up(self, node_id: str) -> None:
        """A backup started for an attempt running on this node."""
        self.backups_started += 1
        self.slow_nodes.add(node_id)
