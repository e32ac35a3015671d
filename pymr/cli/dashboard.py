"""CLI for the web dashboard: ``pymr dashboard`` and ``pymr job --dashboard`` (thin)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ..net.security import ClusterKey

#: Addresses that mean "every interface": the URL names this machine's addresses instead.
WILDCARD_BINDS = ("0.0.0.0", "::", "")
#: How often ``pymr dashboard`` looks whether a signal asked it to stop.
STOP_CHECK_S = 0.2


def _say(text: str) -> None:
    print(f"pymr: {text}", file=sys.stderr, flush=True)


def _http_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535: {text!r}")
    return value


def add_commands(sub: Any) -> None:
    """Register ``pymr dashboard`` on the ``pymr`` parser."""
    from ..dashboard import DEFAULT_PORT
    from .common import add_discovery_args, add_state_args

    d = sub.add_parser(
        "dashboard", help="serve a live web page of the cluster and its jobs",
        description="Serve a live web page of the cluster: its nodes (slots, load, state), "
        "the running and recent jobs (progress by phase, throughput, time left) and the "
        "latest events and errors, with the same data as JSON under /api/. It finds the "
        "nodes like 'pymr status' and follows their events with the cluster key. It binds "
        "127.0.0.1 unless told otherwise; on any other address the page needs the access "
        "token printed in its URL. It is read-only: nothing on it changes anything.")
    d.add_argument("--bind", metavar="ADDR", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only; "
                   "0.0.0.0: every interface, with an access token)")
    d.add_argument("--port", type=_http_port, metavar="PORT",
                   help=f"port to serve on (default {DEFAULT_PORT}, or a free port if it is "
                   "taken; 0: a free port)")
    add_discovery_args(d, "watch")
    add_state_args(d)
    d.set_defaults(func=cmd_dashboard)


def _start(key: ClusterKey, port: int | None, default_port: int, **kwargs: Any) -> Any:
    """A started ``Dashboard``; the default port falls back to a free one if taken."""
    from ..dashboard import Dashboard
    from ..errors import UsageError

    try:
        return Dashboard(key, port=default_port if port is None else port, **kwargs).start()
    except UsageError as exc:
        if port is not None:
            raise
        _say(f"{exc}; using a free port")
    return Dashboard(key, port=0, **kwargs).start()


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ..config import DEFAULT_DISCOVER_S
    from ..dashboard import DEFAULT_PORT
    from .common import cli_state, interface_spec, need_key, parse_nodes_arg

    key = need_key(cli_state(args), "pymr dashboard")
    kwargs: dict[str, Any] = {"host": args.bind, "discover_s": DEFAULT_DISCOVER_S
                              if args.discover is None else args.discover}
    if args.nodes:
        kwargs["endpoints"] = parse_nodes_arg(args.nodes)
        kwargs["source"] = "--nodes " + args.nodes
    else:
        from ..net.discovery import select_addresses

        kwargs["interfaces"] = select_addresses(interface_spec(args))
    stop = threading.Event()
    # Ctrl-C, SIGTERM and a closed terminal stop it, even when started with SIGINT ignored
    # (in the background of a script); nohup keeps SIGHUP ignored.
    signals = [signal.SIGINT, signal.SIGTERM] + (
        [signal.SIGHUP] if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN else [])
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        dash = _start(key, args.port, DEFAULT_PORT, **kwargs)
        try:
            _announce(dash, args.bind, key)
            while not stop.wait(STOP_CHECK_S):
                pass
        finally:
            dash.close()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    _say("dashboard stopped")
    return 0


def _announce(dash: Any, bind: str, key: ClusterKey) -> None:
    """The URL(s) on stdout; what they give access to on stderr."""
    if not dash.server.needs_token:
        print(dash.url, flush=True)
        _say(f"dashboard of cluster {key.fingerprint} at {dash.url} (this machine only); "
             "Ctrl-C to stop")
        return
    hosts = [bind]
    if bind in WILDCARD_BINDS:
        from ..errors import PymrError
        from ..net.discovery import select_addresses

        try:
            hosts = select_addresses(None)
        except PymrError:
            import socket

            hosts = [socket.gethostname()]
    for host in hosts:
        print(dash.server.url_for(host), flush=True)
    _say(f"dashboard of cluster {key.fingerprint} on {bind or '*'}:{dash.server.port}, "
         "reachable from the network: it needs the access token in the URL above (then "
         "kept in a cookie). Anyone with the URL can watch the cluster (not change it); "
         "a new token is made at every start. Ctrl-C to stop")


def start_job_dashboard(key: ClusterKey, endpoints: list[str], job_name: str) -> Any:
    """``pymr job --dashboard``: the job's own page, served while it runs."""
    from ..dashboard import JOB_PORT

    dash = _start(key, None, JOB_PORT, endpoints=endpoints, source="this job's nodes",
                  title=f"pymr job {job_name}")
    _say(f"the job's dashboard: {dash.url} (while the job runs)")
    return dash
