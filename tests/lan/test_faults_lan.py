"""Faults on the simulated LAN: lossy, resetting, slow and dropped links (root + ip netns,
else skipped; under CI as root a missing tool fails).

Each job runs from the client host with its input on a private tmpfs (the bytes travel
over the network) and is compared with a single-process count.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pymr.config import DEFAULT_BASE_PORT
from tests import helpers

from .lab import Lab, run_private_job
from .test_lan import make_input

TC_WHY = "the slow-link tests shape a veth with tc (apt-get install iproute2)"


def _netns(host_ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", host_ns, *argv], capture_output=True,
                          text=True, check=check, timeout=30)


def _slow_client(lab: Lab) -> None:
    """A Wi-Fi-like client link so that the job lasts long enough to hurt it mid-way."""
    helpers.require_tool("tc", why=TC_WHY)
    _netns(lab.hosts["client"].ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
           "rate", "24mbit", "burst", "32kbit", "latency", "400ms")


def _unslow(host_ns: str) -> None:
    _netns(host_ns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)


def _start_job(lab: Lab, name: str, copies: int) -> tuple[threading.Thread, dict[str, Any],
                                                          bytes]:
    src = lab.dir / f"{name}.txt"
    data = make_input(src, copies)
    result: dict[str, Any] = {}
    job = threading.Thread(target=lambda: result.update(r=run_private_job(
        lab, "client", src, "--split-size", "128K", timeout=240)))
    job.start()
    return job, result, data


def _wait_job_on(lab: Lab, host: str) -> None:
    """Until the node on ``host`` runs a job (bounded)."""
    h = lab.hosts[host]
    helpers.wait_until(lambda: any(
        n.get("jobs") for n in h.status("--nodes", f"{h.address}:7372")["nodes"]
        if n.get("reachable")), 60, "the job to start on " + host)


def _check(result: dict[str, Any], data: bytes) -> str:
    r = result["r"]
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    helpers.assert_wordcount(r.stdout, data)
    return str(r.stderr.decode(errors="replace"))


def _dropped_packets(host_ns: str, table: str) -> dict[str, int]:
    """chain -> packets counted by the ``counter`` of each rule of an inet table."""
    doc = json.loads(_netns(host_ns, "nft", "-j", "list", "table", "inet", table).stdout)
    out: dict[str, int] = {}
    for entry in doc["nftables"]:
        rule = entry.get("rule")
        if rule is None:
            continue
        for stmt in rule["expr"]:
            if "counter" in stmt:
                out[rule["chain"]] = out.get(rule["chain"], 0) + stmt["counter"]["packets"]
    return out


def _tcp_retransmitted(host_ns: str) -> int:
    """Segments the kernel retransmitted in ``host_ns`` (RetransSegs of its /proc/net/snmp:
    the network namespace's own counters)."""
    lines = [line.split() for line in _netns(host_ns, "cat", "/proc/net/snmp").stdout
             .splitlines() if line.startswith("Tcp:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["RetransSegs"])


def _lab_retransmitted(lab: Lab) -> int:
    """Segments retransmitted in every host of the lab (a segment dropped on its way in to
    a host is sent again by the peer that sent it)."""
    return sum(_tcp_retransmitted(host.ns) for host in lab.hosts.values())


@contextmanager
def _nft_table(host_ns: str, table: str, chains: list[str], rules: list[str]
               ) -> Iterator[Callable[[], dict[str, int]]]:
    """An inet table of ``rules`` (each ``CHAIN RULE``) on filter hooks ``chains`` (input
    / output) in ``host_ns`` while the block runs, deleted after; yields its counters."""
    text = f"add table inet {table}\n" + "".join(
        f"add chain inet {table} {hook} {{ type filter hook {hook} priority 0; }}\n"
        for hook in chains) + "".join(f"add rule inet {table} {rule}\n" for rule in rules)
    subprocess.run(["ip", "netns", "exec", host_ns, "nft", "-f", "-"], input=text, text=True,
                   check=True, timeout=30)
    try:
        yield lambda: _dropped_packets(host_ns, table)
    finally:
        _netns(host_ns, "nft", "delete", "table", "inet", table, check=False)


def _run_job(lab: Lab, name: str, copies: int) -> tuple[dict[str, Any], bytes]:
    """A job from the client on every node, to its end (bounded)."""
    job, result, data = _start_job(lab, name, copies)
    job.join(timeout=300)
    assert not job.is_alive(), "the job did not finish"
    return result, data


def test_random_packet_loss_on_a_node_link(lab: Lab) -> None:
    helpers.require_tool("nft", why="the packet-loss test drops packets with nftables "
                                    "(apt-get install nftables)")
    # Given nftables dropping 5 % of the TCP segments that carry data, in and out of node n2
    # (numgen random, each drop counted; only data segments, because a dropped pure ACK or
    # mDNS datagram is never sent again and would prove nothing),
    n2 = lab.hosts["n2"].ns
    lossy = "meta l4proto tcp meta length > 120 numgen random mod 100 < 5 counter drop"
    retransmitted_before = _lab_retransmitted(lab)
    with _nft_table(n2, "pymrloss", ["input", "output"],
                    [f"input {lossy}", f"output {lossy}"]) as counters:
        # when a job runs on every node,
        result, data = _run_job(lab, "lossy", 40)
        dropped = counters()
    # then data segments were really dropped while it ran (each way a few; only the sum is
    # sure to be above 0),
    assert sum(dropped.values()) > 0, dropped
    # their senders (n2 for what it sent, its peers for what it received) sent them again:
    # TCP repairs a loss on a live connection, so pymr's own re-sends do not run here (the
    # reset test below makes them run),
    retransmitted = _lab_retransmitted(lab) - retransmitted_before
    assert retransmitted > 0, f"no TCP retransmission in the lab despite the drops {dropped}"
    print(f"packet loss on n2: dropped {dropped}, {retransmitted} TCP segments retransmitted")
    # and the answer is exact.
    _check(result, data)


def test_connection_resets_on_a_reducer_link(lab: Lab) -> None:
    helpers.require_tool("nft", why="the connection-reset test resets TCP connections with "
                                    "nftables (apt-get install nftables)")
    # Given nftables answering every third data segment that reaches node n2's shuffle
    # port with a TCP reset (for the first 150 kB of it): a reset connection loses what its
    # sender had queued, so map output chunks sent to n2's reducer are lost for good,
    n2 = lab.hosts["n2"].ns
    with _nft_table(n2, "pymrreset", ["input"], [
            f"input tcp dport {DEFAULT_BASE_PORT + 1} meta length > 120 quota until 150 kbytes "
            "numgen inc mod 3 == 2 counter reject with tcp reset"]) as counters:
        # when a job runs on every node,
        result, data = _run_job(lab, "resets", 80)
        resets = counters()
    # then connections were reset while it ran,
    assert sum(resets.values()) > 0, resets
    # the reducer asked for the chunks it missed and their mappers sent them again (the
    # summary counts it), and the answer is exact.
    err = _check(result, data)
    assert "re-sent to a reducer" in err, err
    print(f"resets on n2's shuffle port: {resets}; summary: {err.strip().splitlines()[-1]}")


def test_slow_link_on_a_node(lab: Lab) -> None:
    # Given node n3 behind a 2 Mbit/s link (tc tbf),
    helpers.require_tool("tc", why=TC_WHY)
    n3 = lab.hosts["n3"].ns
    _netns(n3, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "2mbit",
           "burst", "16kbit", "latency", "800ms")
    try:
        # when a job runs,
        job, result, data = _start_job(lab, "slowlink", 40)
        job.join(timeout=300)
        assert not job.is_alive(), "the job did not finish"
    finally:
        _unslow(n3)
    # then the answer is exact.
    _check(result, data)


def test_a_node_link_goes_down_then_up(lab: Lab) -> None:
    # Given a long job from a slowed client,
    _slow_client(lab)
    n1 = lab.hosts["n1"].ns
    try:
        job, result, data = _start_job(lab, "linkdown", 80)
        # when node n1's link goes down while the job maps
        _wait_job_on(lab, "n1")
        _netns(n1, "ip", "link", "set", "eth0", "down")
        job.join(timeout=300)
        assert not job.is_alive(), "the job did not finish"
    finally:
        _netns(n1, "ip", "link", "set", "eth0", "up", check=False)
        _netns(n1, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0", check=False)
        _unslow(lab.hosts["client"].ns)
    # then the job finished with the exact answer on the other nodes, saying n1 was lost.
    err = _check(result, data)
    assert "lost" in err, err
