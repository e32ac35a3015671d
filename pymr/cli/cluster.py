"""CLI commands for a LAN cluster: node, status, events, keys (thin wrappers)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from ..net.security import ClusterKey
from ..wording import count_of
from .common import (
    add_discovery_args,
    add_state_args,
    cli_state,
    interface_spec,
    need_key,
    parse_nodes_arg,
    parse_size,
    positive_int,
    seconds,
)

log = logging.getLogger("pymr")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: ``pymr status --watch`` refresh period.
WATCH_INTERVAL_S = 2.0


def _say(text: str) -> None:
    print(f"pymr: {text}", file=sys.stderr, flush=True)


def _size(text: str) -> int:
    """``256M``, ``1G``, ``0``: like the job's sizes, but zero is allowed."""
    if text.strip() == "0":
        return 0
    return parse_size(text)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65532:
        raise argparse.ArgumentTypeError(f"base port must be 0..65532: {text!r}")
    return value


def add_commands(sub: Any) -> None:
    """Register the cluster subcommands on the ``pymr`` parser."""
    from .doctor import add_command as add_doctor

    _add_node_command(sub)
    _add_key_commands(sub)
    _add_observer_commands(sub)
    add_doctor(sub)


def _add_node_command(sub: Any) -> None:
    """``pymr node`` and its options."""
    from ..config import DEFAULT_BASE_PORT, FOUND_DISCOVER_S

    node = sub.add_parser(
        "node", help="run a node on this machine (joins the cluster on the LAN)",
        description="Run this machine's node until stopped (Ctrl-C, SIGTERM). It advertises "
        "itself with mDNS; 'pymr job' on any member finds it. Without a cluster key it looks "
        f"for {FOUND_DISCOVER_S:g} s for a cluster: if one is there it says how to join it, "
        "otherwise it founds a new one. WARNING: a member of a cluster (anyone holding its "
        "key) can run code on every node; use --builtin-only on machines that should only "
        "run the jobs shipped with pymr.")
    node.add_argument("--name", help="name shown in 'pymr status' (default: host name)")
    node.add_argument("--slots", type=positive_int, metavar="N",
                      help="executors, i.e. map/reduce tasks at once (default: cores)")
    node.add_argument("--port", type=_port, default=DEFAULT_BASE_PORT, metavar="BASE",
                      help=f"task, shuffle, control, events on BASE..BASE+3 (default "
                      f"{DEFAULT_BASE_PORT}; free ports if taken; 0: always free ports)")
    node.add_argument("--interface", metavar="ADDR|NAME,...",
                      help="serve and advertise on these interfaces (default: every address "
                      "except loopback, container bridges and link-local); the node's sockets "
                      "bind the first address")
    node.add_argument("--builtin-only", action="store_true",
                      help="run only the jobs shipped with pymr, never code sent by a member")
    node.add_argument("--shared-fs", action="store_true",
                      help="this machine sees the same files at the same paths as the job's "
                      "machine (NFS, ...): read splits from the file instead of receiving "
                      "them. Lets any member make this node read any file it can read")
    node.add_argument("--memory", type=_size, metavar="SIZE", default=0,
                      help="memory budget of this node's executors for every job, shared "
                      "among them (default: a quarter of the machine's memory); a job's "
                      "--memory may lower it. Beyond it, data spills to the data directory")
    node.add_argument("--retain-memory", type=_size, metavar="SIZE", default=None,
                      help="map outputs each executor keeps in memory for re-sends; older "
                      "ones are spilled to the data directory (default 256M; 0: spill all)")
    node.add_argument("--discover", type=seconds, metavar="SECONDS",
                      help=f"with no key: how long to look for a cluster to join (default "
                      f"{FOUND_DISCOVER_S:g}; 0 founds a new cluster at once)")
    node.add_argument("--join", metavar="HOST[:PORT],...",
                      help="members to join through where multicast is blocked (HOST alone: "
                      "control port 7372); redialled with backoff while the node runs")
    add_state_args(node)
    node.set_defaults(func=cmd_node)


