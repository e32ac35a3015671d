"""Finding the members of this machine's cluster: the discovery ladder.

mDNS fails on many real networks (access points that drop multicast or isolate clients,
firewalls on UDP 5353, a VPN that takes the default interface), so clients climb a
ladder, each rung reported:

1. ``mdns``: browse ``_pymr._tcp`` on the chosen interfaces (``discovery.Browser``);
2. ``memory``: the members this machine reached before (``peerstore``);
3. ``peers``: peer exchange: every member reached names the members it knows;
4. ``seeds``: the addresses the user gave (``--nodes``).

Remembered members and seeds are dialled while mDNS listens (their hellos cost no
multicast and come back in milliseconds). Every member found by any rung is used only
after an authenticated hello (same cluster key, same versions); a remembered address
that now answers as another node, or with another cluster's key, is forgotten. A member
found by several rungs is credited to the first of them in the order above (seeds before
peers: the user named it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..wording import count_of
from .discovery import Browser, BrowseResult, NodeRecord
from .members import peer_entries
from .peerstore import PeerStore, Remembered
from .security import ClusterKey
from .status import PROBE_TIMEOUT_S, NodeStatus, probe

log = logging.getLogger(__name__)

RUNGS = ("mdns", "memory", "peers", "seeds")
RUNG_LABELS = {"mdns": "mDNS", "memory": "remembered", "peers": "peer exchange",
               "seeds": "--nodes"}
#: Hello deadline for remembered, seed and peer addresses: members answer from their
#: loop in milliseconds; an address that cannot be connected fails at once (fail_fast).
DIAL_TIMEOUT_S = 1.5
#: With ``early_stop`` (``pymr job``): once remembered members or seeds answered, mDNS
#: listens at least this long (a fresh browser hears most nodes in 0.1-0.25 s) and the job
#: starts; nodes that mDNS hears later join the job while it runs.
EARLY_STOP_MIN_S = 0.3
#: Peer exchange rounds: each asks the members the previous round found.
MAX_PEER_ROUNDS = 4
_POLL_S = 0.05


@dataclass(frozen=True)
class LadderOptions:
    """How to climb: ``interfaces`` None skips mDNS (``--nodes``)."""

    interfaces: list[str] | None
    window_s: float = 1.5
    seeds: list[str] = field(default_factory=list)
    use_memory: bool = True
    min_nodes: int | None = None
    early_stop: bool = False
    want_status: bool = False
    probe_timeout_s: float = PROBE_TIMEOUT_S
    dial_timeout_s: float = DIAL_TIMEOUT_S


@dataclass
class Found:
    """One address dialled, the rung that named it and what its hello said."""

    status: NodeStatus
    origin: str                          # the rung that named this address
    via: str = ""                        # peers: the member that named it
    remembered: Remembered | None = None
    rung: str = ""                       # the rung credited with the node (see module doc)

    def __post_init__(self) -> None:
        self.rung = self.rung or self.origin

    @property
    def endpoint(self) -> str:
        return self.status.endpoint

    @property
    def advertised(self) -> bool:
        """Its mDNS record was heard (whichever rung dialled it first)."""
        return self.status.record is not None

    @property
    def how(self) -> str:
        """``mDNS``, ``remembered``, ``peer exchange via n1``, ``--nodes``."""
        label = RUNG_LABELS[self.rung]
        return f"{label} via {self.via}" if self.via else label

    def to_json(self) -> dict[str, Any]:
        return dict(self.status.to_json(), rung=self.rung, via=self.via or None)


@dataclass
class RungReport:
    """What one rung tried and found."""

    rung: str
    tried: int = 0         # addresses dialled (mDNS: records of this cluster heard)
    answered: int = 0
    found: int = 0         # members credited to this rung
    note: str = ""

    def text(self) -> str:
        label = RUNG_LABELS[self.rung]
        if self.note:
            return f"{label}: {self.note}"
        if self.rung == "mdns":
            return f"{label}: {count_of(self.found, 'node')}"
        if self.rung == "peers":
            return f"{label}: {self.tried} named, {self.answered} answered"
        return f"{label}: {self.answered} of {self.tried} answered"

    def to_json(self) -> dict[str, Any]:
        return {"rung": self.rung, "tried": self.tried, "answered": self.answered,
                "found": self.found, "note": self.note}


@dataclass
class LadderResult:
    members: list[Found] = field(default_factory=list)    # usable, one per node id
    failed: list[Found] = field(default_factory=list)     # dialled, no usable answer
    ignored: list[tuple[str, str]] = field(default_factory=list)   # (what, why)
    rungs: dict[str, RungReport] = field(default_factory=dict)
    browse: BrowseResult | None = None
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def summary(self, timed: bool = True) -> str:
        """One line: every rung tried, in order (and the time the climb took)."""
        parts = "; ".join(self.rungs[r].text() for r in RUNGS if r in self.rungs)
        return parts + (f" ({self.elapsed_s:.2f} s)" if timed else "")

    def to_json(self) -> dict[str, Any]:
        return {"elapsed_s": round(self.elapsed_s, 3),
                "rungs": [self.rungs[r].to_json() for r in RUNGS if r in self.rungs],
                "members": [f.to_json() for f in self.members],
                "failed": [f.to_json() for f in self.failed],
                "ignored": [{"what": w, "reason": r} for w, r in self.ignored],
                "warnings": list(self.warnings)}


def climb(key: ClusterKey, opts: LadderOptions, store: PeerStore | None, *,
          heard: BrowseResult | None = None,
          probe_fn: Callable[..., list[NodeStatus]] = probe) -> LadderResult:
    """Find and verify the members; remember them in ``store`` (None: no memory).

    ``heard``: what an mDNS browse already found (``pymr doctor`` browses each interface
    apart); the ladder then does not browse itself.
    """
    return _Climb(key, opts, store, probe_fn).run(heard)


class _Climb:
    def __init__(self, key: ClusterKey, opts: LadderOptions, store: PeerStore | None,
                 probe_fn: Callable[..., list[NodeStatus]]) -> None:
        self.key = key
        self.opts = opts
        self.store = store
        self.probe_fn = probe_fn
        self.lock = threading.Lock()
        self.dialled: dict[str, Found] = {}        # endpoint -> the dial
        self.remembered: list[Remembered] = []
        self.result = LadderResult()
        self.fallback_done = threading.Event()

    # ------------------------------------------------------------ dialling
    def _dial(self, cands: list[Found], timeout_s: float) -> list[Found]:
        """Hello every candidate not dialled yet; returns those that answered usably."""
        with self.lock:
            fresh = [c for c in cands if c.endpoint not in self.dialled]
            for c in fresh:
                self.dialled[c.endpoint] = c
        if not fresh:
            return []
        sts = self.probe_fn([(c.endpoint, c.status.record) for c in fresh], self.key,
                            timeout_s=timeout_s, want_status=self.opts.want_status,
                            want_peers=True, fail_fast=True)
        for c, st in zip(fresh, sts, strict=True):
            c.status = st
        return [c for c in fresh if c.status.reachable]

    def _exchange(self, answered: list[Found]) -> None:
        """Peer exchange: ask every member found for the members it knows, in rounds."""
        for _ in range(MAX_PEER_ROUNDS):
            named: list[Found] = []
            for f in answered:
                hello = f.status.hello
                if hello is None:
                    continue
                for peer in peer_entries(hello.peers):
                    named.append(Found(NodeStatus(endpoint=peer["endpoint"]), "peers",
                                       via=hello.name))
            if not named:
                return
            answered = self._dial(named, self.opts.dial_timeout_s)

    def _fallback(self) -> None:
        """Rungs that need no multicast: memory and seeds, then peer exchange."""
        try:
            cands: list[Found] = []
            if self.store is not None and self.opts.use_memory:
                self.remembered = self.store.members(self.key.fingerprint)
                cands += [Found(NodeStatus(endpoint=m.endpoint), "memory", remembered=m)
                          for m in self.remembered]
            cands += [Found(NodeStatus(endpoint=ep), "seeds") for ep in self.opts.seeds]
            self._exchange(self._dial(cands, self.opts.dial_timeout_s))
        finally:
            self.fallback_done.set()

    def _usable_ids(self) -> set[str]:
        with self.lock:
            return {f.status.node_id for f in self.dialled.values() if f.status.reachable}

    # ------------------------------------------------------------ the climb
    def run(self, heard: BrowseResult | None = None) -> LadderResult:
        started = time.monotonic()
        opts = self.opts
        browser = Browser(opts.interfaces).start() \
            if opts.interfaces is not None and heard is None else None
        try:
            if browser is None:
                self._fallback()
                self.result.browse = heard
                records: list[NodeRecord] = heard.nodes if heard is not None else []
            else:
                worker = threading.Thread(target=self._fallback, name="pymr-ladder",
                                          daemon=True)
                worker.start()
                self._listen(browser, started)
                worker.join()
                self.result.browse = browser.result(self.key.fingerprint)
                records = self.result.browse.nodes
            known = self._usable_ids()
            for r in records:      # an address dialled already, and advertised too
                f = self.dialled.get(r.control_endpoint)
                if f is not None and f.status.record is None:
                    f.status.record = r
            mdns = [Found(NodeStatus(endpoint=r.control_endpoint, record=r), "mdns")
                    for r in records if r.node_id not in known]
            self._exchange(self._dial(mdns, opts.probe_timeout_s))
        finally:
            if browser is not None:
                browser.close()
        self.result.elapsed_s = time.monotonic() - started
        self._sort_out(records)
        self._remember()
        return self.result

    def _listen(self, browser: Browser, started: float) -> None:
        """Browse until the window ends, ``min_nodes`` are found, or (early stop) the
        remembered members or seeds answered and mDNS had its minimum."""
        opts = self.opts
        deadline = started + opts.window_s
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            browser.poll(min(deadline - now, _POLL_S))
            if opts.min_nodes:
                seen = {r.node_id for r in browser.result(self.key.fingerprint).nodes}
                if len(seen | self._usable_ids()) >= opts.min_nodes:
                    return
            if opts.early_stop and self.fallback_done.is_set() and self._usable_ids() and \
                    time.monotonic() - started >= EARLY_STOP_MIN_S:
                return

    # ------------------------------------------------------------ results
    def _sort_out(self, records: list[NodeRecord]) -> None:
        res = self.result
        mdns_ids = {r.node_id: r for r in records}
        memory_ids = {m.node_id for m in self.remembered}
        seeds = set(self.opts.seeds)
        order = {r: i for i, r in enumerate(("mdns", "memory", "seeds", "peers"))}
        by_id: dict[str, Found] = {}
        for f in self.dialled.values():
            st = f.status
            if not st.reachable:
                continue
            nid = st.node_id
            f.rung = ("mdns" if nid in mdns_ids else
                      "memory" if nid in memory_ids or f.origin == "memory" else
                      "seeds" if f.endpoint in seeds else "peers")
            if f.rung != "peers":
                f.via = ""
            if st.record is None and nid in mdns_ids:
                st.record = mdns_ids[nid]
            other = by_id.get(nid)
            if other is None:
                by_id[nid] = f
                continue
            if other.status.hello is not None and st.hello is not None and \
                    other.status.hello.incarnation != st.hello.incarnation:
                res.warnings.append(
                    f"two live nodes share the id {nid} ({other.endpoint.removeprefix('tcp://')}"
                    f" and {f.endpoint.removeprefix('tcp://')}): a copied pymr state "
                    "directory; using the first. Delete 'node_id' on one of them and "
                    "restart it")
            if order[f.rung] < order[other.rung]:
                by_id[nid] = f
        res.members = sorted(by_id.values(), key=lambda f: (order[f.rung], f.status.name))
        used = {id(f) for f in res.members}
        member_ids = set(by_id)
        for f in self.dialled.values():
            if id(f) in used or f.status.reachable and f.status.node_id in member_ids:
                continue
            res.failed.append(f)
            if f.advertised:
                f.rung, f.via = "mdns", ""
            m = f.remembered
            if m is None:
                continue
            if f.status.failure == "key":
                res.ignored.append((f"remembered {m.name} ({m.address})",
                                    "it now answers with another cluster's key; forgotten"))
            elif f.status.hello is not None and f.status.node_id != m.node_id:
                res.ignored.append((f"remembered {m.name} ({m.address})",
                                    f"that address now answers as node "
                                    f"{f.status.node_id}; forgotten"))
        # A remembered member reached at its address under another node id: see above.
        for f in res.members:
            m = f.remembered
            if m is not None and f.status.node_id != m.node_id:
                res.ignored.append((f"remembered {m.name} ({m.address})",
                                    f"that address now answers as node {f.status.name} "
                                    f"({f.status.node_id}); forgotten"))
        if res.browse is not None:
            res.ignored += [(i.instance, i.reason) for i in res.browse.ignored]
        self._reports(records)

    def _reports(self, records: list[NodeRecord]) -> None:
        res = self.result
        for rung in RUNGS:
            rep = RungReport(rung)
            dialled = [f for f in self.dialled.values() if f.origin == rung]
            rep.tried = len(dialled)
            rep.answered = sum(1 for f in dialled if f.status.reachable)
            rep.found = sum(1 for f in res.members if f.rung == rung)
            res.rungs[rung] = rep
        mdns = res.rungs["mdns"]
        if self.opts.interfaces is None and res.browse is None:
            mdns.note = "skipped (--nodes)"
        else:
            where = ", ".join(res.browse.interfaces) if res.browse else "-"
            mdns.tried = len(records)
            heard = count_of(len(records), "node")
            mdns.note = (f"{heard} in {res.browse.elapsed_s if res.browse else 0:.1f} s on "
                         f"{where}" if records else
                         f"no answer in {res.browse.elapsed_s if res.browse else 0:.1f} s on "
                         f"{where}")
        mem = res.rungs["memory"]
        if not self.opts.use_memory:
            mem.note = "skipped (--nodes)"
        elif not self.remembered:
            mem.note = "nothing remembered yet"
        peers = res.rungs["peers"]
        if not peers.tried:
            peers.note = "no new member named" if any(
                f.status.reachable for f in self.dialled.values()) else "nobody to ask"
        seeds = res.rungs["seeds"]
        if not self.opts.seeds:
            seeds.note = "none"

    def _remember(self) -> None:
        if self.store is None:
            return
        now = time.time()
        seen = [Remembered(node_id=f.status.node_id, name=f.status.name, endpoint=f.endpoint,
                           fingerprint=self.key.fingerprint, last_seen=now)
                for f in self.result.members]
        gone = [f.remembered.node_id for f in self.result.failed
                if f.remembered is not None and (f.status.failure == "key" or (
                    f.status.hello is not None and f.status.node_id != f.remembered.node_id))]
        self.store.forget(gone)
        self.store.record(seen)
