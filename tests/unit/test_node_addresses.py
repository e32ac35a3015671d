"""``--nodes`` / ``--join`` addresses, and TCP reachability (on loopback only)."""

from __future__ import annotations

import socket

import pytest

from pymr.config import DEFAULT_CONTROL_PORT, parse_nodes, split_endpoint
from pymr.errors import UsageError
from pymr.net.reach import OPEN, REFUSED, explain, tcp_reach


def test_one_address_is_enough() -> None:
    assert parse_nodes("192.168.1.20") == [f"tcp://192.168.1.20:{DEFAULT_CONTROL_PORT}"]
    assert parse_nodes("a.local, 10.0.0.2:7000 ,tcp://h:9") == [
        "tcp://a.local:7372", "tcp://10.0.0.2:7000", "tcp://h:9"]


@pytest.mark.parametrize("bad", ["a b", "h:x", "h:0", ":5", "http://x", "h:70000", "-h"])
def test_bad_addresses_are_one_line_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="--join: .* is not HOST or HOST:PORT"):
        parse_nodes(bad, "--join")


def test_split_endpoint_accepts_only_tcp_host_port() -> None:
    assert split_endpoint("tcp://10.0.0.1:7372") == ("10.0.0.1", 7372)
    for bad in ("tcp://10.0.0.1", "ipc:///x", "tcp://a b:1", "tcp://h:0", "tcp://h:123456"):
        assert split_endpoint(bad) is None


def test_tcp_reach_open_and_refused() -> None:
    listener = socket.socket()
    closed = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        closed.bind(("127.0.0.1", 0))          # bound, not listening: connections refused
        open_port, shut_port = listener.getsockname()[1], closed.getsockname()[1]
        got = tcp_reach([("127.0.0.1", open_port), ("127.0.0.1", shut_port)])
    finally:
        listener.close()
        closed.close()
    assert got == {("127.0.0.1", open_port): OPEN, ("127.0.0.1", shut_port): REFUSED}
    assert "nothing listens" in explain(REFUSED, shut_port)
