"""Faults on the simulated LAN: lossy, slow and dropped links (root + ip netns, else skipped).

Each job runs from the client host with its input on a private tmpfs (the bytes travel
over the network) and is compared with a single-process count.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Any

import pytest

from .lab import Lab, run_private_job
from .test_lan import expected_rows, make_input, parse_tsv

NFT = shutil.which("nft")


def _netns(host_ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", host_ns, *argv], capture_output=True,
                          text=True, check=check, timeout=30)


def _slow_client(lab: Lab) -> None:
    """A Wi-Fi-like client link so that the job lasts long enough to hurt it mid-way."""
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
    from tests.helpers import wait_until

    h = lab.hosts[host]
    assert wait_until(lambda: any(
        n.get("jobs") for n in h.status("--nodes", f"{h.address}:7372")["nodes"]
        if n.get("reachable")), 60), "the job never started on " + host


def _check(result: dict[str, Any], data: bytes) -> str:
    r = result["r"]
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert parse_tsv(r.stdout) == expected_rows(data)
    return str(r.stderr.decode(errors="replace"))


@pytest.mark.skipif(NFT is None, reason="nftables (nft) is not installed")
def test_random_packet_loss_on_a_node_link(lab: Lab) -> None:
    # Given nftables dropping 3 % of the packets in and out of node n2 (numgen random),
    n2 = lab.hosts["n2"].ns
    rules = ("add table inet pymrloss\n"
             "add chain inet pymrloss in { type filter hook input priority 0; }\n"
             "add chain inet pymrloss out { type filter hook output priority 0; }\n"
             "add rule inet pymrloss in numgen random mod 100 < 3 drop\n"
             "add rule inet pymrloss out numgen random mod 100 < 3 drop\n")
    subprocess.run(["ip", "netns", "exec", n2, "nft", "-f", "-"], input=rules, text=True,
                   check=True, timeout=30)
    try:
        # when a job runs on every node,
        job, result, data = _start_job(lab, "lossy", 40)
        job.join(timeout=300)
        assert not job.is_alive(), "the job did not finish"
    finally:
        _netns(n2, "nft", "delete", "table", "inet", "pymrloss", check=False)
    # then its answer is exact (TCP retransmits; lost chunks are fetched again).
    _check(result, data)


def test_slow_link_on_a_node(lab: Lab) -> None:
    # Given node n3 behind a 2 Mbit/s link (tc tbf),
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
