"""The discovery ladder on a LAN whose bridge drops multicast (network namespaces, root).

The lab's bridge drops every IPv4 multicast frame (nftables in the bridge's namespace),
as a Wi-Fi access point with multicast filtering or client isolation does: mDNS finds
nothing. n1 runs a plain node, n2 joins through n1 and n3 through n2 (``--join``). The
scenarios run in order, as a user would meet them: one address finds the cluster, the
next job finds it from memory, a new node joins with ``--join``, ``pymr doctor`` names
the blocked multicast, a remembered address taken by another cluster is ignored; then
multicast comes back, a node's control port is dropped, and with everything working the
doctor exits 0.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pymr.wire.protocol import PROTOCOL_VERSION
from tests import helpers

from .lab import Host, Lab, run_private_job
from .test_lan import _figure, by_id, make_input, node_ids

wait_until = helpers.wait_until

BLOCK_MULTICAST = """add table bridge pymrmc
add chain bridge pymrmc forward_mc { type filter hook forward priority 0; }
add rule bridge pymrmc forward_mc ip daddr 224.0.0.0/4 drop
"""
DROP_CONTROL = """add table inet pymrdrop
add chain inet pymrdrop input { type filter hook input priority 0; }
add rule inet pymrdrop input tcp dport 7372 drop
"""
#: Jobs timed for the figure "first rung to the job's start".
TIMED_RUNS = 5




def _nft(ns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True,
                   check=True, timeout=30, capture_output=True)


def _nft_delete(ns: str, family: str, table: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", family, table],
                   check=False, timeout=30, capture_output=True)


def wait_output(host: Host, text: str, timeout_s: float = 30) -> None:
    wait_until(lambda: text in host.node_output(), timeout_s,
               lambda: f"{text!r} from the node on {host.name}; its log:\n{host.node_output()}")


@pytest.fixture(scope="module")
def lab(_lab_available: None) -> Iterator[Lab]:
    """client + n1..n3 on a bridge that drops multicast; n2 joins via n1, n3 via n2.

    Every namespace is made inside the ``try``: a failure half-way still removes them."""
    helpers.require_tool("nft", why="the discovery ladder's bridge drops multicast with "
                                    "nftables (apt-get install nftables)")
    lab = Lab(tag=f"d{os.getpid()}")
    try:
        lab.create()
        _nft(lab.bridge_ns, BLOCK_MULTICAST)
        client = lab.add_host("client")
        n1, n2, n3 = (lab.add_host(f"n{i}") for i in (1, 2, 3))
        n1.pymr("keygen", check=True)
        lab.token = n1.pymr("key", "export", check=True).stdout.strip()
        for h in (client, n2, n3):
            assert h.pymr("key", "import", lab.token).returncode == 0
        n1.start_node("--slots", "1", "--name", "n1", wait=False)
        n2.start_node("--slots", "1", "--name", "n2", "--join", n1.address, wait=False)
        n3.start_node("--slots", "1", "--name", "n3", "--join", n2.address, wait=False)
        for h in (n1, n2, n3):
            h.wait_serving()
        wait_output(n2, "reached seed")
        wait_output(n3, "reached seed")
        yield lab
    finally:
        lab.destroy()
        assert not lab.leftovers(), "lab namespaces left behind"


def job(lab: Lab, name: str, *args: str) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    src = lab.dir / f"{name}.txt"
    data = make_input(src, 4)                  # 800 KiB: a dozen splits of 64 KiB
    r = run_private_job(lab, "client", src, "--split-size", "64K", *args)
    assert r.returncode == 0, r.stderr.decode()
    helpers.assert_wordcount(r.stdout, data)
    return r, data


def doctor(host: Host, *args: str) -> tuple[int, dict[str, Any]]:
    r = host.pymr("doctor", "--json", *args, timeout=60)
    assert r.stdout.strip(), f"doctor printed nothing (exit {r.returncode}): {r.stderr}"
    return r.returncode, json.loads(r.stdout)


def failing(doc: dict[str, Any]) -> list[dict[str, str]]:
    return [c for c in doc["checks"] if c["verdict"] == "fail"]


# ---------------------------------------------------------------- multicast blocked


def test_no_node_found_says_what_was_tried(lab: Lab) -> None:
    # Given a client that has never reached the cluster, on a network without multicast,
    doc = lab.hosts["client"].status()
    # then status finds nobody, and says which rungs it tried and what to run next.
    assert doc["exit_code"] == 1 and doc["nodes"] == []
    err = doc["stderr"]
    for part in ("no node found", "mDNS: no answer", "remembered: nothing remembered yet",
                 "peer exchange: nobody to ask", "pymr doctor", "--nodes HOST"):
        assert part in err, (part, err)


def test_one_seed_address_uses_all_three_nodes(lab: Lab) -> None:
    client, n1 = lab.hosts["client"], lab.hosts["n1"]
    ids = set(node_ids(lab, ["n1", "n2", "n3"]))
    before = by_id(client.status("--nodes", n1.address))
    assert set(before) == ids                   # n1 named n2; n2 named n3
    # When a job names one address (no port: the default control port),
    r, _ = job(lab, "seed", "--nodes", n1.address)
    err = r.stderr.decode()
    # then it runs on all three nodes, found by peer exchange,
    assert "using 3 node(s)" in err, err
    assert "n1 (" in err and "--nodes)" in err and "peer exchange via" in err, err
    after = by_id(client.status("--nodes", n1.address))
    assert all(after[i]["tasks_done"] > before[i]["tasks_done"] for i in ids), after
    # and the client remembers them, with their addresses, ports and ids.
    remembered = json.loads((client.home / "peers.json").read_text())["members"]
    assert {m["node_id"] for m in remembered} == ids
    assert all(m["endpoint"].endswith(":7372") and m["last_seen"] > 0 for m in remembered)


def test_a_later_job_finds_them_from_memory(lab: Lab) -> None:
    # After one job, a job with no flag finds the nodes from memory (mDNS hears nothing).
    r, _ = job(lab, "memory")
    err = r.stderr.decode()
    assert "mDNS: no answer" in err and "remembered: 3 of 3 answered" in err, err
    assert "using 3 node(s)" in err and err.count(", remembered)") == 3, err
    # The time from the first rung to the job's start (every node acknowledged it): from
    # memory, and from one seed address.
    _time_to_start(lab, "multicast_blocked")
    _time_to_start(lab, "multicast_blocked_one_seed", "--nodes", lab.hosts["n1"].address)


def _time_to_start(lab: Lab, label: str, *args: str) -> None:
    ladder, start = [], []
    src = lab.dir / "timed.txt"
    make_input(src, 1)
    for _ in range(TIMED_RUNS):
        r = run_private_job(lab, "client", src, "--debug", *args)
        err = r.stderr.decode()
        assert r.returncode == 0, err
        ladder.append(float(re.search(r"discovery: .* \(([0-9.]+) s\)\n", err).group(1)))
        start.append(float(re.search(r"the job started .* ([0-9.]+) s after discovery",
                                     err).group(1)))
    _figure(f"ladder_{label}", {
        "median_first_rung_to_job_start_s": round(statistics.median(start), 3),
        "max_first_rung_to_job_start_s": round(max(start), 3),
        "median_ladder_s": round(statistics.median(ladder), 3), "runs": TIMED_RUNS})


def test_a_node_started_with_join_is_used_by_the_next_job(lab: Lab) -> None:
    # Given a new node that knows only n3's address,
    n4 = lab.add_node("n4", "--name", "n4", "--join", lab.hosts["n3"].address)
    wait_output(n4, "reached seed")
    (n4_id,) = node_ids(lab, ["n4"])
    # when the client runs its next job with no flag,
    r, _ = job(lab, "joined")
    err = r.stderr.decode()
    # then n4 takes part, found by asking the remembered members (and is remembered now).
    assert "using 4 node(s)" in err, err
    assert re.search(r"n4 \([0-9.]+:7372, 1 slot, peer exchange via n[123]\)", err), err
    node = by_id(lab.hosts["client"].status())[n4_id]
    assert node["rung"] == "memory" and node["tasks_done"] > 0, node


def test_doctor_names_blocked_multicast(lab: Lab) -> None:
    for host in ("client", "n1"):
        code, doc = doctor(lab.hosts[host])
        assert code == 1, doc
        checks = {c["check"]: c for c in doc["checks"]}
        mc = checks["multicast eth0"]
        assert mc["verdict"] == "fail" and "multicast is blocked" in mc["detail"], mc
        assert "224.0.0.251" in mc["fix"]
        assert {m["name"] for m in doc["members"]} == {"n1", "n2", "n3", "n4"}
        assert all(m["protocol"] == PROTOCOL_VERSION and m["python"] and m["unicode"]
                   and m["rtt_ms"] > 0 for m in doc["members"]), doc["members"]
        assert [c["check"] for c in failing(doc)] == ["multicast eth0"], failing(doc)
    # On a node's machine it checks its own ports and its firewall rules too.
    assert checks["node ports"]["verdict"] == "ok" and "control 7372" in \
        checks["node ports"]["detail"]
    assert checks["firewall"]["verdict"] == "ok", checks["firewall"]


def test_remembered_address_taken_by_another_cluster_is_ignored(lab: Lab) -> None:
    client = lab.hosts["client"]
    # Given a member x1 that the client has reached and remembers,
    x1 = lab.add_node("x1", "--name", "x1", "--join", lab.hosts["n1"].address)
    wait_output(x1, "reached seed")
    (old_id,) = node_ids(lab, ["x1"])
    wait_until(lambda: old_id in by_id(client.status()), 30, "the client to see x1")
    # when that machine leaves and its address is taken by a node of another cluster,
    assert x1.stop_node() == 0
    other_home = x1.home.parent / "other-home"
    assert x1.pymr("keygen", "--home", str(other_home)).returncode == 0
    x1.start_node("--slots", "1", "--name", "stranger", "--home", str(other_home), wait=False)
    wait_until(lambda: x1.node_output().count("serving cluster") == 2, 60,
               lambda: f"the stranger node to serve; its log:\n{x1.node_output()}")
    # then the client ignores it, says why, and forgets it,
    r, _ = job(lab, "stranger")
    err = r.stderr.decode()
    assert f"remembered x1 ({x1.address}:7372): it now answers with another cluster's key; " \
           "forgotten" in err, err
    assert "using 4 node(s)" in err and "stranger" not in err.split("using")[1], err
    remembered = json.loads((client.home / "peers.json").read_text())["members"]
    assert old_id not in {m["node_id"] for m in remembered}
    x1.stop_node()


# ---------------------------------------------------------------- multicast back


def test_doctor_names_a_node_whose_control_port_is_dropped(lab: Lab) -> None:
    _nft_delete(lab.bridge_ns, "bridge", "pymrmc")           # multicast works again
    n2 = lab.hosts["n2"]
    _nft(n2.ns, DROP_CONTROL)
    try:
        code, doc = doctor(lab.hosts["client"])
        assert code == 1
        named = [c for c in failing(doc) if "n2" in c["detail"]]
        assert named, doc["checks"]
        assert "7372" in named[0]["detail"] and "advertised by mDNS" in named[0]["detail"]
        assert "tcp 7370-7373" in named[0]["fix"]
        # On n2 itself the doctor finds the rule.
        code, doc = doctor(n2)
        rules = [c for c in failing(doc) if c["check"] == "firewall"]
        assert code == 1 and rules, doc["checks"]
        assert "tcp dport 7372 drop" in rules[0]["detail"]
        assert rules[0]["fix"] == "nft insert rule inet pymrdrop input tcp dport 7370-7373 accept"
    finally:
        _nft_delete(n2.ns, "inet", "pymrdrop")


def test_everything_working_doctor_exits_0_and_lists_every_node_by_mdns(lab: Lab) -> None:
    ids = set(node_ids(lab, ["n1", "n2", "n3", "n4"]))

    def clean() -> tuple[int, dict[str, Any]]:
        return doctor(lab.hosts["client"])

    code, doc = clean()
    if code != 0:                # n2's keepers and caches settle after its port came back
        wait_until(lambda: clean()[0] == 0, 30,
                   lambda: f"a clean doctor; failing: {failing(clean()[1])}")
        code, doc = clean()
    assert code == 0 and doc["ok"], failing(doc)
    assert {m["node_id"] for m in doc["members"]} == ids
    assert {m["found_by"] for m in doc["members"]} == {"mDNS"}, doc["members"]
    checks = {c["check"]: c for c in doc["checks"]}
    assert checks["multicast eth0"]["verdict"] == "ok"
    _time_to_start(lab, "multicast_working")

