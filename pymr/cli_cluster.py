"""CLI commands for a LAN cluster: node, status, events, keys (thin wrappers)."""

from __future__ import annotations

import argparse
from typing import Any

from .security import ClusterKey


def add_commands(sub: Any) -> None:
    """Register the cluster subcommands on the ``pymr`` parser."""


def discover_for_job(args: argparse.Namespace) -> tuple[list[str], ClusterKey] | None:
    """Nodes for ``pymr job``: ``--nodes``, or mDNS when this machine has a cluster key.

    None means: run on the embedded local cluster.
    """
    return None
