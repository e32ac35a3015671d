"""``pymr doctor``: the CLI over ``doctor.diagnose`` (parse, show, exit code)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

EXIT_OK, EXIT_PROBLEMS = 0, 1
_MARKS = {"ok": ("ok", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "red"),
          "info": ("info", "blue")}


def add_command(sub: Any) -> None:
    """Register ``pymr doctor`` on the ``pymr`` parser."""
    from ..config import DEFAULT_DISCOVER_S
    from .common import add_state_args, seconds

    doctor = sub.add_parser(
        "doctor", help="check what blocks finding the cluster, and say how to fix it",
        description="Check the network path to the cluster, one line each with the fix: "
        "interfaces, cluster key, multicast (mDNS) on each interface, this machine's node "
        "ports, local firewall rules (nftables/iptables, when readable), and every member "
        "found (by mDNS, memory, peer exchange or --nodes) with its versions and round trip. "
        "Exit 0 when nothing fails, 1 otherwise.")
    doctor.add_argument("--json", action="store_true", help="one JSON document on stdout")
    doctor.add_argument("--nodes", metavar="HOST[:PORT],...",
                        help="also dial these members (HOST alone: control port 7372)")
    doctor.add_argument("--interface", metavar="ADDR|NAME,...",
                        help="check these interfaces (default: as 'pymr node' chooses; or "
                        "$PYMR_INTERFACE)")
    doctor.add_argument("--discover", type=seconds, metavar="SECONDS",
                        help=f"how long to listen for mDNS answers (default "
                        f"{DEFAULT_DISCOVER_S:g})")
    doctor.add_argument("--timeout", type=seconds, metavar="SECONDS", default=1.5,
                        help="how long to wait for each member's hello (default 1.5)")
    add_state_args(doctor)
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..config import DEFAULT_DISCOVER_S
    from .common import cli_state, interface_spec
    from .discovery import seeds_of
    from .doctor_checks import DoctorOptions, diagnose

    opts = DoctorOptions(interface_spec=interface_spec(args), seeds=seeds_of(args),
                         window_s=DEFAULT_DISCOVER_S if args.discover is None else args.discover,
                         timeout_s=args.timeout)
    state = cli_state(args)
    if args.json or not sys.stderr.isatty():
        diag = diagnose(state, opts)
    else:
        from rich.console import Console

        with Console(stderr=True).status("checking...") as status:
            diag = diagnose(state, opts, progress=lambda text: status.update(f"{text}..."))
    try:
        if args.json:
            print(json.dumps(diag.to_json(), indent=2), flush=True)
        elif sys.stdout.isatty():
            _show(diag)
        else:
            _plain(diag)
            sys.stdout.flush()
    except BrokenPipeError:          # 'pymr doctor | head': the reader has what it wants
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK if diag.ok else EXIT_PROBLEMS


def _show(diag: Any) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    table = Table(title=f"pymr doctor (cluster {diag.fingerprint or 'none'})", show_lines=False)
    for col in ("", "check", "what was found, and the fix"):
        table.add_column(col)
    for c in diag.checks:
        mark, color = _MARKS[c.verdict]
        text = Text(c.detail)
        if c.fix:
            text.append(f"\nfix: {c.fix}", style="bold")
        table.add_row(Text(mark, style=color), c.topic, text)
    console.print(table)
    if diag.members:
        members = Table(title="members found")
        members.add_column("name")
        members.add_column("node id", no_wrap=True)
        members.add_column("address", no_wrap=True)
        members.add_column("found by")
        members.add_column("pymr / protocol / Python / Unicode")
        members.add_column("round trip", justify="right", no_wrap=True)
        for m in diag.members:
            members.add_row(m.name, m.node_id, m.endpoint, m.found_by,
                             f"{m.pymr} / {m.protocol} / {m.python} / {m.unicode}",
                             f"{m.rtt_ms:.1f} ms")
        console.print(members)
    if diag.discovery:
        console.print(f"discovery: {diag.discovery}", highlight=False)
    console.print(_verdict_line(diag), style="green" if diag.ok else "red", highlight=False)


def _plain(diag: Any) -> None:
    """Piped: one line per check, then one per member; no colours, no table."""
    out = sys.stdout
    for c in diag.checks:
        line = f"{_MARKS[c.verdict][0]:<4}  {c.topic}: {c.detail}"
        print(line + (f" | fix: {c.fix}" if c.fix else ""), file=out)
    for m in diag.members:
        print(f"member  {m.name} {m.node_id} {m.endpoint} found by {m.found_by}; pymr {m.pymr}, "
              f"protocol {m.protocol}, Python {m.python}, Unicode {m.unicode}; "
              f"{m.rtt_ms:.1f} ms", file=out)
    if diag.discovery:
        print(f"discovery: {diag.discovery}", file=out)
    print(_verdict_line(diag), file=out)


def _verdict_line(diag: Any) -> str:
    fails = sum(1 for c in diag.checks if c.verdict == "fail")
    if not fails:
        return (f"all clear: a job would run on the {len(diag.members)} node(s) found "
                f"({diag.elapsed_s:.1f} s)")
    return f"{fails} problem(s) to fix (each FAIL line says how) ({diag.elapsed_s:.1f} s)"
