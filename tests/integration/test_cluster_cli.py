"""`pymr node`, discovery, `pymr job`, `pymr status`, `pymr events` and keys on loopback.

mDNS here is pinned to 127.0.0.1 (``--interface 127.0.0.1`` / ``PYMR_INTERFACE``):
nothing is sent on the machine's real interfaces.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pymr.cli import main as cli
from pymr.cli.cluster import WATCH_INTERVAL_S
from pymr.cli.discovery import job_discovery
from pymr.errors import ConfigError
from pymr.net.discovery import (
    Advert,
    Advertiser,
    browse,
    dns_label,
    instance_label,
    select_addresses,
    usable_by_default,
)
from pymr.net.security import ClusterKey
from pymr.runtime.placement import Embedded, OnNodes, Placement, PlacementRequest, place
from pymr.runtime.state import open_state
from tests import helpers

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "sample.txt"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 60.0


def _env() -> dict[str, str]:
    return helpers.subprocess_env(clean=True, PYMR_INTERFACE=LOOPBACK)


def pymr(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymr", *args], env=_env(),
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class Node:
    home: Path
    log: Path
    proc: subprocess.Popen[bytes]
    procs: list[Any] = field(default_factory=list)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_serving(self) -> None:
        helpers.wait_serving(self.proc, self.output, START_TIMEOUT_S, f"node {self.home.name}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return helpers.stop_process(self.proc, sig)

    @property
    def node_id(self) -> str:
        return (self.home / "node_id").read_text().strip()


class Nodes:
    """Starts ``pymr node`` processes on loopback and stops every one of them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes: list[Node] = []

    def start(self, home: Path, *args: str, wait: bool = True) -> Node:
        log = self.tmp / f"node-{len(self.nodes)}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pymr", "node", "--home", str(home), "--slots", "1",
                 "--interface", LOOPBACK, *args],
                env=_env(), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        node = Node(home, log, proc)
        self.nodes.append(node)
        if wait:
            node.wait_serving()
        return node

    def close(self) -> None:
        for n in self.nodes:
            if n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            n.stop(signal.SIGKILL)


