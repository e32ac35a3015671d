"""What a node knows of its cluster, for peer exchange.

A node answers a hello that asks for peers (``Hello.want_peers``) with the members it
knows, so that one address finds the whole cluster where multicast is blocked. It knows
them from its seeds (``pymr node --join``), its memory (``peers.json``), the mDNS records
it hears, other members' lists, and the nodes that said hello to it as members
(``Hello.member``: they joined through it). The keeper (``keeper.py``) dials each one and
keeps what answers; this book is the shared state (the daemon's loop reads it, the
keeper's thread writes it), hence the lock. No sockets here.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import split_endpoint

#: A member is named to others while it answered (or was learned) this recently.
FRESH_S = 600.0
#: At most this many members in one answer, and learned from one answer.
MAX_PEERS = 128
#: At most this many entries in the book (a member may not make it grow without bound).
MAX_BOOK = 1024


@dataclass
class Entry:
    """One member (or candidate) by its control endpoint."""

    endpoint: str
    node_id: str = ""
    name: str = ""
    source: str = ""           # how it was first learned: seed, memory, mdns, peer, joined
    via: str = ""              # peer: the member that named it
    learned_at: float = 0.0
    ok_at: float = 0.0         # last authenticated hello that answered
    failed_at: float = 0.0
    failures: int = 0          # consecutive failed hellos
    next_check: float = 0.0    # when the keeper dials it next
    dropped: str = ""          # why it is named no more (another node id, another cluster)

    def to_peer(self) -> dict[str, str]:
        return {"node_id": self.node_id, "name": self.name, "endpoint": self.endpoint}


def peer_entries(raw: list[dict[str, str]]) -> list[dict[str, str]]:
    """The well-formed entries of a peer list another member sent (bounded)."""
    out = []
    for item in raw[:MAX_PEERS]:
        endpoint = item.get("endpoint", "")
        if split_endpoint(endpoint) is None:
            continue
        out.append({"node_id": item.get("node_id", "")[:64], "name": item.get("name", "")[:200],
                    "endpoint": endpoint})
    return out


class MemberBook:
    """The members a node knows, by control endpoint; thread-safe."""

    def __init__(self, own_id: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.own_id = own_id
        self.own_endpoint = ""
        self.clock = clock
        self.changed = threading.Event()      # set when a new candidate arrives
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}

    # ------------------------------------------------------------ learning
    def learn(self, endpoint: str, node_id: str = "", name: str = "", source: str = "peer",
              via: str = "") -> bool:
        """A candidate; True if it is new. Never ourselves, never a malformed endpoint."""
        if split_endpoint(endpoint) is None or endpoint == self.own_endpoint or \
                (node_id and node_id == self.own_id):
            return False
        with self._lock:
            entry = self._entries.get(endpoint)
            if entry is not None:
                if entry.dropped and node_id and node_id != entry.node_id:
                    # Someone names another node there now: try it again.
                    entry.dropped, entry.node_id, entry.next_check = "", node_id, 0.0
                    self.changed.set()
                if name and not entry.name:
                    entry.name = name
                return False
            if len(self._entries) >= MAX_BOOK:
                return False
            self._entries[endpoint] = Entry(endpoint=endpoint, node_id=node_id, name=name,
                                            source=source, via=via, learned_at=self.clock())
        self.changed.set()
        return True

    def joined(self, member: dict[str, str]) -> None:
        """A node said hello as a member (``Hello.member``): it joined through us."""
        self.learn(member.get("endpoint", ""), member.get("node_id", "")[:64],
                   member.get("name", "")[:200], source="joined")

    def learn_peers(self, raw: list[dict[str, str]], via: str) -> int:
        """Merge a member's peer list; returns how many were new."""
        return sum(self.learn(p["endpoint"], p["node_id"], p["name"], source="peer", via=via)
                   for p in peer_entries(raw))

    # ------------------------------------------------------------ verification
    def due(self) -> list[Entry]:
        """Entries the keeper should dial now (copies)."""
        now = self.clock()
        with self._lock:
            return [dataclasses.replace(e) for e in self._entries.values()
                    if not e.dropped and e.next_check <= now]

    def next_due(self) -> float | None:
        """When the next entry is due (the book's clock), or None if there is none."""
        with self._lock:
            times = [e.next_check for e in self._entries.values() if not e.dropped]
        return min(times) if times else None

    def answered(self, endpoint: str, node_id: str, name: str, next_check_s: float) -> None:
        now = self.clock()
        with self._lock:
            e = self._entries.get(endpoint)
            if e is None:
                return
            e.node_id, e.name, e.ok_at, e.failures = node_id, name, now, 0
            e.next_check, e.dropped = now + next_check_s, ""
            # The same node answered before at another endpoint (it moved): name this one.
            for other in self._entries.values():
                if other.endpoint != endpoint and other.node_id == node_id and \
                        not other.dropped and 0 < other.ok_at < now:
                    other.dropped = f"now answers at {endpoint}"

    def failed(self, endpoint: str, retry_s: float) -> None:
        now = self.clock()
        with self._lock:
            e = self._entries.get(endpoint)
            if e is not None:
                e.failed_at, e.failures = now, e.failures + 1
                e.next_check = now + retry_s

    def drop(self, endpoint: str, why: str) -> None:
        """Name it no more: its address answers as another node, or another cluster."""
        with self._lock:
            e = self._entries.get(endpoint)
            if e is not None:
                e.dropped = why

    # ------------------------------------------------------------ answering
    def answer(self) -> list[dict[str, str]]:
        """The members to name to a client: those that answered recently, and those just
        learned and not yet failing (the client verifies each before use)."""
        now = self.clock()
        with self._lock:
            fresh = [e for e in self._entries.values() if not e.dropped and (
                (e.ok_at and now - e.ok_at <= FRESH_S and e.ok_at >= e.failed_at)
                or (not e.ok_at and e.failures == 0 and now - e.learned_at <= FRESH_S))]
        fresh.sort(key=lambda e: -max(e.ok_at, e.learned_at))
        return [e.to_peer() for e in fresh[:MAX_PEERS]]

    def members(self) -> list[Entry]:
        """Every entry that answered at least once and is not dropped (copies)."""
        with self._lock:
            return [dataclasses.replace(e) for e in self._entries.values()
                    if e.ok_at and not e.dropped]