def _add_key_commands(sub: Any) -> None:
    """``pymr keygen`` and ``pymr key export|import|fingerprint``."""
    keygen = sub.add_parser("keygen", help="create a new cluster key on this machine",
                            description="Create a new cluster key (founds a new cluster).")
    keygen.add_argument("--force", action="store_true", help="replace an existing key")
    add_state_args(keygen)
    keygen.set_defaults(func=cmd_keygen)

    key = sub.add_parser("key", help="move the cluster key between machines",
                         description="'pymr key export' on a member prints a join token; "
                         "'pymr key import TOKEN' on another machine makes it a member. The "
                         "token is the cluster's secret: whoever has it can run code on "
                         "every node.")
    key_sub = key.add_subparsers(dest="key_command", metavar="ACTION")
    exp = key_sub.add_parser("export", help="print this cluster's join token")
    add_state_args(exp)
    exp.set_defaults(func=cmd_key_export)
    imp = key_sub.add_parser("import", help="join the cluster of a token ('-': read stdin)")
    imp.add_argument("token", metavar="TOKEN")
    imp.add_argument("--force", action="store_true",
                     help="replace this machine's key (it leaves its current cluster)")
    add_state_args(imp)
    imp.set_defaults(func=cmd_key_import)
    fp = key_sub.add_parser("fingerprint", help="print the public key fingerprint")
    add_state_args(fp)
    fp.set_defaults(func=cmd_key_fingerprint)
    key.set_defaults(func=lambda args: _usage(key))


def _add_observer_commands(sub: Any) -> None:
    """``pymr status`` and ``pymr events``."""
    status = sub.add_parser("status", help="the nodes of this cluster and what they do",
                            description="Find the nodes (mDNS or --nodes), ask each over its "
                            "control socket, and show them.")
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    status.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS",
                        help="how long to wait for each node's answer (default 3)")
    add_discovery_args(status, "ask")
    add_state_args(status)
    status.set_defaults(func=cmd_status)

    events = sub.add_parser("events", help="live progress and errors from every node",
                            description="Subscribe to every node's events; one line each.")
    events.add_argument("--json", action="store_true", help="JSON lines")
    events.add_argument("--no-heartbeats", action="store_true", help="hide heartbeats")
    events.add_argument("--duration", type=seconds, metavar="SECONDS",
                        help="stop after this long (default: until Ctrl-C)")
    add_discovery_args(events, "follow")
    add_state_args(events)
    events.set_defaults(func=cmd_events)


def _usage(parser: Any) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


# ---------------------------------------------------------------- keys


def cmd_keygen(args: argparse.Namespace) -> int:
    state = cli_state(args)
    key = ClusterKey.generate()
    path = state.save_key(key, replace=args.force)
    _say(f"created a new cluster key (fingerprint {key.fingerprint}) in {path}")
    _say("to add another machine: run 'pymr key export' here and 'pymr key import TOKEN' "
         "there; the token is the cluster's secret")
    return EXIT_OK


def cmd_key_export(args: argparse.Namespace) -> int:
    key = cli_state(args).load_key()
    print(key.export_token(), flush=True)
    if sys.stderr.isatty():
        _say("this token is the cluster's secret: whoever holds it can run code on every "
             "node. On the other machine: pymr key import TOKEN")
    return EXIT_OK


def cmd_key_import(args: argparse.Namespace) -> int:
    token = sys.stdin.readline() if args.token == "-" else args.token
    key = ClusterKey.from_token(token)
    state = cli_state(args)
    if state.has_key():
        old = state.load_key()
        if old == key:
            _say(f"this machine already holds that key (fingerprint {key.fingerprint})")
            return EXIT_OK
        if not args.force:
            from ..errors import ConfigError

            raise ConfigError(f"this machine already holds another cluster key (fingerprint "
                              f"{old.fingerprint}) at {state.key_file}; pass --force to "
                              "replace it and leave that cluster")
    path = state.save_key(key, replace=True)
    _say(f"joined the cluster with key fingerprint {key.fingerprint} (key in {path}); "
         "start 'pymr node' to serve it")
    return EXIT_OK


