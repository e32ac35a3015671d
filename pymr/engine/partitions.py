"""The master's partition book: which node reduces each partition, in which epoch, and
where a partition moves when its node is lost, its disk refuses it or it lags; no sockets.

Events come in with explicit times and the live nodes (node id -> shuffle endpoint, in the
master's order); a move comes back as a ``Move`` holding the ``JobUpdate`` each live node
must ack. The master sends those and restarts the moved partitions' fetch streams; once
every node named has acked, the book calls ``refill`` (the master re-commits the retained
map outputs to the new owners), so a script of events and acks tests all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..wire import protocol as p

#: A partition still merging this long into the reduce phase (and this many times longer
#: than the median partition took) on a node whose map tasks needed backups moves, once,
#: to a node that finished its own: a slow reducer is backed up like a slow mapper.
REDUCE_LAG_MIN_S = 1.0
REDUCE_LAG_FACTOR = 4.0


@dataclass(frozen=True, slots=True)
class Send:
    """An acked control message for a node; ``then`` runs on its ack."""

    node_id: str
    msg: p.Message
    then: Callable[[], None] | None = None


@dataclass(slots=True)
class Move:
    """Partitions given new owners in a new epoch, and the JobUpdates announcing it."""

    parts: list[int]
    epoch: int
    sends: list[Send] = field(default_factory=list)


@dataclass(slots=True)
class LagMove:
    """Lagging partitions backed up: the nodes they lagged on and the nodes taking them."""

    slow: set[str]
    fast: list[str]
    move: Move


class PartitionBook:
    """The partition map and everything that changes it during one job."""

    def __init__(self, job_id: str, next_seq: Callable[[], int],
                 refill: Callable[[list[int]], None]) -> None:
        self.job_id = job_id
        self._next_seq = next_seq
        self._refill = refill
        self.partition_map: dict[int, str] = {}
        self._by_node: dict[str, list[int]] | None = None  # see by_node
        self.done: dict[int, p.PartitionComplete] = {}
        self.done_at: dict[int, float] = {}
        self.lag_moved: set[int] = set()
        self.moved: dict[int, tuple[int, float]] = {}  # partition -> (epoch, time) of last move
        self.disk_failed: dict[int, set[str]] = {}      # partition -> nodes whose disk refused
        self.epoch = 1
        self.updating = 0               # JobUpdates not yet acked: no dispatch meanwhile

    # ---------------------------------------------------------------- placement
    def place(self, slots: dict[str, int], num_partitions: int = 0) -> dict[int, str]:
        """Round-robin over the nodes' slots (sorted by node id, at least one each); as
        many partitions as slots unless ``num_partitions`` is given."""
        order: list[str] = []
        for node_id in sorted(slots):
            order.extend([node_id] * max(1, slots[node_id]))
        nparts = num_partitions or len(order)
        self.partition_map = {i: order[i % len(order)] for i in range(nparts)}
        self._by_node = None
        return self.partition_map

    def owner(self, part: int) -> str | None:
        return self.partition_map.get(part)

    def owns(self, node_id: str, part: int) -> bool:
        return self.partition_map.get(part) == node_id

    def by_node(self) -> dict[str, list[int]]:
        """node -> its partitions, rebuilt after the partition map changed."""
        if self._by_node is None:
            by_node: dict[str, list[int]] = {}
            for part, node_id in self.partition_map.items():
                by_node.setdefault(node_id, []).append(part)
            self._by_node = by_node
        return self._by_node

    # ---------------------------------------------------------------- reduce progress
    def complete(self, node_id: str, msg: p.PartitionComplete, now: float) -> bool:
        """A partition's owner merged every task into it (a former owner is ignored)."""
        if not self.owns(node_id, msg.partition):
            return False
        self.done[msg.partition] = msg
        self.done_at.setdefault(msg.partition, now)
        return True

    def all_done(self) -> bool:
        return len(self.done) == len(self.partition_map)

    def stale_parts(self, parts: Iterable[int], sent_epoch: int) -> list[int]:
        """Partitions of an output whose chunks were sent under an older map (to a former
        owner): they are to be sent again to the owner now. None while a move is being
        acked (its refill covers the output)."""
        if not self.moved or not sent_epoch or self.updating:
            return []
        return [part for part in parts
                if self.moved.get(part, (0, 0.0))[0] > sent_epoch and part in self.partition_map]

    # ---------------------------------------------------------------- moves
    def node_lost(self, node_id: str, live: dict[str, str], now: float, num_tasks: int
                  ) -> Move | None:
        """A lost node's partitions move to the live nodes (None: it owned none)."""
        parts = [part for part, n in self.partition_map.items() if n == node_id]
        if not parts:
            return None
        return self.move(parts, live, now, num_tasks, exclude=node_id)

    def partition_lost(self, part: int, live: dict[str, str], now: float, num_tasks: int
                       ) -> Move:
        """Its owner lost the partition (executor crash): rebuild it, possibly there."""
        return self.move([part], live, now, num_tasks)

    def disk_refused(self, part: int, node_id: str, live: dict[str, str], now: float,
                     num_tasks: int) -> Move | None:
        """A node's disk refused a partition's spill: it moves to a live node whose disk
        has not refused it; None when no such node is left (the job fails)."""
        failed = self.disk_failed.setdefault(part, set())
        failed.add(node_id)
        targets = [n for n in live if n not in failed]
        if not targets:
            return None
        return self.move([part], live, now, num_tasks, exclude=node_id, targets=targets)

    def back_up_lagging(self, started: float, now: float, suspects: set[str],
                        live: dict[str, str], num_tasks: int) -> LagMove | None:
        """Partitions still merging long after the others finished move to the nodes that
        finished theirs (each partition once), rebuilt from the retained map outputs.
        ``started``: when the reduce phase began; ``suspects``: nodes seen to be slow."""
        if self.updating or self.all_done():
            return None
        # Only nodes already seen to be slow (their map tasks needed backups) are suspects:
        # a partition that merely has more to merge (its node took over a lost node's) is
        # left alone.  Without suspects there is nothing to judge (and this runs per turn).
        if not suspects:
            return None
        took = sorted(max(0.0, t - started) for part, t in self.done_at.items()
                      if part in self.done)
        if 2 * len(took) < len(self.partition_map):
            return None  # judge against the typical partition only once most are done
        limit = max(REDUCE_LAG_MIN_S, REDUCE_LAG_FACTOR * took[len(took) // 2])
        # A partition that moved (its node was lost) is timed from its move: it is being
        # rebuilt, not slow.
        lagging = [part for part in self.partition_map
                   if part not in self.done and part not in self.lag_moved
                   and self.partition_map[part] in suspects
                   and now - max(started, self.moved.get(part, (0, 0.0))[1]) >= limit]
        slow = {self.partition_map[part] for part in lagging}
        fast = [n for n in live if n not in slow]
        if not lagging or not fast:
            return None
        self.lag_moved.update(lagging)
        return LagMove(slow, fast, self.move(lagging, live, now, num_tasks, targets=fast))

    def move(self, parts: list[int], live: dict[str, str], now: float, num_tasks: int, *,
             exclude: str | None = None, targets: list[str] | None = None) -> Move:
        """Give ``parts`` to the least loaded live nodes (not ``exclude``, and only
        ``targets`` if given) in a new epoch. Every live node gets the new map in an acked
        ``JobUpdate`` (``num_tasks`` -1 while the input is still read); ``updating`` stays
        raised until all have acked, then ``refill(parts)`` runs."""
        load = {n: 0 for n in live if n != exclude and (targets is None or n in targets)}
        for part, n in self.partition_map.items():
            if n in load and part not in parts:
                load[n] += 1
        for part in parts:
            target = min(load, key=lambda n: (load[n], n))
            self.partition_map[part] = target
            self._by_node = None
            load[target] += 1
            self.done.pop(part, None)
        self.epoch += 1
        for part in parts:
            self.moved[part] = (self.epoch, now)
        acks_left = set(live)
        self.updating += 1

        def acked(node_id: str) -> Callable[[], None]:
            def done() -> None:
                acks_left.discard(node_id)
                if not acks_left:
                    self.updating -= 1
                    self._refill(parts)
            return done

        pmap = dict(self.partition_map)
        shuffle = dict(live)
        sends = [Send(n, p.JobUpdate(seq=self._next_seq(), job_id=self.job_id,
                                     partition_map=pmap, shuffle_endpoints=shuffle,
                                     epoch=self.epoch, num_tasks=num_tasks), acked(n))
                 for n in live]
        return Move(list(parts), self.epoch, sends)