def make_home(tmp: Path, name: str, token: str | None = None) -> Path:
    home = tmp / name
    if token:
        r = pymr("key", "import", token, "--home", str(home))
        assert r.returncode == 0, r.stderr
    return home


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two nodes of one cluster on loopback, plus a client home holding the key."""
    tmp = tmp_path_factory.mktemp("cluster")
    first = tmp / "a"
    r = pymr("keygen", "--home", str(first))
    assert r.returncode == 0, r.stderr
    token = pymr("key", "export", "--home", str(first)).stdout.strip()
    nodes = Nodes(tmp)
    try:
        a = nodes.start(first, "--port", "0", "--name", "laptop.home", wait=False)
        b = nodes.start(make_home(tmp, "b", token), "--port", "0", wait=False)
        a.wait_serving()
        b.wait_serving()
        yield {"tmp": tmp, "token": token, "nodes": nodes, "a": a, "b": b,
               "client": make_home(tmp, "client", token)}
    finally:
        nodes.close()


def status_json(home: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    r = pymr("status", "--json", "--home", str(home), *args, timeout=60)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}, r.stderr


def place_job(home: Path, **kw: Any) -> Placement:
    """Where ``pymr job --home HOME`` would run, with the discovery ladder of the CLI (mDNS
    on loopback); ``kw``: more ``PlacementRequest`` fields."""
    request = PlacementRequest(home=str(home), interface=LOOPBACK, **kw)
    return place(request, job_discovery(), say=lambda text: print(f"pymr: {text}",
                                                                   file=sys.stderr))


# ---------------------------------------------------------------- names, addresses, state


def test_instance_names_are_single_dns_labels() -> None:
    assert dns_label("laptop.home") == "laptop-home"
    assert instance_label("laptop.home", "ab12cd34") == "laptop-home-ab12cd34"
    assert instance_label("Büro PC (2)", "ab12cd34") == "B-ro-PC-2-ab12cd34"
    long = instance_label("x" * 200, "ab12cd34")
    assert len(long) == 63 and long.endswith("-ab12cd34")
    assert instance_label("...", "ab12cd34") == "pymr-ab12cd34"


def test_address_selection() -> None:
    assert select_addresses(LOOPBACK) == [LOOPBACK]
    assert select_addresses("lo") == [LOOPBACK]
    with pytest.raises(ConfigError):
        select_addresses("no-such-interface0")
    with pytest.raises(ConfigError):
        select_addresses("203.0.113.77")         # not an address of this machine
    assert not usable_by_default("lo", "127.0.0.1")
    assert not usable_by_default("docker0", "172.17.0.1")
    assert not usable_by_default("br-1234abcd", "172.18.0.1")
    assert not usable_by_default("veth12ab", "10.1.2.3")
    assert not usable_by_default("virbr0", "192.168.122.1")
    assert not usable_by_default("wlan0", "169.254.3.4")
    assert usable_by_default("wlan0", "192.168.1.20")
    assert usable_by_default("eth0", "198.18.80.11")


def test_state_dir_node_id_and_key_file(tmp_path: Path) -> None:
    state = open_state(tmp_path / "h")
    node_id = state.node_id()
    assert len(node_id) == 8 and int(node_id, 16) >= 0
    assert open_state(tmp_path / "h").node_id() == node_id          # persistent
    key = ClusterKey.generate()
    state.save_key(key)
    assert stat.S_IMODE(state.key_file.stat().st_mode) == 0o600
    assert state.load_key() == key
    with pytest.raises(ConfigError):
        state.save_key(ClusterKey.generate())                       # never silently replaced
    os.chmod(state.key_file, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        state.load_key()


def test_key_export_import_round_trip_even_with_colons(tmp_path: Path) -> None:
    # z85 uses ':' too; a token must survive it.
    key = next(k for k in iter(ClusterKey.generate, None) if b":" in k.public)
    assert ClusterKey.from_token(key.export_token()) == key
    src, dst = tmp_path / "src", tmp_path / "dst"
    open_state(src).save_key(key)
    token = pymr("key", "export", "--home", str(src)).stdout.strip()
    r = pymr("key", "import", token, "--home", str(dst))
    assert r.returncode == 0 and key.fingerprint in r.stderr
    assert open_state(dst).load_key() == key
    other = ClusterKey.generate().export_token()
    r = pymr("key", "import", other, "--home", str(dst))
    assert r.returncode == 2 and "--force" in r.stderr
    assert pymr("key", "import", other, "--home", str(dst), "--force").returncode == 0
    assert pymr("key", "import", "pymr1:garbage", "--home", str(dst)).returncode == 2


# ---------------------------------------------------------------- discovery


def test_status_finds_every_node(cluster: dict[str, Any]) -> None:
    code, doc, err = status_json(cluster["client"])
    assert code == 0, err
    live = {n["node_id"]: n for n in doc["nodes"] if n["reachable"]}
    assert set(live) == {cluster["a"].node_id, cluster["b"].node_id}
    a = live[cluster["a"].node_id]
    assert a["name"] == "laptop.home" and a["instance"] == f"laptop-home-{a['node_id']}"
    assert a["addresses"] == [LOOPBACK] and a["slots"] == 1 and a["version"]
    # The table, and the exit code when a node answers.
    r = pymr("status", "--home", str(cluster["client"]))
    assert r.returncode == 0 and "2 of 2 node(s) answered" in r.stdout
    assert "laptop.home" in r.stdout and "unreachable" not in r.stdout
    # --watch refreshes until Ctrl-C, then exits 0.
    watch = subprocess.Popen([sys.executable, "-m", "pymr", "status", "--watch", "--home",
                              str(cluster["client"])], env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        # The scenario: run past one refresh period. Off a terminal, rich's Live prints only
        # its last frame (at exit), so there is no refresh to poll for.
        time.sleep(WATCH_INTERVAL_S * 1.5)
    finally:
        watch.send_signal(signal.SIGINT)
        out, _ = watch.communicate(timeout=15)
    assert watch.returncode == 0 and b"2 of 2 node(s) answered" in out, out


def test_job_uses_discovered_nodes_and_equals_reference(cluster: dict[str, Any],
                                                        tmp_path: Path) -> None:
    # Given a cluster of two nodes and 'pymr events' following them,
    src = tmp_path / "in.txt"
    data = b"".join(b"copy %d\n" % i + SAMPLE.read_bytes() for i in range(12))
    src.write_bytes(data)
    events_log = tmp_path / "events.log"
    with open(events_log, "wb") as f:
        events = subprocess.Popen(
            [sys.executable, "-m", "pymr", "events", "--json", "--no-heartbeats",
             "--duration", "60", "--home", str(cluster["client"])],
            env=_env(), stdout=f, stderr=subprocess.STDOUT)
    try:
        helpers.wait_until(lambda: events_log.read_text().count("following") >= 2, 20,
                           lambda: f"'pymr events' following 2 nodes: {events_log.read_text()}")
        # when a job runs from a machine with the key,
        out = tmp_path / "out.tsv"
        r = pymr("job", "wordcount", str(src), "--home", str(cluster["client"]),
                 "--split-size", "256K", "-o", str(out))
        # then it uses both nodes, says so, and the answer is exact,
        assert r.returncode == 0, r.stderr
        assert "using 2 node(s)" in r.stderr
        helpers.assert_wordcount(out.read_bytes(), data)
        # and 'pymr events' showed progress lines.
        helpers.wait_until(lambda: '"progress"' in events_log.read_text(), 10,
                           lambda: f"progress lines from 'pymr events': "
                                   f"{events_log.read_text()}")
    finally:
        events.send_signal(signal.SIGINT)
        events.wait(timeout=15)


def test_job_without_key_runs_embedded_at_once(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert place_job(tmp_path / "fresh") == Embedded(nodes=1, slots=0)
    assert time.monotonic() - started < 0.5            # no browsing, no delay
    assert capsys.readouterr().err == ""


def test_job_with_key_but_no_node_of_its_cluster(cluster: dict[str, Any], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "other"
    open_state(home).save_key(ClusterKey.generate())
    assert place_job(home, discover_s=3.0) == Embedded(nodes=1, slots=0, fallback=True)
    err = capsys.readouterr().err
    assert "embedded local cluster" in err
    assert "another cluster" in err            # the two nodes seen were ignored, and why


def test_nodes_option(cluster: dict[str, Any], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    _, doc, _ = status_json(cluster["client"])
    nodes = ",".join(n["endpoint"].removeprefix("tcp://") for n in doc["nodes"])
    found = place_job(cluster["client"], nodes=nodes)
    assert isinstance(found, OnNodes) and len(found.endpoints) == 2 and not found.watch
    assert "mDNS: skipped (--nodes)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="pymr key import"):
        place_job(tmp_path / "nokey", nodes=nodes)
    code, doc, err = status_json(cluster["client"], "--nodes", nodes)
    assert code == 0 and doc["answered"] == 2
    assert cli.main(["job", "wordcount", str(SAMPLE), "--nodes", "localhost:notaport",
                     "--home", str(cluster["client"])]) == 2


def test_status_when_nothing_answers(tmp_path: Path) -> None:
    home = tmp_path / "lonely"
    open_state(home).save_key(ClusterKey.generate())
    code, doc, err = status_json(home, "--discover", "0.5")
    assert code == 1
    assert "no node found" in err and "--nodes" in err
    code, doc, err = status_json(home, "--nodes", "127.0.0.1:9", "--timeout", "0.5")
    assert code == 1 and doc["nodes"][0]["reachable"] is False
    assert "no answer" in doc["nodes"][0]["error"]


def test_other_cluster_and_other_protocol_are_ignored_with_reason(
        cluster: dict[str, Any]) -> None:
    key = open_state(cluster["client"]).load_key()

    class OldAdvert(Advert):
        def properties(self) -> dict[str, str]:
            return dict(super().properties(), v="99")

    strangers = [
        Advertiser(Advert("stranger", "5e5e5e5e", "0001", 1, 9, LOOPBACK, "f" * 16, "0.1.0"),
                   [LOOPBACK]),
        Advertiser(OldAdvert("oldtimer", "0d0d0d0d", "0002", 1, 9, LOOPBACK, key.fingerprint,
                             "0.0.1"), [LOOPBACK]),
    ]
    try:
        for s in strangers:
            s.start()
        res = browse([LOOPBACK], 2.0, fingerprint=key.fingerprint)
        reasons = {i.instance: i.reason for i in res.ignored}
        assert "another cluster" in reasons["stranger-5e5e5e5e"]
        assert "protocol 99" in reasons["oldtimer-0d0d0d0d"]
        assert {n.node_id for n in res.nodes} == {cluster["a"].node_id, cluster["b"].node_id}
        code, doc, _ = status_json(cluster["client"], "--discover", "2")
        assert code == 0
        assert {i["instance"] for i in doc["ignored"]} >= {"stranger-5e5e5e5e",
                                                           "oldtimer-0d0d0d0d"}
        r = pymr("status", "--home", str(cluster["client"]), "--discover", "2")
        # (other test runs on this machine may add nodes of their own clusters)
        assert re.search(r"ignored \d+ node\(s\)", r.stdout.replace("\n", " ")), r.stdout
    finally:
        for s in strangers:
            s.close()


# ---------------------------------------------------------------- node life cycle


def test_node_without_key_sees_a_cluster_and_says_how_to_join(cluster: dict[str, Any],
                                                              tmp_path: Path) -> None:
    r = pymr("node", "--home", str(tmp_path / "new"), "--interface", LOOPBACK,
             "--discover", "2", "--slots", "1", timeout=60)
    assert r.returncode == 2
    assert "pymr key import" in r.stderr and "found a pymr cluster" in r.stderr
    assert not (tmp_path / "new" / "cluster.key").exists()


def test_founding_port_fallback_and_sigterm(tmp_path: Path) -> None:
    # Given a taken base port,
    taken = socket.socket()
    taken.bind((LOOPBACK, 0))
    taken.listen()
    port = taken.getsockname()[1]
    nodes = Nodes(tmp_path)
    try:
        # when a node with no key starts alone (--discover 0) on that port,
        home = tmp_path / "founder"
        node = nodes.start(home, "--discover", "0", "--port", str(port))
        out = node.output()
        # then it founds a cluster (key 0600, join token printed),
        assert "founded a new pymr cluster" in out and "pymr key import pymr1:" in out
        assert stat.S_IMODE((home / "cluster.key").stat().st_mode) == 0o600
        # serves on free ports, which it advertises,
        assert "are taken; using free ports" in out
        code, doc, _ = status_json(home)
        assert code == 0 and len(doc["nodes"]) == 1
        assert not doc["nodes"][0]["endpoint"].endswith(f":{port + 2}")
        # and on SIGTERM withdraws, exits 0 and vanishes from status.
        assert node.stop(signal.SIGTERM) == 0
        assert "advertisement was withdrawn" in node.output()
        code, doc, _ = status_json(home)
        assert code == 1 and doc["nodes"] == []
    finally:
        nodes.close()
        taken.close()


def test_a_second_node_on_the_same_home_is_refused(cluster: dict[str, Any],
                                                   tmp_path: Path) -> None:
    # Given node a running from its pymr home
    first = cluster["a"]
    assert first.proc.poll() is None
    # When a second 'pymr node' starts from the same home
    r = pymr("node", "--home", str(first.home), "--interface", LOOPBACK, "--slots", "1",
             "--port", "0", timeout=60)
    # Then it exits 2 with one line naming the running node, and node a serves on
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "already runs" in lines[0], r.stderr
    assert f"pid {first.proc.pid}" in lines[0], lines[0]
    assert first.proc.poll() is None


def test_copied_identity_is_detected(cluster: dict[str, Any], tmp_path: Path) -> None:
    # Given a second machine whose state directory is a copy of node a's,
    copy = tmp_path / "copy"
    shutil.copytree(cluster["a"].home, copy)
    nodes = Nodes(tmp_path)
    try:
        # when it starts with the same name,
        twin = nodes.start(copy, "--port", "0", "--name", "laptop.home")
        # then one of the two warns about the copied identity,
        helpers.wait_until(
            lambda: "state directory was copied" in twin.output() + cluster["a"].output(), 10,
            lambda: f"a warning about the copied identity; the twin's log: {twin.output()}")
        # and a job uses only one of them (one node id, one node).
        found = place_job(cluster["client"])
        assert isinstance(found, OnNodes) and len(found.endpoints) == 2 and found.watch
    finally:
        nodes.close()
