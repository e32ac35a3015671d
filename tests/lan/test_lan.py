"""pymr on a simulated LAN: nodes in network namespaces, discovery by mDNS on the bridge.

Every node host runs ``pymr node`` with default interface selection (it finds eth0 and
skips lo); the client host runs ``pymr job`` / ``pymr status`` like a user would.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pymr.config import DEFAULT_DISCOVER_S
from pymr.net.discovery import dns_label
from tests import helpers

from .lab import REPO, Lab, _env, run_private_job

wait_until = helpers.wait_until

SAMPLE = REPO / "samples" / "sample.txt"
#: Where measured figures go (optional): discovery times and throughput.
FIGURES = os.environ.get("PYMR_LAN_FIGURES")


def _figure(name: str, value: Any) -> None:
    print(f"LAN figure {name}: {value}")
    if FIGURES:
        path = Path(FIGURES)
        doc = json.loads(path.read_text()) if path.exists() else {}
        doc[name] = value
        path.write_text(json.dumps(doc, indent=2))


def make_input(path: Path, copies: int) -> bytes:
    """Sample text repeated (each copy tagged) -> a deterministic multi-split input."""
    sample = SAMPLE.read_bytes()
    data = b"".join(b"copy %d\n" % i + sample for i in range(copies))
    path.write_bytes(data)
    return data


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node_id"]: n for n in doc["nodes"] if n["reachable"]}


def node_ids(lab: Lab, names: list[str]) -> list[str]:
    return [(lab.hosts[n].home / "node_id").read_text().strip() for n in names]


# ---------------------------------------------------------------- tests


def test_every_node_discovered_within_default_window(lab: Lab) -> None:
    # Given three nodes on the LAN, when the client asks for status several times
    # with the default window, then every node is found every time.
    # Back to back, a node has often multicast its record less than a second before
    # (it answered the previous browser), and RFC 6762 rate limiting makes it answer
    # only the browser's second question (sent at 1 s); with a pause first, the first
    # question is answered.
    client = lab.hosts["client"]
    ids = set(node_ids(lab, ["n1", "n2", "n3"]))
    figures = {}
    for mode, pause_s in (("back_to_back", 0.0), ("after_1.2s_pause", 1.2)):
        per_run, per_node = [], []
        for _ in range(4):
            time.sleep(pause_s)     # the scenario itself, not synchronisation
            doc = client.status()
            assert doc["exit_code"] == 0, doc["stderr"]
            assert set(by_id(doc)) == ids
            seen = doc["seen_after_s"]
            assert len(seen) == 3
            assert max(seen.values()) < DEFAULT_DISCOVER_S
            per_run.append(max(seen.values()))
            per_node.extend(seen.values())
        figures[mode] = {"median_all_nodes_found_s": round(statistics.median(per_run), 3),
                         "max_s": round(max(per_run), 3),
                         "median_per_node_s": round(statistics.median(per_node), 3),
                         "runs": len(per_run)}
    _figure("discovery_3_nodes", dict(figures, window_s=DEFAULT_DISCOVER_S))
    # Status shows what the issue asks for.
    node = next(iter(by_id(doc).values()))
    for field in ("name", "addresses", "version", "slots", "busy", "tasks_done",
                  "bytes_processed", "uptime_s", "jobs"):
        assert field in node, field
    # The human table too.
    r = client.pymr("status")
    assert r.returncode == 0 and "3 of 3 node(s) answered" in r.stdout, r.stdout + r.stderr


def test_nodes_bind_only_their_advertised_address(lab: Lab) -> None:
    n1 = lab.hosts["n1"]
    r = n1.sh("ss -Htln")
    listening = [line.split()[3] for line in r.stdout.splitlines()]
    assert f"{n1.address}:7372" in listening, listening      # default base port 7370
    tcp_any = [a for a in listening if a.startswith(("0.0.0.0:", "*:", "[::]:"))]
    assert not tcp_any, f"a TCP socket listens on every address: {tcp_any}"


def test_job_uses_every_node_and_ships_bytes(lab: Lab) -> None:
    # Given a 32 MiB input that only the client can see (private tmpfs), and
    # 'pymr events' following every node,
    client = lab.hosts["client"]
    src = lab.dir / "input32.txt"
    data = make_input(src, 160)
    ids = set(node_ids(lab, ["n1", "n2", "n3"]))
    events = client.spawn("events", "--json", "--no-heartbeats", "--duration", "120",
                          log_name="events.log")
    events_log = client.home.parent / "client-events.log"
    wait_until(lambda: events_log.exists() and events_log.read_text().count("following") == 3,
               20, lambda: "'pymr events' following 3 nodes; its log: "
               + (events_log.read_text() if events_log.exists() else ""))
    before = by_id(client.status())
    tx_before = client.link_tx_bytes()
    # when the client runs the job with default discovery (many small splits: the master
    # hands tasks to the node with the most credit, so every node must get some),
    started = time.monotonic()
    r = run_private_job(lab, "client", src, "--split-size", "128K")
    wall = time.monotonic() - started
    # then the answer equals a single-process count,
    assert r.returncode == 0, r.stderr.decode()
    helpers.assert_wordcount(r.stdout, data)
    stderr = r.stderr.decode()
    assert "using 3 node(s)" in stderr, stderr
    # every node did map work and together they processed every byte,
    after = by_id(client.status())
    done = {i: after[i]["tasks_done"] - before[i]["tasks_done"] for i in before}
    assert all(n > 0 for n in done.values()), done
    processed = sum(after[i]["bytes_processed"] - before[i]["bytes_processed"] for i in before)
    assert processed == len(data)
    # the split bytes crossed the client's link (they were not read from a disk),
    sent = client.link_tx_bytes() - tx_before
    assert sent >= len(data), (sent, len(data))
    # and 'pymr events' printed progress lines from every node.

    def progress_nodes() -> set[str]:
        lines = [json.loads(x) for x in events_log.read_text().splitlines()
                 if x.startswith("{")]
        return {x["node_id"] for x in lines if x["type"] == "progress"}

    wait_until(lambda: progress_nodes() == ids, 10,
               lambda: f"progress lines from every node; seen from {progress_nodes()}")
    assert lab.stop(events, signal.SIGINT) == 0
    _figure("lan_job_32MiB_128K_splits", {
        "wall_s": round(wall, 2), "MiB_per_s": round(len(data) / (1 << 20) / wall, 1),
        "tasks_per_node": sorted(done.values()), "client_link_bytes": sent,
        "note": "wall = whole 'pymr job' process, discovery window included"})


def test_nodes_option_works_with_discovery_off(lab: Lab) -> None:
    # Given a client on another subnet behind a router (mDNS does not cross it),
    c2 = lab.hosts.get("c2") or lab.add_routed_host("c2")
    c2.pymr("key", "import", lab.token)
    doc = c2.status()
    assert by_id(doc) == {} and doc["exit_code"] == 1
    # when it names the nodes' control ports,
    nodes = ",".join(f"{lab.hosts[n].address}:7372" for n in ("n1", "n2", "n3"))
    src = lab.dir / "input-nodes.txt"
    data = make_input(src, 8)
    started = time.monotonic()
    r = run_private_job(lab, "c2", src, "--nodes", nodes, "--split-size", "256K")
    # then the job runs on them at once, with the right answer, and status works too.
    assert r.returncode == 0, r.stderr.decode()
    helpers.assert_wordcount(r.stdout, data)
    assert "mDNS: skipped (--nodes)" in r.stderr.decode()
    assert time.monotonic() - started < 60
    doc = c2.status("--nodes", nodes)
    assert doc["exit_code"] == 0 and len(by_id(doc)) == 3


def test_sigterm_node_vanishes_from_status(lab: Lab) -> None:
    client = lab.hosts["client"]
    n4 = lab.add_node("n4")
    (n4_id,) = node_ids(lab, ["n4"])
    assert n4_id in by_id(client.status())
    # When the node gets SIGTERM it withdraws its record and exits cleanly,
    assert n4.stop_node(signal.SIGTERM) == 0
    assert "advertisement was withdrawn" in n4.node_output()
    # its processes are gone (executors included),
    def leftover() -> list[str]:
        return subprocess.run(["ip", "netns", "pids", n4.ns], capture_output=True,
                              text=True).stdout.split()

    wait_until(lambda: leftover() == [], 10,   # multiprocessing's tracker exits last
               lambda: f"no process left in {n4.ns}: {leftover()}")
    # and status no longer lists it (not even as unreachable).
    doc = client.status()
    assert n4_id not in {n["node_id"] for n in doc["nodes"]}
    assert len(by_id(doc)) == 3


def test_two_nodes_with_the_same_name_both_appear(lab: Lab) -> None:
    client = lab.hosts["client"]
    twins = []
    try:
        for name in ("t1", "t2"):
            twins.append(lab.add_node(name, "--name", "raspberrypi", wait=False))
        for t in twins:
            t.wait_serving()
        doc = client.status()
        named = [n for n in doc["nodes"] if n["name"] == "raspberrypi"]
        assert len(named) == 2 and all(n["reachable"] for n in named), named
        assert len({n["node_id"] for n in named}) == 2
        assert len({n["instance"] for n in named}) == 2
        assert all(n["instance"].startswith("raspberrypi-") for n in named)
    finally:
        for t in twins:
            t.stop_node()


def test_node_without_key_sees_the_cluster_and_says_how_to_join(lab: Lab) -> None:
    newbie = lab.add_host("new")
    r = newbie.pymr("node", "--discover", "2", "--slots", "1", timeout=60)
    assert r.returncode == 2
    assert "pymr key import" in r.stderr and "found a pymr cluster" in r.stderr, r.stderr
    assert not (newbie.home / "cluster.key").exists()


def test_node_started_during_a_long_job_receives_tasks(lab: Lab) -> None:
    # Given a long job (the client's link is slowed to 16 Mbit/s, like a busy Wi-Fi),
    client = lab.hosts["client"]
    late = lab.hosts.get("late") or lab.add_host("late")
    late.pymr("key", "import", lab.token)
    src = lab.dir / "input-long.txt"
    data = make_input(src, 80)     # 16 MiB: about 8 s on the slowed link
    subprocess.run(["ip", "netns", "exec", client.ns, "tc", "qdisc", "add", "dev", "eth0",
                    "root", "tbf", "rate", "16mbit", "burst", "32kbit", "latency", "400ms"],
                   check=True)
    result: dict[str, Any] = {}
    try:
        job = threading.Thread(target=lambda: result.update(r=run_private_job(
            lab, "client", src, "--split-size", "128K")))
        job.start()
        # when a new node starts after the job has started mapping,
        n1 = lab.hosts["n1"]
        wait_until(lambda: any(n["jobs"] for n in n1.status("--nodes", f"{n1.address}:7372")
                               ["nodes"] if n["reachable"]), 30, "the job to run on n1")
        late.start_node("--slots", "1")
        assert job.is_alive(), "the job ended before the new node was up: make it longer"
        job.join(timeout=180)
    finally:
        subprocess.run(["ip", "netns", "exec", client.ns, "tc", "qdisc", "del", "dev",
                        "eth0", "root"], check=False)
    r = result["r"]
    assert r.returncode == 0, r.stderr.decode()
    helpers.assert_wordcount(r.stdout, data)
    # then it received map tasks.
    (late_id,) = node_ids(lab, ["late"])
    doc = client.status()
    late.stop_node()
    assert by_id(doc)[late_id]["tasks_done"] > 0


def test_lab_script_up_and_down() -> None:
    # The documented lab script builds and removes its own LAN (a second, small lab).
    script = REPO / "nodes" / "lab.sh"
    env = dict(_env(), LAB_NAME=f"lab-s{os.getpid()}", LAB_NET="79", PYTHON=sys.executable)
    prefix = f"pymr-{env['LAB_NAME']}-"
    try:
        up = subprocess.run(["bash", str(script), "up", "2", "--slots", "1"], env=env,
                            capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        st = subprocess.run(["bash", str(script), "exec", "client", "pymr", "status",
                             "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert st.returncode == 0, st.stderr
        assert json.loads(st.stdout)["answered"] == 2
    finally:
        down = subprocess.run(["bash", str(script), "down"], env=env, capture_output=True,
                              text=True, timeout=120)
        names = subprocess.run(["ip", "netns", "list"], capture_output=True,
                               text=True).stdout
        assert prefix not in names, names
    assert down.returncode == 0, down.stderr


def test_third_party_mdns_client_resolves_every_node(lab: Lab) -> None:
    for tool, package in (("avahi-browse", "avahi-utils"), ("avahi-daemon", "avahi-daemon"),
                          ("dbus-daemon", "dbus")):
        helpers.require_tool(tool, why=f"the third-party mDNS check runs avahi "
                                       f"(apt-get install {package})")
    # avahi (a strict DNS-SD implementation) runs inside the client's namespace, with its
    # own D-Bus socket on a private tmpfs: never in the root namespace.
    client = lab.hosts["client"]
    run_dir = lab.dir / "avahi"
    run_dir.mkdir(exist_ok=True)
    script = f"""
        set -e
        mount -t tmpfs pymr-dbus /run/dbus 2>/dev/null || {{ mkdir -p /run/dbus;
            mount -t tmpfs pymr-dbus /run/dbus; }}
        mkdir -p /run/avahi-daemon && mount -t tmpfs pymr-avahi /run/avahi-daemon
        dbus-daemon --system --fork --print-pid > {run_dir}/dbus.pid
        avahi-daemon --no-drop-root --no-chroot --no-rlimits > {run_dir}/avahi.log 2>&1 &
        echo $! > {run_dir}/avahi.pid
        trap 'kill $(cat {run_dir}/avahi.pid) $(cat {run_dir}/dbus.pid) 2>/dev/null' EXIT
        for i in $(seq 50); do avahi-browse -at >/dev/null 2>&1 && break; sleep 0.1; done
        timeout 20 avahi-browse -rtp _pymr._tcp
    """
    r = client.sh(script, timeout=60)
    resolved = [line.split(";") for line in r.stdout.splitlines() if line.startswith("=")]
    ids = set(node_ids(lab, ["n1", "n2", "n3"]))
    seen = {}
    for fields in resolved:
        txt = dict(kv.strip('"').split("=", 1) for kv in fields[9].split('" "'))
        seen[txt["id"]] = fields
        assert fields[3] == f"{dns_label(txt['name'])}-{txt['id']}"   # one DNS label
        assert txt["v"] and txt["fp"] and txt["port"] == fields[8]
    assert ids <= set(seen), r.stdout + r.stderr


def test_node_follows_an_address_change(lab: Lab) -> None:
    # Given a node (like a laptop whose DHCP lease changes),
    client = lab.hosts["client"]
    mover = lab.add_node("mover")
    (mover_id,) = node_ids(lab, ["mover"])
    new_address = mover.address.rsplit(".", 1)[0] + ".200"
    try:
        # when its address is replaced (the old one goes first, as with a new lease),
        subprocess.run(["ip", "-n", mover.ns, "addr", "del", f"{mover.address}/24", "dev",
                        "eth0"], check=True)
        subprocess.run(["ip", "-n", mover.ns, "addr", "add", f"{new_address}/24", "dev",
                        "eth0"], check=True)
        # then it serves and advertises the new one.

        def moved() -> bool:
            node = by_id(client.status()).get(mover_id)
            return node is not None and node["addresses"] == [new_address]

        wait_until(moved, 40, lambda: f"the node to serve {new_address}; its log:\n"
                   + mover.node_output())
        assert "is gone; restarting" in mover.node_output()
    finally:
        mover.stop_node()


HELPER_JOB = {
    "myjob/pairs.py": (
        '"""Word pairs, counted (the pairing rule lives in a helper module)."""\n'
        "from pymr.api import sum_values\n"
        "from pairing import pairs\n\n"
        "ORDER = \"value\"\n\n"
        "def map(line):\n"
        "    for pair in pairs(line.split()):\n"
        "        yield pair, 1\n\n"
        "combine = reduce = sum_values\n"),
    "myjob/pairing.py": (
        "def pairs(words):\n"
        "    return [a + \" \" + b for a, b in zip(words, words[1:])]\n"),
}


@pytest.mark.parametrize("job", ["user-file", "grep", "bigrams", "invert"])
def test_jobs_of_the_api_on_the_lan(lab: Lab, job: str) -> None:
    """Built-ins and a job file that only the client can read (with a helper module) on
    the three nodes; each answer against a single-process reference."""
    import io

    from pymr.engine.output import write_tsv
    from tests.integration import test_jobs as ref

    src = lab.dir / "input-jobs.txt"
    make_input(src, 12)
    private = Path(f"/tmp/{lab.prefix}-private-client") / "input.txt"
    if job == "user-file":
        r = run_private_job(lab, "client", src, "--split-size", "64K", "-q",
                            job="{private}/myjob/pairs.py", job_files=HELPER_JOB)
        counts: dict[str, int] = {}
        for line in ref.lines_of(src):
            words = line.split()
            for a, b in zip(words, words[1:], strict=False):
                counts[a + " " + b] = counts.get(a + " " + b, 0) + 1
        records: list[Any] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    else:
        params = ["-p", "pattern=the"] if job == "grep" else []
        r = run_private_job(lab, "client", src, "--split-size", "64K", "-q", *params, job=job)
        records = {"grep": lambda: ref.ref_grep([src], "the"),
                   "bigrams": lambda: ref.ref_bigrams([src]),
                   "invert": lambda: ref.ref_invert([src])}[job]()
    assert r.returncode == 0, r.stderr.decode()
    expected = io.BytesIO()
    write_tsv(records, expected)
    assert r.stdout == expected.getvalue().replace(str(src).encode(), str(private).encode())
