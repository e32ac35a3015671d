"""A node's view of its cluster, kept up to date in a background thread.

Where multicast is blocked a node cannot rely on mDNS to be found or to find the others.
The keeper dials, with an authenticated hello that names this node as a member
(``Hello.member``) and asks for peers (``Hello.want_peers``):

* its static seeds (``pymr node --join HOST``), redialled with backoff while the node runs,
  so a node started before its seed still joins;
* every member it hears of: remembered in its home, heard by mDNS, named by another
  member, or joined through it.

What answers goes into the book the daemon answers peer requests from (``members.py``)
and into the node's memory (``peerstore.py``); an address that answers with another
cluster's key is dropped. Each dial also tells the member dialled about this node, so one
seed is enough for the whole cluster to learn of a new node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .members import MemberBook
from .peerstore import PeerStore, Remembered
from .security import ClusterKey
from .status import probe

log = logging.getLogger(__name__)

#: A member that answered is dialled again after this long (refreshes memory and book).
REFRESH_S = 60.0
#: A seed that does not answer is redialled after 1, 2, 4 ... seconds, at most this long.
SEED_BACKOFF_MAX_S = 30.0
#: Any other member that does not answer: 5, 10, 20 ... seconds, at most this long.
MEMBER_BACKOFF_MAX_S = 300.0
#: How long the keeper waits for hellos (the daemon answers from its loop, in ms).
KEEPER_PROBE_TIMEOUT_S = 2.0
#: The longest the keeper sleeps (new candidates wake it earlier).
MAX_SLEEP_S = 5.0


def backoff_s(source: str, failures: int) -> float:
    """Seconds until a member that failed ``failures`` times in a row is dialled again."""
    if source == "seed":
        return float(min(SEED_BACKOFF_MAX_S, 2 ** max(0, failures - 1)))
    return float(min(MEMBER_BACKOFF_MAX_S, 5 * 2 ** max(0, failures - 1)))


class PeerKeeper:
    """Redials seeds with backoff and verifies every member the node hears of."""

    def __init__(self, book: MemberBook, key: ClusterKey, *, me: dict[str, str],
                 seeds: list[str], store: PeerStore | None,
                 say: Callable[[str], None] = lambda text: log.info("%s", text),
                 probe_fn: Callable[..., list[Any]] = probe) -> None:
        self.book = book
        self.key = key
        self.me = me
        self.store = store
        self.say = say
        self.probe_fn = probe_fn
        self.seeds = list(dict.fromkeys(seeds))
        self._seed_state: dict[str, str] = {}     # endpoint -> "ok" | "failing" (for messages)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        book.own_endpoint = me.get("endpoint", "")
        for endpoint in self.seeds:
            book.learn(endpoint, source="seed")
        if store is not None:
            for m in store.members(key.fingerprint):
                book.learn(m.endpoint, m.node_id, m.name, source="memory")

    def heard(self, rec: Any) -> None:
        """An mDNS record of a node (from the advertiser's passive watch)."""
        if rec.fingerprint == self.key.fingerprint:
            self.book.learn(rec.control_endpoint, rec.node_id, rec.name, source="mdns")

    # ------------------------------------------------------------ thread
    def start(self) -> PeerKeeper:
        self._thread = threading.Thread(target=self._run, name="pymr-peer-keeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.book.changed.set()
        if self._thread is not None:
            self._thread.join(timeout=KEEPER_PROBE_TIMEOUT_S + 5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.book.changed.clear()
            try:
                wait_s = self.step()
            except Exception:   # peer exchange is a bonus: never take the node down
                log.exception("peer keeper round failed")
                wait_s = MAX_SLEEP_S
            self.book.changed.wait(wait_s)

    # ------------------------------------------------------------ one round
    def step(self) -> float:
        """Dial every member that is due; returns how long to sleep."""
        due = self.book.due()
        if due:
            results = self.probe_fn([(e.endpoint, None) for e in due], self.key,
                                    timeout_s=KEEPER_PROBE_TIMEOUT_S, want_status=False,
                                    want_peers=True, member=self.me, fail_fast=True)
            remember: list[Remembered] = []
            forget: list[str] = []
            now = time.time()
            for entry, st in zip(due, results, strict=True):
                if self._stop.is_set():
                    return 0.0
                if st.hello is not None and not st.error:
                    self._answered(entry, st, remember, forget, now)
                else:
                    self._failed(entry, st, forget)
            if self.store is not None:
                self.store.forget(forget)
                self.store.record(remember)
        upcoming = self.book.next_due()
        if upcoming is None:
            return MAX_SLEEP_S
        return max(0.05, min(MAX_SLEEP_S, upcoming - self.book.clock()))

    def _answered(self, entry: Any, st: Any, remember: list[Remembered], forget: list[str],
                  now: float) -> None:
        hello = st.hello
        if hello.node_id == self.book.own_id:
            self.book.drop(entry.endpoint, "this node itself")
            return
        if entry.node_id and entry.node_id != hello.node_id and entry.source != "seed":
            log.info("%s answers as node %s, no longer %s", entry.endpoint, hello.node_id,
                     entry.node_id)
            forget.append(entry.node_id)
        self.book.answered(entry.endpoint, hello.node_id, hello.name, REFRESH_S)
        learned = self.book.learn_peers(hello.peers, via=hello.name)
        remember.append(Remembered(node_id=hello.node_id, name=hello.name,
                                   endpoint=entry.endpoint, fingerprint=self.key.fingerprint,
                                   last_seen=now))
        if entry.source == "seed" and self._seed_state.get(entry.endpoint) != "ok":
            self._seed_state[entry.endpoint] = "ok"
            self.say(f"reached seed {entry.endpoint.removeprefix('tcp://')} ({hello.name}); "
                     f"it named {learned} member(s) new to this node")

    def _failed(self, entry: Any, st: Any, forget: list[str]) -> None:
        if st.failure == "key" and entry.source != "seed":
            # The address serves another cluster now: forget the member we knew there.
            self.book.drop(entry.endpoint, "it holds another cluster's key")
            if entry.node_id:
                forget.append(entry.node_id)
            return
        self.book.failed(entry.endpoint, backoff_s(entry.source, entry.failures + 1))
        if entry.source == "seed" and self._seed_state.get(entry.endpoint) is None:
            self._seed_state[entry.endpoint] = "failing"
            self.say(f"seed {entry.endpoint.removeprefix('tcp://')}: {st.error}; redialling "
                     f"with backoff (up to every {SEED_BACKOFF_MAX_S:g} s)")
        elif entry.source == "seed" and self._seed_state.get(entry.endpoint) == "ok":
            self._seed_state[entry.endpoint] = "failing"
            self.say(f"seed {entry.endpoint.removeprefix('tcp://')} stopped answering "
                     f"({st.error}); redialling with backoff")
