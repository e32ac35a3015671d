"""Fail-fast hellos, ``--nodes HOST`` and ``pymr doctor`` on loopback.

mDNS here is pinned to 127.0.0.1 (``--interface``); nodes are embedded ones on loopback,
which do not advertise: to mDNS they are invisible, by unicast they answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymr.cli import main as cli
from pymr.net.security import ClusterKey
from pymr.net.status import probe
from pymr.runtime.cluster import LocalCluster
from pymr.runtime.state import open_state
from pymr.wire.protocol import PROTOCOL_VERSION
from tests import helpers

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def embedded() -> Iterator[LocalCluster]:
    with LocalCluster(nodes=2, slots=1) as cluster:
        yield cluster


def test_hello_fails_fast_on_another_key_and_a_closed_port(embedded: LocalCluster) -> None:
    # Given a node of another cluster and a port where nothing listens,
    import socket

    closed = socket.socket()
    closed.bind((LOOPBACK, 0))
    port = closed.getsockname()[1]
    try:
        started = time.monotonic()
        sts = probe([(embedded.control_endpoints[0], None), (f"tcp://{LOOPBACK}:{port}", None)],
                    ClusterKey.generate(), timeout_s=10, want_status=False, fail_fast=True)
        took = time.monotonic() - started
    finally:
        closed.close()
    # when a fail-fast hello is sent, then each fails at once, with the reason.
    assert [st.failure for st in sts] == ["key", "connect"]
    assert "another cluster" in sts[0].error and "no answer" in sts[1].error
    assert took < 5, took


def test_a_member_answers_with_its_python_and_peers(embedded: LocalCluster) -> None:
    sts = probe([(ep, None) for ep in embedded.control_endpoints], embedded.key,
                want_status=False, want_peers=True, fail_fast=True,
                member={"node_id": "feedf00d", "name": "joiner",
                        "endpoint": f"tcp://{LOOPBACK}:9"})
    assert all(st.reachable and st.hello and st.hello.python_version for st in sts)
    # The second node names the joiner that said hello to it (it joined through it).
    again = probe([(embedded.control_endpoints[1], None)], embedded.key, want_status=False,
                  want_peers=True)
    peers = again[0].hello.peers if again[0].hello else []
    assert {"node_id": "feedf00d", "name": "joiner", "endpoint": f"tcp://{LOOPBACK}:9"} in peers


def _doctor(home: Path, *args: str) -> tuple[int, dict, str]:
    r = subprocess.run([sys.executable, "-m", "pymr", "doctor", "--json", "--home", str(home),
                        "--interface", LOOPBACK, "--discover", "0.5", *args],
                       capture_output=True, text=True, timeout=60,
                       env=helpers.subprocess_env(), stdin=subprocess.DEVNULL)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}, r.stderr


def checks(doc: dict) -> dict[str, dict]:
    return {c["check"]: c for c in doc["checks"]}


def test_doctor_without_a_key(tmp_path: Path) -> None:
    code, doc, err = _doctor(tmp_path / "fresh")
    assert code == 1 and doc["ok"] is False, err
    key = checks(doc)["cluster key"]
    assert key["verdict"] == "fail" and "pymr key import" in key["fix"]
    assert checks(doc)["interfaces"]["detail"].startswith("chosen: lo 127.0.0.1/8")


def test_doctor_with_one_address_names_blocked_multicast(embedded: LocalCluster,
                                                         tmp_path: Path) -> None:
    # Given a member of the cluster whose nodes answer by unicast but not by mDNS,
    home = tmp_path / "client"
    open_state(home).save_key(embedded.key)
    first = embedded.control_endpoints[0].removeprefix("tcp://")
    # when the doctor starts from one address,
    code, doc, err = _doctor(home, "--nodes", first)
    # then it finds that node, says multicast is blocked, and exits 1.
    assert code == 1, err
    c = checks(doc)
    assert c["multicast lo"]["verdict"] == "fail", c["multicast lo"]
    assert "multicast is blocked" in c["multicast lo"]["detail"]
    assert "UDP 5353" in c["multicast lo"]["fix"]
    assert c["members"]["verdict"] == "ok"
    found = {m["endpoint"]: m for m in doc["members"]}
    assert first in found and found[first]["found_by"] == "--nodes"
    m = found[first]
    assert m["protocol"] == PROTOCOL_VERSION and m["python"] and m["unicode"] and m["rtt_ms"] > 0
    # The next run remembers it: no address needed.
    code, doc, _ = _doctor(home)
    assert {m["found_by"] for m in doc["members"]} == {"remembered"}


def test_bad_addresses_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    open_state(tmp_path / "h").save_key(ClusterKey.generate())
    for argv in (["doctor", "--nodes", "a b"], ["node", "--join", "h:x", "--interface", LOOPBACK],
                 ["status", "--nodes", "h:0"], ["events", "--nodes", "h/x"]):
        code = cli.main([*argv, "--home", str(tmp_path / "h")])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "is not HOST or HOST:PORT" in lines[0], err
