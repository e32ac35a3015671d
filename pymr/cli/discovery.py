"""CLI glue for the discovery ladder (thin: the logic is in ladder.py and keeper.py).

``pymr status`` finds nodes with ``find``, ``pymr job`` with ``job_discovery`` (through
``placement.place``). Messages go to stderr, one line each.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..net.ladder import LadderOptions, LadderResult, climb
from ..net.security import ClusterKey
from ..runtime.placement import Discover, Found, PlacementRequest
from ..wording import count_of


def _say(text: str) -> None:
    print(f"pymr: {text}", file=sys.stderr, flush=True)


def seeds_of(args: argparse.Namespace) -> list[str]:
    """``--nodes`` as control endpoints (HOST alone: the default control port)."""
    from ..config import parse_nodes

    nodes = getattr(args, "nodes", None)
    return parse_nodes(nodes) if nodes else []


def find(args: argparse.Namespace, key: ClusterKey, *, want_status: bool,
         early_stop: bool = False, min_nodes: int | None = None,
         timeout_s: float | None = None) -> LadderResult:
    """Climb the ladder for this command: ``--nodes`` are seeds and skip mDNS and memory;
    without them, mDNS, then the members this machine remembers, then peer exchange."""
    from .common import cli_state, interface_spec

    return climb_from(key, seeds_of(args), interface_spec(args), getattr(args, "discover", None),
                      cli_state(args).home, want_status=want_status, early_stop=early_stop,
                      min_nodes=min_nodes, timeout_s=timeout_s)


def climb_from(key: ClusterKey, seeds: list[str], interface: str | None,
               discover_s: float | None, home: Any, *, want_status: bool,
               early_stop: bool = False, min_nodes: int | None = None,
               timeout_s: float | None = None) -> LadderResult:
    """``find`` with typed options (``discover_s``/``timeout_s`` None: the defaults)."""
    from ..config import DEFAULT_DISCOVER_S
    from ..net.discovery import select_addresses
    from ..net.peerstore import PeerStore
    from ..net.status import PROBE_TIMEOUT_S

    opts = LadderOptions(
        interfaces=None if seeds else select_addresses(interface),
        window_s=DEFAULT_DISCOVER_S if discover_s is None else discover_s, seeds=seeds,
        use_memory=not seeds, min_nodes=min_nodes, early_stop=early_stop,
        want_status=want_status,
        probe_timeout_s=PROBE_TIMEOUT_S if timeout_s is None else timeout_s,
        dial_timeout_s=min(PROBE_TIMEOUT_S if timeout_s is None else timeout_s, 1.5))
    return climb(key, opts, PeerStore(home))


def ignored_note(res: LadderResult | None) -> str:
    """``ignored 2 node(s): another cluster (...) (x2)``, or ""."""
    if res is None or not res.ignored:
        return ""
    reasons: dict[str, int] = {}
    for what, why in res.ignored:
        text = why if not what.startswith("remembered") else f"{what}: {why}"
        reasons[text] = reasons.get(text, 0) + 1
    return f"ignored {len(res.ignored)} node(s): " + "; ".join(
        r if n == 1 else f"{r} (x{n})" for r, n in sorted(reasons.items()))


def node_line(f: Any) -> str:
    """``n1 (198.18.80.11:7372, 1 slot, remembered)``."""
    slots = count_of(f.status.hello.slots, "slot") if f.status.hello else "?"
    return f"{f.status.name} ({f.endpoint.removeprefix('tcp://')}, {slots}, {f.how})"


def no_node_text(res: LadderResult) -> str:
    """What was tried, and what to do next."""
    text = f"no node found ({res.summary()})"
    note = ignored_note(res)
    if note:
        text += "; " + note
    return text + (". Run 'pymr doctor' to see what blocks discovery; is 'pymr node' running "
                   "on the other machines? Where multicast is blocked, pass --nodes HOST (one "
                   "member is enough: it names the others)")


def job_discovery(quiet: bool = False) -> Discover:
    """``pymr job``'s ``discover`` for ``placement.place``: the ladder, each rung reported
    on stderr (nothing with ``quiet``)."""
    say = (lambda text: None) if quiet else _say

    def discover(request: PlacementRequest, seeds: list[str], key: ClusterKey) -> Found:
        from ..runtime.state import open_state

        home = open_state(request.home, request.key_file).home
        res = climb_from(key, seeds, request.interface, request.discover_s, home,
                         want_status=False, early_stop=True, min_nodes=request.min_nodes)
        say(f"discovery: {res.summary()}")
        note = ignored_note(res)
        if note:
            say(note)
        for w in res.warnings:
            say(f"warning: {w}")
        for f in res.failed:
            if f.status.hello is not None and f.status.error:
                say(f"node {f.status.name}: {f.status.error}")
            elif f.origin == "seeds":
                say(f"--nodes {f.endpoint.removeprefix('tcp://')}: {f.status.error}")
        usable = res.members
        if not usable:
            return Found(why_none=no_node_text(res))
        if request.min_nodes and len(usable) < request.min_nodes:
            say(f"warning: only {len(usable)} of the {request.min_nodes} nodes asked for "
                "answered")
        say(f"using {len(usable)} node(s): " + ", ".join(node_line(f) for f in usable))
        return Found([f.endpoint for f in usable])

    return discover
