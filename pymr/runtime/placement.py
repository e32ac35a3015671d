"""Where a job runs: on an embedded cluster of this machine, or on a cluster's nodes.

``pymr job`` and ``pymr.run`` both ask ``place``, so the two cannot drift apart. The rules,
in order (the first that applies wins):

1. ``local`` (``--local N``) asked for: an embedded cluster of that many nodes. ``nodes``
   and discovery are then ignored: **``--local`` wins over ``--nodes``**.
2. ``nodes`` (``--nodes``) given: the cluster key of this machine is required
   (``ConfigError``). With a ``discover`` function they are seeds: the nodes that answer,
   and the members they name, run the job; none answering is a ``DiscoveryError``.
   Without one (``pymr.run``) they are used as given.
3. No ``discover`` function (``pymr.run``), or no cluster key on this machine: an
   embedded cluster of one node, at once.
4. Otherwise ``discover`` looks for this cluster's nodes. If it finds none, or cannot run
   (``DiscoveryError``: no usable interface), the job falls back to one embedded node.

The function is pure apart from reading the state directory: the discovery is injected
(``pymr job`` passes the discovery ladder of ``pymr.cli.discovery``), and what it decides is
said through ``say``, one line each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import DiscoveryError

if TYPE_CHECKING:
    from ..net.security import ClusterKey


@dataclass(frozen=True)
class PlacementRequest:
    """What the caller asked for (``pymr job``'s options, ``pymr.run``'s arguments)."""

    local: int = 0                  # embedded nodes asked for (0: not asked)
    slots: int = 0                  # executors per embedded node (0: cores / nodes)
    nodes: str | list[str] | None = None   # "HOST[:PORT],..." or a list of them
    discover_s: float | None = None  # how long discovery browses (None: its default)
    min_nodes: int | None = None    # discovery stops once this many answered
    interface: str | None = None    # interfaces discovery browses on (None: the default)
    home: str | None = None         # pymr state directory (None: $PYMR_HOME or ~/.pymr)
    key_file: str | None = None     # cluster key file (None: HOME/cluster.key)


@dataclass(frozen=True)
class Embedded:
    """Run on an embedded cluster of ``nodes`` nodes of ``slots`` executors each.
    ``fallback``: discovery was tried and found no node."""

    nodes: int
    slots: int
    fallback: bool = False


@dataclass(frozen=True)
class OnNodes:
    """Run on these nodes (control endpoints) with the cluster ``key``. ``watch``: the
    nodes came from discovery, so nodes started during the job may still join it."""

    endpoints: list[str]
    key: ClusterKey
    watch: bool = False


Placement = Embedded | OnNodes


@dataclass(frozen=True)
class Found:
    """What a discovery found: the nodes' control endpoints, or why there are none."""

    endpoints: list[str] = field(default_factory=list)
    why_none: str = ""


#: ``discover(request, seeds, key)``: the nodes of the cluster of ``key`` (``seeds``:
#: the ``--nodes`` endpoints, possibly empty). Raises ``DiscoveryError`` when it cannot run.
Discover = Callable[[PlacementRequest, list[str], "ClusterKey"], Found]


def _silent(text: str) -> None:
    pass


def place(request: PlacementRequest, discover: Discover | None = None,
          say: Callable[[str], None] = _silent) -> Placement:
    """Decide where the job runs (the rules are in the module docstring)."""
    from ..config import parse_nodes
    from .state import open_state

    if request.local:
        return Embedded(request.local, request.slots)
    seeds = parse_nodes(request.nodes, "--nodes") if request.nodes else []
    state = open_state(request.home, request.key_file)
    if seeds:
        key = state.require_key("--nodes")
        if discover is None:
            return OnNodes(seeds, key)
    elif discover is None or not state.has_key():
        return Embedded(1, request.slots)   # never joined a cluster: embedded, at once
    else:
        key = state.load_key()
    try:
        found = discover(request, seeds, key)
    except DiscoveryError as exc:            # no usable interface for mDNS
        say(f"{exc}; running on the embedded local cluster")
        return Embedded(1, request.slots, fallback=True)
    if found.endpoints:
        return OnNodes(list(found.endpoints), key, watch=not seeds)
    if seeds:
        raise DiscoveryError(found.why_none)
    say(found.why_none + "; running on the embedded local cluster (this machine only)")
    return Embedded(1, request.slots, fallback=True)