def cmd_key_fingerprint(args: argparse.Namespace) -> int:
    print(cli_state(args).load_key().fingerprint)
    return EXIT_OK


# ---------------------------------------------------------------- node


def cmd_node(args: argparse.Namespace) -> int:
    from ..runtime.nodeservice import NodeConfig, NodeService

    join = parse_nodes_arg(args.join, "--join") if args.join else []  # bad: one line, first
    config = NodeConfig(base_port=args.port, name=args.name or "", slots=args.slots or 0,
                        interface=interface_spec(args), builtin_only=args.builtin_only,
                        shared_fs=args.shared_fs, memory=args.memory,
                        retain_memory=args.retain_memory, discover_s=args.discover, join=join)
    with NodeService(config, cli_state(args), say=_say) as service:
        if not service.prepare():
            return EXIT_USAGE
        old_int = signal.signal(signal.SIGINT, lambda signum, frame: service.stop())
        old_term = signal.signal(signal.SIGTERM, lambda signum, frame: service.stop())
        try:
            service.run()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
    return EXIT_OK


# ---------------------------------------------------------------- discovery for clients


def _find(args: argparse.Namespace, key: ClusterKey, *,
          timeout_s: float | None = None) -> Any:
    """The discovery ladder with status replies (``discovery.find``)."""
    from .discovery import find

    return find(args, key, want_status=True, timeout_s=timeout_s)


def _ignored_note(res: Any) -> str:
    if res is None or not res.ignored:
        return ""
    reasons: dict[str, int] = {}
    for i in res.ignored:
        reasons[i.reason] = reasons.get(i.reason, 0) + 1
    return f"ignored {len(res.ignored)} node(s): " + "; ".join(
        r if n == 1 else f"{r} (x{n})" for r, n in sorted(reasons.items()))


def start_job_watch(interface: str | None, key: ClusterKey) -> JobWatch | None:
    """A browser kept open during a job whose nodes came from discovery (``interface``:
    the spec it browses on), so that nodes started meanwhile join the job."""
    try:
        from ..net.discovery import select_addresses

        return JobWatch(select_addresses(interface), key.fingerprint)
    except Exception as exc:  # joining mid-job is a bonus: never fail the job for it
        _say(f"warning: cannot watch for nodes joining during the job: {exc}")
        return None


class JobWatch:
    """Keeps browsing during a job so that nodes started meanwhile join it."""

    def __init__(self, addresses: list[str], fingerprint: str) -> None:
        from ..net.discovery import Browser

        self.fingerprint = fingerprint
        self.browser = Browser(addresses).start()

    def endpoints(self) -> list[str]:
        """Control endpoints of this cluster's nodes seen so far (called about once a second)."""
        self.browser.poll(0)
        return [r.control_endpoint for r in self.browser.result(self.fingerprint).nodes]

    def close(self) -> None:
        self.browser.close()


