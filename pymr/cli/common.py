"""What the CLI modules share: argument types, the state and discovery flags, the key check.

It imports no other ``cli`` module, so the CLI modules depend on each other in one
direction only (``main`` -> ``cluster`` -> ``discovery``, ``doctor``) and
every one of them can use these without an import cycle.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..net.security import ClusterKey


def parse_size(text: str) -> int:
    """``16M``, ``512K``, ``1G`` or a plain byte count."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if t and t[-1] in units:
            value = int(float(t[:-1]) * units[t[-1]])
        else:
            value = int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 16M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0 or value > 3600:
        raise argparse.ArgumentTypeError(f"seconds must be between 0 and 3600: {text!r}")
    return value


def interface_spec(args: argparse.Namespace) -> str | None:
    """``--interface``, else ``$PYMR_INTERFACE`` (the one place the CLI reads it)."""
    return getattr(args, "interface", None) or os.environ.get("PYMR_INTERFACE") or None


def cli_state(args: argparse.Namespace) -> Any:
    """The state directory named by ``--home`` / ``--key-file`` (or their defaults)."""
    from ..runtime.state import open_state

    return open_state(getattr(args, "home", None), getattr(args, "key_file", None))


def parse_nodes_arg(text: str, option: str = "--nodes") -> list[str]:
    from ..config import parse_nodes

    return parse_nodes(text, option)


def need_key(state: Any, why: str) -> ClusterKey:
    """The cluster key, or a ConfigError that says how to get one."""
    key: ClusterKey = state.require_key(why)
    return key


def add_state_args(p: Any) -> None:
    p.add_argument("--home", metavar="DIR", help="pymr state directory: cluster key, node id, "
                   "data (default $PYMR_HOME or ~/.pymr)")
    p.add_argument("--key-file", metavar="PATH", help="cluster key file (default HOME/cluster.key)")


def add_discovery_args(p: Any, what: str) -> None:
    from ..config import DEFAULT_DISCOVER_S

    p.add_argument("--nodes", metavar="HOST[:PORT],...",
                   help=f"{what} these nodes and the members they know, skipping mDNS (HOST "
                   "alone: control port 7372; one member is enough)")
    p.add_argument("--discover", type=seconds, metavar="SECONDS",
                   help=f"how long to browse for nodes (default {DEFAULT_DISCOVER_S:g})")
    p.add_argument("--interface", metavar="ADDR|NAME,...",
                   help="browse on these interfaces (default: every address except loopback, "
                   "container bridges and link-local; or $PYMR_INTERFACE)")
