"""CLI glue for the discovery ladder (thin: the logic is in ladder.py and keeper.py).

``pymr job`` and ``pymr status`` find nodes with ``find``; ``pymr node --join`` keeps its
seeds with ``start_keeper``. Messages go to stderr, one line each.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .ladder import LadderOptions, LadderResult, climb
from .security import ClusterKey
from .wording import count_of


def _say(text: str) -> None:
    print(f"pymr: {text}", file=sys.stderr, flush=True)


def seeds_of(args: argparse.Namespace) -> list[str]:
    """``--nodes`` as control endpoints (HOST alone: the default control port)."""
    from .config import parse_nodes

    nodes = getattr(args, "nodes", None)
    return parse_nodes(nodes) if nodes else []


def find(args: argparse.Namespace, key: ClusterKey, *, want_status: bool,
         early_stop: bool = False, min_nodes: int | None = None,
         timeout_s: float | None = None) -> LadderResult:
    """Climb the ladder for this command: ``--nodes`` are seeds and skip mDNS and memory;
    without them, mDNS, then the members this machine remembers, then peer exchange."""
    from .cli_common import cli_state, interface_spec
    from .config import DEFAULT_DISCOVER_S
    from .discovery import select_addresses
    from .peerstore import PeerStore
    from .status import PROBE_TIMEOUT_S

    seeds = seeds_of(args)
    discover = getattr(args, "discover", None)
    opts = LadderOptions(
        interfaces=None if seeds else select_addresses(interface_spec(args)),
        window_s=DEFAULT_DISCOVER_S if discover is None else discover, seeds=seeds,
        use_memory=not seeds, min_nodes=min_nodes, early_stop=early_stop,
        want_status=want_status,
        probe_timeout_s=PROBE_TIMEOUT_S if timeout_s is None else timeout_s,
        dial_timeout_s=min(PROBE_TIMEOUT_S if timeout_s is None else timeout_s, 1.5))
    return climb(key, opts, PeerStore(cli_state(args).home))


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


def discover_for_job(args: argparse.Namespace) -> tuple[list[str], ClusterKey] | None:
    """Nodes for ``pymr job``: the ladder, when this machine has a cluster key.

    None means: run on the embedded local cluster.
    """
    from .cli_common import cli_state, interface_spec, need_key
    from .errors import DiscoveryError

    quiet = getattr(args, "quiet", False)
    say = (lambda text: None) if quiet else _say
    state = cli_state(args)
    seeds = seeds_of(args)
    if seeds:
        key = need_key(state, "--nodes")
    elif not state.has_key():
        return None                     # never joined a cluster: embedded, at once
    else:
        key = state.load_key()
    try:
        res = find(args, key, want_status=False, early_stop=True,
                   min_nodes=getattr(args, "min_nodes", None))
    except DiscoveryError as exc:       # no usable interface for mDNS
        say(f"{exc}; running on the embedded local cluster")
        return None
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
        if seeds:
            raise DiscoveryError(no_node_text(res))
        say(no_node_text(res) + "; running on the embedded local cluster (this machine only)")
        return None
    min_nodes = getattr(args, "min_nodes", None)
    if min_nodes and len(usable) < min_nodes:
        say(f"warning: only {len(usable)} of the {min_nodes} nodes asked for answered")
    say(f"using {len(usable)} node(s): " + ", ".join(node_line(f) for f in usable))
    if not seeds:
        args.watch_interfaces = interface_spec(args)  # cmd_job keeps browsing during the job
    return [f.endpoint for f in usable], key


def start_keeper(args: argparse.Namespace, state: Any, key: ClusterKey, daemon: Any) -> Any:
    """``pymr node``: the thread that redials ``--join`` seeds and keeps the members."""
    from .config import parse_nodes
    from .keeper import PeerKeeper
    from .peerstore import PeerStore

    assert daemon.endpoints is not None
    join = getattr(args, "join", None)
    me = {"node_id": daemon.node_id, "name": daemon.name, "endpoint": daemon.endpoints.control}
    return PeerKeeper(daemon.members, key, me=me,
                      seeds=parse_nodes(join, "--join") if join else [],
                      store=PeerStore(state.home), say=_say)