# ---------------------------------------------------------------- status


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _fmt_uptime(s: float) -> str:
    s = int(s)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _status_table(statuses: list[Any], res: Any, title: str,
                  how: dict[str, str] | None = None) -> Any:
    """``how``: endpoint -> the discovery rung that found the node (the "found by" column)."""
    from rich.table import Table

    table = Table(title=title)
    for col, just in (("name", "left"), ("node id", "left"), ("addresses", "left"),
                      ("found by", "left"), ("version", "left"), ("slots", "right"),
                      ("busy", "right"), ("tasks done", "right"), ("bytes", "right"),
                      ("uptime", "right"), ("jobs", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for st in sorted(statuses, key=lambda x: (x.name, x.node_id)):
        addrs = ", ".join(st.record.addresses) if st.record is not None else \
            st.endpoint.removeprefix("tcp://")
        found = (how or {}).get(st.endpoint, "mDNS" if st.record is not None else "--nodes")
        if st.status is not None and not st.error:
            s = st.status
            table.add_row(st.name, st.node_id, addrs, found, st.hello.pymr_version,
                          str(s.slots), str(s.busy), f"{s.tasks_done:,}",
                          _fmt_bytes(s.bytes_processed), _fmt_uptime(s.uptime_s),
                          ", ".join(s.jobs) or "-")
        else:
            table.add_row(st.name, st.node_id or "?", addrs, found, "", "", "", "", "", "",
                          f"[red]unreachable[/red]: {st.error}" if st.hello is None
                          else f"[red]refused[/red]: {st.error}")
    return table


def _status_doc(rows: list[Any], res: Any) -> dict[str, Any]:
    """``pymr status --json``: ``rows`` are the ladder's ``Found`` (members, then failures)."""
    browse = res.browse
    return {
        "nodes": [f.to_json() for f in rows],
        "answered": sum(1 for f in rows if f.status.reachable),
        "ignored": [{"instance": what, "reason": why} for what, why in res.ignored],
        "copied_ids": list(browse.copied_ids) if browse else [],
        "discovery_s": round(res.elapsed_s, 3),
        "discovery": res.summary(),
        "rungs": [r.to_json() for r in res.rungs.values()],
        "seen_after_s": {k: round(v, 3) for k, v in browse.seen_after_s.items()}
        if browse else {},
        "remembered_not_answering": [f.to_json() for f in _stale(res)],
    }


def _stale(res: Any) -> list[Any]:
    """Remembered members that did not answer (listed apart: a laptop may be away)."""
    return [f for f in res.failed if f.origin == "memory" and f.status.failure != "key"
            and not f.advertised]


def _why_none(statuses: list[Any], res: Any) -> str:
    from .discovery import no_node_text

    if statuses:
        return (f"none of the {len(statuses)} node(s) answered: they may have stopped, a "
                "firewall may block their ports, or they hold another cluster key; run "
                "'pymr doctor' to see which")
    return no_node_text(res)


def cmd_status(args: argparse.Namespace) -> int:
    from .discovery import ignored_note

    key = need_key(cli_state(args), "pymr status")
    if args.watch:
        return _watch_status(args, key)
    res = _find(args, key, timeout_s=args.timeout)
    # Members, and what mDNS or --nodes named but does not answer (not stale memory or
    # peer lists: 'pymr doctor' lists those).
    rows = res.members + [f for f in res.failed if f.origin == "seeds" or f.advertised]
    statuses = [f.status for f in rows]
    answered = [st for st in statuses if st.reachable]
    if args.json:
        print(json.dumps(_status_doc(rows, res), indent=2))
    else:
        from rich.console import Console

        # Piped: wide enough for every column (a terminal uses its own width).
        console = Console(width=None if sys.stdout.isatty() else 160)
        if statuses:
            console.print(_status_table(statuses, res.browse, f"pymr cluster {key.fingerprint}",
                                        how={f.endpoint: f.how for f in rows}))
        slots = sum(st.status.slots for st in answered if st.status is not None)
        summary = f"{len(answered)} of {len(statuses)} node(s) answered, {count_of(slots, 'slot')}"
        note = ignored_note(res)
        console.print(summary + (f"; {note}" if note else ""))
        console.print(f"discovery: {res.summary()}", highlight=False)
        stale = _stale(res)
        if stale:
            console.print("remembered, not answering: " + ", ".join(
                f"{f.remembered.name} ({f.remembered.address})" for f in stale), highlight=False)
        copied = list(res.browse.copied_ids) if res.browse else []
        if copied:
            console.print(f"[yellow]warning: node id(s) {', '.join(copied)} are "
                          "advertised by two incarnations: a copied state directory (or a "
                          "restart whose old record has not expired)[/yellow]")
        for w in res.warnings:
            console.print(f"[yellow]warning: {w}[/yellow]")
    if not answered:
        _say(_why_none(statuses, res))
        return EXIT_FAILED
    return EXIT_OK


def _watch_status(args: argparse.Namespace, key: ClusterKey) -> int:
    """Keep one browser running; re-ask every node each period until Ctrl-C."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from ..net.discovery import Browser, select_addresses
    from ..net.status import PROBE_TIMEOUT_S, probe

    timeout = min(PROBE_TIMEOUT_S if args.timeout is None else args.timeout, WATCH_INTERVAL_S)
    fixed = parse_nodes_arg(args.nodes) if args.nodes else None
    browser = None if fixed else Browser(select_addresses(interface_spec(args))).start()
    try:
        with Live(Text("looking for nodes..."), refresh_per_second=4) as live:
            while True:
                targets: list[tuple[str, Any]]
                if browser is not None:
                    browser.poll(0.2)
                    res = browser.result(key.fingerprint)
                    targets = [(r.control_endpoint, r) for r in res.nodes]
                else:
                    res = None
                    targets = [(ep, None) for ep in fixed or []]
                statuses = probe(targets, key, timeout_s=timeout)
                answered = sum(1 for st in statuses if st.reachable)
                note = _ignored_note(res)
                footer = Text(f"{answered} of {len(statuses)} node(s) answered"
                              + (f"; {note}" if note else "")
                              + f"; {time.strftime('%H:%M:%S')}; Ctrl-C to stop")
                live.update(Group(_status_table(statuses, res,
                                                f"pymr cluster {key.fingerprint}"), footer))
                if browser is not None:
                    browser.poll(WATCH_INTERVAL_S)
                else:
                    time.sleep(WATCH_INTERVAL_S)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if browser is not None:
            browser.close()


# ---------------------------------------------------------------- events


def cmd_events(args: argparse.Namespace) -> int:
    from ..net.discovery import Browser, select_addresses
    from ..net.status import EventStream, probe
    from ..wire import protocol as p

    key = need_key(cli_state(args), "pymr events")
    topics = (p.TOPIC_PROGRESS, p.TOPIC_ERROR) if args.no_heartbeats else \
        (p.TOPIC_HEARTBEAT, p.TOPIC_PROGRESS, p.TOPIC_ERROR)
    stream = EventStream(key, topics)
    browser = None
    end = time.monotonic() + args.duration if args.duration is not None else None
    try:
        targets: list[tuple[str, Any]]
        if args.nodes:
            targets = [(ep, None) for ep in parse_nodes_arg(args.nodes)]
        else:
            from ..config import DEFAULT_DISCOVER_S

            browser = Browser(select_addresses(interface_spec(args))).start()
            browser.poll(DEFAULT_DISCOVER_S if args.discover is None else args.discover)
            targets = [(r.control_endpoint, r) for r in
                       browser.result(key.fingerprint).nodes]
        known: set[str] = set()

        def subscribe(targets: list[tuple[str, Any]]) -> None:
            new = [t for t in targets if t[0] not in known]
            for st in probe(new, key, want_status=False):
                if st.reachable and st.hello is not None:
                    known.add(st.endpoint)
                    stream.add(st.name, st.hello.events_endpoint)
                    _say(f"following {st.name} ({st.endpoint.removeprefix('tcp://')})")
                else:
                    _say(f"node {st.name}: {st.error}")

        subscribe(targets)
        if not known and browser is None:
            _say("none of the --nodes answered")
            return EXIT_FAILED
        if not known:
            _say("no node found yet; waiting for nodes to appear (Ctrl-C to stop)")
        while end is None or time.monotonic() < end:
            left = 1.0 if end is None else max(0.0, min(1.0, end - time.monotonic()))
            for ev in stream.events(left):
                print(json.dumps(ev.to_json()) if args.json else ev.line(), flush=True)
            if browser is not None and browser.poll(0):
                subscribe([(r.control_endpoint, r) for r in
                           browser.result(key.fingerprint).nodes])
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        if browser is not None:
            browser.close()
        stream.close()
    return EXIT_OK
