"""Hostile peers against real nodes on loopback, the cluster key, and ``--builtin-only``.

While a real job runs on a ``LocalCluster`` (two nodes, one executor each), every bound
endpoint of every node (control ROUTER, task PULL, shuffle PULL, events PUB, as the
node's ``HelloReply`` names them) is attacked by strangers: a CURVE client holding a
valid key of another cluster, a NULL-mechanism ZeroMQ client, raw TCP garbage and
half-open connections. Then a member of the cluster sends malformed messages to the
control, task and shuffle sockets. Each time the job's answer must be exactly
``pymr.wordtokens.reference_count``'s, nothing the attackers sent may be delivered, and the
nodes (and their executors) must serve another job.

The job under attack is the built-in word count paced while a gate file exists (each
split waits ``PACE_S`` before it is counted), so that it is still running, with tasks,
shuffle chunks and heartbeats flowing, for as long as the attack lasts, on any machine;
removing the gate lets it finish at full speed.
"""

from __future__ import annotations

import collections
import os
import random
import select
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from pymr.cli import main as cli
from pymr.config import HANDSHAKE_IVL_MS, JobOptions
from pymr.engine.inputs import resolve_inputs
from pymr.engine.summary import JobSummary
from pymr.errors import JobError
from pymr.jobs import JobSpec, builtin_spec
from pymr.net.security import ClusterKey, load_key, secure_connect
from pymr.runtime.cluster import LocalCluster
from pymr.runtime.runner import run_job
from pymr.runtime.state import open_state
from pymr.wire import protocol as p
from tests import helpers

K = 1 << 10
#: How long a split waits while the gate exists: 256 splits on 2 slots last ~25 s gated.
PACE_S = 0.2
#: Input of the job under attack: 4 MiB in 16 KiB splits, small flushes so that shuffle
#: chunks flow during the attack too.
ATTACK_INPUT_BYTES = 4 << 20
ATTACK_OPTIONS = JobOptions(split_size=16 * K, flush_key_limit=5_000, num_partitions=4)
#: How long an attacker waits for something it must never get (a reply, a heartbeat):
#: several heartbeat intervals.
NOTHING_DELIVERED_S = 3.5
#: A node drops a connection that has not finished its handshake after HANDSHAKE_IVL_MS;
#: allow this much more for the drop to be observed.
DROP_MARGIN_S = 3.0
#: Marks of attacker data: if one of them shows up in an answer, an attacker got through.
FOREIGN_WORD = b"zzforeignkeyword"
NULL_WORD = b"zznullmechanismword"
MEMBER_WORD = b"zzforgedmemberword"
START_TIMEOUT_S = 60.0

PACED_JOB = '''
"""The built-in word count, paced while a gate file exists (tests act while it runs)."""
import os
import time

from pymr.jobs.wordcount import FIELDS, ORDER, PARAMS, WordCounter, combine, reduce  # noqa

GATE = {gate!r}
PACE_S = {pace!r}


class PacedCounter(WordCounter):
    def add(self, data):
        if os.path.exists(GATE):
            time.sleep(PACE_S)  # a deliberately slow map while the gate exists (the scenario)
        super().add(data)


def chunk_mapper(params):
    return PacedCounter(params["tokenizer"])
'''

EVENT_NAMES = {int(e): e.name for e in zmq.Event}


# ================================================================== helpers


class JobThread:
    """``run_job`` on given nodes in a thread; ``result()`` joins it (bounded)."""

    def __init__(self, endpoints: list[str], key: ClusterKey, spec: JobSpec, path: Path,
                 opts: JobOptions) -> None:
        self.records: list[tuple[bytes, int]] | None = None
        self.summary: JobSummary | None = None
        self.error: BaseException | None = None

        def consume(records: Iterator[tuple[bytes, int]], summary: JobSummary) -> None:
            self.records = list(records)

        def target() -> None:
            try:
                self.summary = run_job(spec, resolve_inputs([str(path)]), opts, consume,
                                       endpoints=endpoints, key=key)
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                self.error = exc

        self.thread = threading.Thread(target=target, name="pymr-test-job", daemon=True)
        self.thread.start()

    def running(self) -> bool:
        return self.thread.is_alive()

    def release(self, gate: Path, timeout_s: float = 120.0) -> None:
        """Open the gate that paces the job (PACED_JOB) and let it finish (bounded)."""
        gate.unlink(missing_ok=True)
        self.thread.join(timeout_s)

    def result(self, timeout_s: float = 120.0) -> list[tuple[bytes, int]]:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the job did not finish"
        if self.error is not None:
            raise AssertionError(f"the job failed: {self.error!r}") from self.error
        assert self.records is not None
        return self.records


def run_once(cluster: LocalCluster, path: Path, spec: JobSpec | None = None,
             opts: JobOptions | None = None) -> list[tuple[bytes, int]]:
    job = JobThread(cluster.control_endpoints, cluster.key, spec or builtin_spec("wordcount"),
                    path, opts or JobOptions(split_size=64 * K, num_partitions=3))
    return job.result()


@dataclass
class NodeView:
    """A node as a member sees it: its endpoints (from its HelloReply) and processes."""

    index: int
    pid: int
    hello: p.HelloReply
    control: str

    @property
    def endpoints(self) -> dict[str, str]:
        return {"control": self.control, "task": self.hello.task_endpoint,
                "shuffle": self.hello.shuffle_endpoint, "events": self.hello.events_endpoint}


def executor_pids(node_pid: int) -> list[int]:
    """The node's executor processes."""
    return helpers.executor_children(node_pid)


class Member:
    """A client holding the cluster key: asks nodes over control, like ``pymr status``."""

    def __init__(self, ctx: zmq.Context, key: ClusterKey, identity: bytes | None = None
                 ) -> None:
        self.ctx = ctx
        self.key = key
        self.identity = identity
        self.socks: dict[str, zmq.Socket] = {}
        self.seq = 1000

    def dealer(self, endpoint: str) -> zmq.Socket:
        sock = self.socks.get(endpoint)
        if sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.linger = 0
            if self.identity is not None:
                sock.identity = self.identity
            secure_connect(sock, endpoint, self.key)
            self.socks[endpoint] = sock
        return sock

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def ask(self, endpoint: str, msg: p.Message, want: type[p.Message],
            timeout_s: float = 5.0, match: Callable[[Any], bool] = lambda m: True
            ) -> Any:
        """Send ``msg`` and return the first reply of type ``want`` (None on timeout)."""
        sock = self.dealer(endpoint)
        sock.send_multipart(p.encode(msg))
        return self.wait_for(endpoint, want, timeout_s, match)

    def wait_for(self, endpoint: str, want: type[p.Message] | tuple[type[p.Message], ...],
                 timeout_s: float,
                 match: Callable[[Any], bool] = lambda m: True) -> Any:
        sock = self.dealer(endpoint)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                return None
            got, _ = p.decode(sock.recv_multipart())
            if isinstance(got, want) and match(got):
                return got

    def hello(self, endpoint: str, timeout_s: float = 5.0) -> p.HelloReply | None:
        seq = self.next_seq()
        return self.ask(endpoint, p.Hello(seq=seq, client_id="test-member",
                                          pymr_version="test", unicode_version="test"),
                        p.HelloReply, timeout_s, lambda m: m.seq == seq)

    def status(self, endpoint: str, timeout_s: float = 5.0) -> p.StatusReply | None:
        seq = self.next_seq()
        return self.ask(endpoint, p.StatusRequest(seq=seq), p.StatusReply, timeout_s,
                        lambda m: m.seq == seq)

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(linger=0)
        self.socks.clear()


def view_nodes(cluster: LocalCluster, member: Member) -> list[NodeView]:
    views = []
    for i, node in enumerate(cluster.nodes):
        hello = member.hello(node.control)
        assert hello is not None, f"node {i} did not answer a member's hello"
        views.append(NodeView(i, node.process.pid, hello, node.control))
    return views


def wait_job_running(member: Member, nodes: list[NodeView], timeout_s: float = 60.0) -> str:
    """The id of the job every node runs, once every node has accepted it."""

    def common() -> set[str]:
        jobs = [set((member.status(n.control) or p.StatusReply(
            seq=0, node_id="", name="", incarnation="", pymr_version="", slots=0, busy=0,
            tasks_done=0, bytes_processed=0, uptime_s=0.0)).jobs) for n in nodes]
        return set.intersection(*jobs)

    found = helpers.wait_until(common, timeout_s, "the job to start on every node")
    assert isinstance(found, set) and len(found) == 1, found
    return str(found.pop())


def host_port(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """While this file exists the paced job counts slowly; the test removes it."""
    path = tmp_path / "gate"
    path.write_bytes(b"")
    yield path
    path.unlink(missing_ok=True)


class LoggedCluster(LocalCluster):
    """A ``LocalCluster`` whose nodes write their stderr (their log) to ``log_path``."""

    def __init__(self, log_path: Path, **kw: Any) -> None:
        super().__init__(**kw)
        self.log_path = log_path

    def start(self) -> None:
        saved = os.dup(2)
        try:
            with open(self.log_path, "ab") as f:
                os.dup2(f.fileno(), 2)   # inherited by the node processes only
                super().start()
        finally:
            os.dup2(saved, 2)
            os.close(saved)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LoggedCluster]:
    with LoggedCluster(tmp_path / "nodes.log", nodes=2, slots=1) as c:
        yield c


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def attack_input(tmp_path: Path) -> tuple[Path, bytes]:
    path = helpers.generate_text(tmp_path / "attack.txt", ATTACK_INPUT_BYTES, seed=41)
    return path, path.read_bytes()


@pytest.fixture
def after_input(tmp_path: Path) -> tuple[Path, bytes]:
    path = helpers.generate_text(tmp_path / "after.txt", 512 * K, seed=42)
    return path, path.read_bytes()


# ================================================================== strangers


@dataclass
class ZmqAttacker:
    """A ZeroMQ socket of a stranger aimed at one endpoint, with its monitor."""

    target: str            # "node0 task"
    mode: str              # "foreign-key" or "null"
    sock: zmq.Socket
    monitor: zmq.Socket
    events: list[tuple[str, int]] = field(default_factory=list)
    received: list[list[bytes]] = field(default_factory=list)

    def pump(self) -> None:
        while self.monitor.poll(0):
            ev = recv_monitor_message(self.monitor)
            self.events.append((EVENT_NAMES.get(int(ev["event"]), str(ev["event"])),
                                int(ev["value"])))
        if self.sock.type in (zmq.DEALER, zmq.SUB):
            while self.sock.poll(0):
                self.received.append(self.sock.recv_multipart())

    def names(self) -> set[str]:
        return {name for name, _ in self.events}

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)


SOCKET_FOR = {"control": zmq.DEALER, "task": zmq.PUSH, "shuffle": zmq.PUSH,
              "events": zmq.SUB}


def stranger_socket(ctx: zmq.Context, kind: str, endpoint: str, mode: str,
                    server_public: bytes, target: str) -> ZmqAttacker:
    sock = ctx.socket(SOCKET_FOR[kind])
    sock.linger = 0
    sock.sndtimeo = 0
    monitor = sock.get_monitor_socket()
    if mode == "foreign-key":
        # The worst case: the stranger knows the cluster's public key (the server key) and
        # holds a perfectly valid key pair -- of another cluster.
        other = ClusterKey.generate()
        sock.curve_serverkey = server_public
        sock.curve_publickey = other.public
        sock.curve_secretkey = other.secret
    if kind == "events":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return ZmqAttacker(target, mode, sock, monitor)


def stranger_messages(kind: str, job_id: str, word: bytes) -> list[list[bytes]]:
    """What a stranger sends: well-formed messages that would matter if delivered."""
    if kind == "control":
        return [p.encode(p.Hello(seq=1, client_id="stranger", pymr_version="x",
                                 unicode_version="x")),
                p.encode(p.StatusRequest(seq=2)),
                p.encode(p.JobEnd(seq=3, job_id=job_id, reason="stranger"))]
    if kind == "task":
        # A forged task of the running job: had it been delivered, ``word`` would be counted.
        return [p.encode(p.MapTask(job_id=job_id, task_id=t, attempt=1),
                         (word + b" ") * 2000) for t in range(3)]
    if kind == "shuffle":
        return [p.encode(p.ShuffleChunk(job_id=job_id, output_id=f"forged.0.0.{i}",
                                        partition=part, seq=0),
                         p.pack_chunk([word], [1_000_000]))
                for i in range(2) for part in range(ATTACK_OPTIONS.num_partitions)]
    return []


ZMTP_SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"


def zmtp_greeting(mechanism: bytes, as_server: bool = False) -> bytes:
    """A ZMTP 3.0 greeting: signature, version 3.0, mechanism, as-server, filler."""
    return (ZMTP_SIGNATURE + b"\x03\x00" + mechanism.ljust(20, b"\x00")
            + (b"\x01" if as_server else b"\x00") + b"\x00" * 31)


def zmtp_null_session(job_id: str) -> bytes:
    """A NULL-mechanism ZMTP client that tries to push a map task: greeting, READY, message."""
    props = b"\x0bSocket-Type" + (4).to_bytes(4, "big") + b"PUSH"
    ready = b"\x05READY" + props
    frames = p.encode(p.MapTask(job_id=job_id, task_id=0, attempt=1), NULL_WORD * 10)
    body = b"\x04" + bytes([len(ready)]) + ready
    for i, frame in enumerate(frames):
        more = 0x01 if i < len(frames) - 1 else 0
        if len(frame) < 256:
            body += bytes([more]) + bytes([len(frame)]) + frame
        else:
            body += bytes([more | 0x02]) + len(frame).to_bytes(8, "big") + frame
    return zmtp_greeting(b"NULL") + body


@dataclass
class RawConn:
    """A raw TCP connection of a stranger; ``closed_after_s`` once the node dropped it."""

    target: str
    what: str
    sock: socket.socket
    opened: float
    received: bytes = b""
    closed_after_s: float | None = None

    def pump(self) -> None:
        if self.closed_after_s is not None:
            return
        while True:
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                return
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self.closed_after_s = time.monotonic() - self.opened
                return
            self.received += data

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the node hung up on us mid-send: what it should do with garbage

    def close(self) -> None:
        self.sock.close()


def raw_conn(endpoint: str, target: str, what: str) -> RawConn:
    sock = socket.create_connection(host_port(endpoint), timeout=5)
    sock.setblocking(False)
    return RawConn(target, what, sock, time.monotonic())


def server_mechanism(endpoint: str, timeout_s: float = 5.0) -> bytes:
    """Speak the first half of a ZMTP greeting and read the node's: its mechanism field."""
    with socket.create_connection(host_port(endpoint), timeout=timeout_s) as s:
        s.sendall(ZMTP_SIGNATURE + b"\x03")       # signature + major version
        got = b""
        deadline = time.monotonic() + timeout_s
        while len(got) < 64 and time.monotonic() < deadline:
            chunk = s.recv(64 - len(got))
            if not chunk:
                break
            got += chunk
    assert got[:1] == b"\xff" and got[9:10] == b"\x7f", f"not a ZMTP greeting: {got!r}"
    assert len(got) == 64, f"short greeting from {endpoint}: {got!r}"
    assert got[10] == 3, f"ZMTP major version {got[10]}"
    return got[12:32].rstrip(b"\x00")


# ------------------------------------------------------------------ the test


def test_strangers_on_every_endpoint_during_a_job_get_nothing_and_change_nothing(
        cluster: LoggedCluster, zctx: zmq.Context, gate: Path, attack_input,
        after_input) -> None:
    # Given a paced job running on two nodes, every node's four endpoints (from a hello)
    path, data = attack_input
    member = Member(zctx, cluster.key)
    nodes = view_nodes(cluster, member)
    executors_before = {n.index: executor_pids(n.pid) for n in nodes}
    spec = JobSpec.from_source("wordcount", PACED_JOB.format(gate=str(gate), pace=PACE_S))
    job = JobThread(cluster.control_endpoints, cluster.key, spec, path, ATTACK_OPTIONS)
    attackers: list[ZmqAttacker] = []
    raws: list[RawConn] = []
    try:
        job_id = wait_job_running(member, nodes)
        # Every endpoint greets with the CURVE mechanism.
        for n in nodes:
            for kind, ep in n.endpoints.items():
                assert server_mechanism(ep) == b"CURVE", f"node{n.index} {kind}"

        # When strangers attack every endpoint of every node at once:
        attack_started = time.monotonic()
        rng = random.Random(5)
        for n in nodes:
            for kind, ep in n.endpoints.items():
                target = f"node{n.index} {kind} {ep}"
                # a CURVE client with a valid key of another cluster, and a NULL client,
                for mode, word in (("foreign-key", FOREIGN_WORD), ("null", NULL_WORD)):
                    a = stranger_socket(zctx, kind, ep, mode, cluster.key.public, target)
                    attackers.append(a)
                    for frames in stranger_messages(kind, job_id, word):
                        try:
                            a.sock.send_multipart(frames, flags=zmq.NOBLOCK)
                        except zmq.Again:
                            pass  # nothing connected to take it: not delivered either
                # raw TCP garbage after the node's greeting, a NULL ZMTP session pushing a
                # task, a greeting that claims CURVE followed by junk,
                r = raw_conn(ep, target, "random garbage")
                r.send(bytes(rng.getrandbits(8) for _ in range(64 * K)))
                raws.append(r)
                r = raw_conn(ep, target, "NULL ZMTP session")
                r.send(zmtp_null_session(job_id))
                raws.append(r)
                r = raw_conn(ep, target, "CURVE greeting then junk")
                r.send(zmtp_greeting(b"CURVE") + b"\x04\xff" + os.urandom(300))
                raws.append(r)
                # and half-open connections: silent, and a greeting cut short.
                raws.append(raw_conn(ep, target, "half-open, silent"))
                r = raw_conn(ep, target, "half-open, partial greeting")
                r.send(ZMTP_SIGNATURE[:5])
                raws.append(r)

        # Then, for as long as the node's handshake interval and then some:
        deadline = attack_started + HANDSHAKE_IVL_MS / 1000 + DROP_MARGIN_S
        def all_closed() -> bool:
            for a in attackers:
                a.pump()
            for r in raws:
                r.pump()
            return all(r.closed_after_s is not None for r in raws)

        helpers.wait_until(all_closed, max(0.0, deadline - time.monotonic()))
        waited = time.monotonic() - attack_started
        if waited < NOTHING_DELIVERED_S:
            # The scenario: "nothing delivered" is checked over a window of this length
            # (there is no event to wait for when nothing happens).
            time.sleep(NOTHING_DELIVERED_S - waited)
        for a in attackers:
            a.pump()
        assert job.running(), "the job ended before the attack did: the test proves nothing"

        # no ZeroMQ stranger completed a handshake, each was refused, and none received a
        # thing (no HelloReply, no StatusReply, no heartbeat)
        for a in attackers:
            names = a.names()
            assert "HANDSHAKE_SUCCEEDED" not in names, (a.target, a.mode, a.events)
            if a.mode == "foreign-key":
                assert ("HANDSHAKE_FAILED_AUTH", 400) in a.events, \
                    (a.target, a.mode, a.events)
            else:
                assert names & {"HANDSHAKE_FAILED_PROTOCOL",
                                "HANDSHAKE_FAILED_NO_DETAIL"}, (a.target, a.events)
            assert a.received == [], (a.target, a.mode, a.received)
        # every raw connection was dropped by the node, the idle ones by its handshake
        # timer, and none got more than the node's greeting
        for r in raws:
            assert r.closed_after_s is not None, f"{r.target}: {r.what} still open"
            assert len(r.received) <= 64, (r.target, r.what, r.received)
            if r.what.startswith("half-open"):
                assert r.closed_after_s <= HANDSHAKE_IVL_MS / 1000 + DROP_MARGIN_S, \
                    (r.target, r.what, r.closed_after_s)
        half_open = [r.closed_after_s for r in raws if r.what.startswith("half-open")]
        garbage = [r.closed_after_s for r in raws if not r.what.startswith("half-open")]
        print(f"half-open connections dropped after {min(half_open):.2f}-"
              f"{max(half_open):.2f} s; garbage connections after at most "
              f"{max(garbage):.3f} s")
    finally:
        for a in attackers:
            a.close()
        for r in raws:
            r.close()
        job.release(gate)
        member.close()
    # and once the gate opens the job's answer is exact (no forged task or chunk counted)
    records = job.result()
    assert records == helpers.wordcount_rows(data)
    assert all(w not in dict(records) for w in (FOREIGN_WORD, NULL_WORD))
    # the nodes logged the refusals, and did not crash or lose an executor
    err = cluster.log()
    assert "refused a peer with a key that is not this cluster's" in err
    assert "Traceback" not in err
    for n in nodes:
        assert cluster.nodes[n.index].process.poll() is None, f"node {n.index} died"
        assert executor_pids(n.pid) == executors_before[n.index], \
            f"node {n.index} lost an executor"
    # and the nodes serve another job.
    after_path, after_data = after_input
    assert run_once(cluster, after_path) == helpers.wordcount_rows(after_data)


# ================================================================== members


def nested(depth: int, as_map: bool) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value} if as_map else [value]
    return value


def raw_header(**fields: Any) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def junk_frames(job_id: str, word: bytes) -> dict[str, list[bytes]]:
    """Malformed messages any socket may get from a member: each is dropped, none answered."""
    ack = {"v": p.PROTOCOL_VERSION, "t": "ack", "seq": 1}
    task = {"v": p.PROTOCOL_VERSION, "t": "map_task", "job_id": job_id, "task_id": 0,
            "attempt": 1}
    payload = (word + b" ") * 100
    return {
        "empty frame": [b""],
        "junk bytes": [b"\xc1\xc1 this is not msgpack"],
        "random bytes": [bytes(random.Random(3).getrandbits(8) for _ in range(4096))],
        "header not a map": [msgpack.packb([1, 2, 3])],
        "no version": [raw_header(t="ack", seq=1)],
        "wrong version": [raw_header(**{**ack, "v": 99})],
        "unknown type": [raw_header(v=p.PROTOCOL_VERSION, t="exec_everything", seq=1)],
        "type not a string": [raw_header(v=p.PROTOCOL_VERSION, t=7, seq=1)],
        "wrong field types": [raw_header(**{**task, "task_id": "zero", "attempt": [1]}),
                              payload],
        "bool for an int": [raw_header(**{**task, "task_id": True}), payload],
        "missing fields": [raw_header(v=p.PROTOCOL_VERSION, t="map_task"), payload],
        "decoder bomb array32": [b"\xdd\xff\xff\xff\xff"],
        "decoder bomb map32": [b"\xdf\xff\xff\xff\xff"],
        "decoder bomb str32": [b"\xdb\xff\xff\xff\xff"],
        "ext type": [b"\xc9\xff\xff\xff\xff\x01"],
        "deeply nested maps": [raw_header(**{**task, "job_id": nested(200, True)})],
        "deeply nested arrays": [b"\x91" * 100_000 + b"\xc0"],
        "nested just past the limit": [raw_header(
            v=p.PROTOCOL_VERSION, t="status_reply", seq=1, node_id="n", name="n",
            incarnation="i", pymr_version="v", slots=1, busy=0, tasks_done=0,
            bytes_processed=0, uptime_s=0.0, jobs=[],
            a_future_field=nested(p.MAX_DEPTH + 1, False))],
        "header over MAX_HEADER_BYTES": [raw_header(**{**task, "pad": b"x" * (
            p.MAX_HEADER_BYTES + 1)}), payload],
        "trailing garbage": [raw_header(**task) + b"\xc1", payload],
        "executor-only message": [p.encode(p.ExecStop())[0]],
        "exec job for the running job": p.encode(p.ExecJob(
            job_id=job_id, job_name="wordcount", source="raise SystemExit(3)\n",
            sha256="0" * 64, num_partitions=1, partitions=[0],
            shuffle_endpoints={0: "tcp://127.0.0.1:9"})),
        "node-to-master message": p.encode(p.PartitionComplete(
            job_id=job_id, node_id="n", partition=0, records=1, chunks=1)),
        "heartbeat": p.encode(p.Heartbeat(node_id="n", incarnation="i", slots=1, busy=0,
                                          tasks_done=0)),
    }


def control_forgeries(job_id: str, seq: Callable[[], int], node_ids: list[str],
                      shuffle: dict[str, str]) -> dict[str, p.Message]:
    """Well-formed control messages about the running job from a member that does not own
    it: forged epochs, attempts and partition moves. The node must ignore every one."""
    everything_to_me = {part: node_ids[0] for part in range(ATTACK_OPTIONS.num_partitions)}
    return {
        "commit of a forged output": p.Commit(
            seq=seq(), job_id=job_id, output_ids=["forged.0.0.1"], tasks=[[0, 1, 2]],
            manifests=[{0: [1, 1, 0]}], epoch=99),
        "job end": p.JobEnd(seq=seq(), job_id=job_id, reason="forged"),
        "cancel of a running task": p.CancelTask(job_id=job_id, task_id=0, attempt=1),
        "flush": p.Flush(seq=seq(), job_id=job_id),
        "input complete with a wrong task count": p.InputComplete(
            seq=seq(), job_id=job_id, num_tasks=1),
        "job update with a forged epoch": p.JobUpdate(
            seq=seq(), job_id=job_id, partition_map=everything_to_me,
            shuffle_endpoints=shuffle, epoch=99, num_tasks=1),
        "resend to a stranger": p.ResendChunks(
            seq=seq(), job_id=job_id, output_id="x.0.1.1", partition=0,
            endpoint="tcp://127.0.0.1:9", epoch=99),
        "drop output": p.DropOutput(seq=seq(), job_id=job_id, output_id="x.0.1.1"),
        "fetch partition": p.FetchPartition(job_id=job_id, partition=0, start=0, count=10),
        "lease": p.Lease(job_id=job_id),
    }


def test_members_malformed_and_forged_messages_are_dropped_and_the_job_is_exact(
        cluster: LoggedCluster, zctx: zmq.Context, gate: Path, attack_input,
        after_input) -> None:
    # Given a paced job running on two nodes, and a member (it holds the cluster key but
    # is not the job's master) with a control DEALER, a task PUSH and a shuffle PUSH to
    # every node
    path, data = attack_input
    member = Member(zctx, cluster.key, identity=b"member-not-the-master")
    nodes = view_nodes(cluster, member)
    executors_before = {n.index: executor_pids(n.pid) for n in nodes}
    spec = JobSpec.from_source("wordcount", PACED_JOB.format(gate=str(gate), pace=PACE_S))
    job = JobThread(cluster.control_endpoints, cluster.key, spec, path, ATTACK_OPTIONS)
    pushes: list[zmq.Socket] = []
    timings: dict[str, float] = {}
    try:
        job_id = wait_job_running(member, nodes)
        node_ids = [n.hello.node_id for n in nodes]
        shuffle = {n.hello.node_id: n.hello.shuffle_endpoint for n in nodes}
        junk = junk_frames(job_id, MEMBER_WORD)
        for n in nodes:
            task = zctx.socket(zmq.PUSH)
            shuf = zctx.socket(zmq.PUSH)
            for s, ep in ((task, n.hello.task_endpoint), (shuf, n.hello.shuffle_endpoint)):
                s.linger = 0
                secure_connect(s, ep, cluster.key)
                pushes.append(s)
            control = member.dealer(n.control)
            # When the member sends every kind of junk, twice, to control, task and shuffle
            for _ in range(2):
                for frames in junk.values():
                    control.send_multipart(frames)
                    task.send_multipart(frames)
                    shuf.send_multipart(frames)
            # shuffle chunks of the running job: forged epochs and output ids, junk
            # payloads, wrong frame counts, partitions nobody reduces
            for part in range(ATTACK_OPTIONS.num_partitions):
                for epoch in (0, 99, -1):
                    shuf.send_multipart(p.encode(p.ShuffleChunk(
                        job_id=job_id, output_id=f"{n.hello.node_id}.0.1.{epoch}",
                        partition=part, seq=0, epoch=epoch), b"\xdd\xff\xff\xff\xff"))
                shuf.send_multipart(p.encode(p.ShuffleChunk(
                    job_id=job_id, output_id="forged.1.1.1", partition=part, seq=0),
                    p.pack_chunk([MEMBER_WORD], [10**6])))
                shuf.send_multipart(p.encode(p.ShuffleChunk(
                    job_id=job_id, output_id="forged.1.1.2", partition=part, seq=0)))
                shuf.send_multipart(p.encode(p.ShuffleChunk(
                    job_id=job_id, output_id="forged.1.1.3", partition=part, seq=0),
                    b"a", b"b"))
            for bad_part in (-1, 10**6):
                shuf.send_multipart(p.encode(p.ShuffleChunk(
                    job_id=job_id, output_id="forged.1.1.4", partition=bad_part, seq=0),
                    b"x"))
            # map tasks of unknown jobs and shuffle chunks on the task socket
            task.send_multipart(p.encode(p.MapTask(job_id="no-such-job", task_id=0,
                                                   attempt=1), MEMBER_WORD))
            task.send_multipart(p.encode(p.ShuffleChunk(job_id=job_id, output_id="o",
                                                        partition=0, seq=0), b"x"))
            # control messages about the running job, which it does not own: none is acked
            forged = control_forgeries(job_id, member.next_seq, node_ids, shuffle)
            for name, msg in forged.items():
                sent_seq = getattr(msg, "seq", -1)
                assert member.ask(n.control, msg, p.Ack, timeout_s=0.3,
                                  match=lambda m, s=sent_seq: m.seq == s) \
                    is None, f"node{n.index} acked a forged {name}"
            # a JobStart re-using the running job's id is a no-op (idempotent), not a takeover
            seq = member.next_seq()
            ack = member.ask(n.control, p.JobStart(
                seq=seq, job_id=job_id, job_name="wordcount", source="", sha256="0" * 64,
                num_partitions=1, partition_map={0: node_ids[0]},
                shuffle_endpoints=shuffle), p.Ack, match=lambda m, s=seq: m.seq == s)
            assert ack is not None
            # Commit / JobEnd of a job that does not exist: acked (idempotent), nothing else
            for msg in (p.Commit(seq=member.next_seq(), job_id="no-such-job", output_ids=["o"],
                                 tasks=[[0]], manifests=[{0: [1, 1, 0]}]),
                        p.JobEnd(seq=member.next_seq(), job_id="no-such-job")):
                ack = member.ask(n.control, msg, p.Ack, match=lambda m, s=msg.seq: m.seq == s)
                assert ack is not None and ack.ok, f"node{n.index}: {msg.TYPE} of no job"
            # and a frame over ZMQ_MAXMSGSIZE (MAX_FRAME_BYTES) on the task socket.
            big = bytes(p.MAX_FRAME_BYTES + 1)
            monitor = task.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            try:
                started = time.monotonic()
                task.send_multipart(p.encode(p.MapTask(job_id=job_id, task_id=0,
                                                       attempt=1), big), copy=False)
                del big
                # the node hangs up on it (ZMQ_MAXMSGSIZE) instead of reading it
                assert monitor.poll(30_000), f"node{n.index} did not drop the big frame"
                timings[f"node{n.index} dropped an oversized frame after"] = \
                    time.monotonic() - started
            finally:
                task.disable_monitor()
                monitor.close(linger=0)
            # The node is still responsive on its control socket.
            started = time.monotonic()
            assert member.hello(n.control, timeout_s=30) is not None, \
                f"node{n.index} stopped answering after the junk"
            timings[f"node{n.index} hello after junk"] = time.monotonic() - started
        assert job.running(), "the job ended before the junk was sent: the test proves nothing"
    finally:
        for s in pushes:
            s.close(linger=0)
        job.release(gate)
        member.close()
    # Then the job's answer is exact
    records = job.result()
    assert records == helpers.wordcount_rows(data)
    assert MEMBER_WORD not in dict(records)
    # no node or executor crashed, the drops were logged once per peer and reason
    log = cluster.log()
    assert "Traceback" not in log, log[-3000:]
    for n in nodes:
        assert cluster.nodes[n.index].process.poll() is None, f"node {n.index} died"
        assert executor_pids(n.pid) == executors_before[n.index], \
            f"node {n.index} lost an executor:\n{log[-3000:]}"
    drops = collections.Counter(x for x in log.splitlines() if "dropped a message" in x)
    for reason in ("undecodable header", "unknown message type", "header is not a map",
                   "nested too deeply", "header frame too large", "has the wrong type",
                   "missing field", "protocol version", "does not own", "unknown job"):
        assert any(reason in line for line in drops), f"no drop logged for {reason!r}"
    # (each junk message went twice to each node: a reason is logged once per node)
    assert max(drops.values()) <= len(nodes), drops.most_common(3)
    print(f"{sum(drops.values())} drop lines in the node logs; timings {timings}")
    # and the nodes serve another job.
    after_path, after_data = after_input
    assert run_once(cluster, after_path) == helpers.wordcount_rows(after_data)


@pytest.mark.parametrize("forged_attempts", [
    pytest.param((99, 0), id="attempts-never-started"),
    # attempt 1 is the one the master starts first for every task: pushed to both nodes it
    # is a replay on the node that runs the genuine attempt and a forgery on the other one
    pytest.param((1,), id="attempt-1-on-every-node"),
])
def test_members_forged_map_attempts_do_not_change_the_answer(
        cluster: LoggedCluster, zctx: zmq.Context, gate: Path, attack_input,
        forged_attempts: tuple[int, ...]) -> None:
    # Given a paced job running on two nodes, and a member that is not its master
    path, data = attack_input
    member = Member(zctx, cluster.key)
    nodes = view_nodes(cluster, member)
    spec = JobSpec.from_source("wordcount", PACED_JOB.format(gate=str(gate), pace=PACE_S))
    job = JobThread(cluster.control_endpoints, cluster.key, spec, path, ATTACK_OPTIONS)
    pushes: list[zmq.Socket] = []
    try:
        job_id = wait_job_running(member, nodes)
        # When the member pushes map tasks of the running job, with attempt numbers of its
        # choosing, carrying words of its own
        for n in nodes:
            task = zctx.socket(zmq.PUSH)
            task.linger = 0
            secure_connect(task, n.hello.task_endpoint, cluster.key)
            pushes.append(task)
            for task_id in range(0, 120, 3):
                for attempt in forged_attempts:
                    task.send_multipart(p.encode(p.MapTask(
                        job_id=job_id, task_id=task_id, attempt=attempt, alone=True),
                        (MEMBER_WORD + b" ") * 1000))
        assert job.running()
    finally:
        for s in pushes:
            s.close(linger=200)
        job.release(gate)
        member.close()
    # Then the answer is exactly the reference: forged attempts were never counted
    records = job.result()
    got = dict(records)
    assert MEMBER_WORD not in got, f"a forged map attempt was counted: {got[MEMBER_WORD]}"
    assert records == helpers.wordcount_rows(data)


# ================================================================== keys and key files


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_export_import_round_trip_and_modes(tmp_path: Path, capsys) -> None:
    # Given a machine that founds a cluster with `pymr keygen`
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, err = run_cli(capsys, "keygen", "--home", a)
    assert code == 0, err
    key = load_key(a / "cluster.key")
    assert key.fingerprint in err and str(a / "cluster.key") in err
    assert "key export" in err and "key import" in err      # says how to join machines
    # Then the key file is 0600 in a 0700 directory, and holds no more than the key pair
    assert stat.S_IMODE((a / "cluster.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(a.stat().st_mode) == 0o700
    assert (a / "cluster.key").read_bytes() == (b"public=" + key.public + b"\nsecret="
                                                + key.secret + b"\n")
    # keygen never replaces a key silently
    code, _, err = run_cli(capsys, "keygen", "--home", a)
    assert code == 2 and "--force" in helpers.one_error_line(err)
    assert load_key(a / "cluster.key") == key
    # export prints only the token on stdout; import on another machine installs it, 0600
    code, token, err = run_cli(capsys, "key", "export", "--home", a)
    assert code == 0 and token.startswith("pymr1:") and token.count("\n") == 1
    assert key.secret.decode() not in token          # (base64: the secret is not in clear)
    code, _, err = run_cli(capsys, "key", "import", token.strip(), "--home", b)
    assert code == 0, err
    assert load_key(b / "cluster.key") == key
    assert stat.S_IMODE((b / "cluster.key").stat().st_mode) == 0o600
    code, fp_a, _ = run_cli(capsys, "key", "fingerprint", "--home", a)
    code_b, fp_b, _ = run_cli(capsys, "key", "fingerprint", "--home", b)
    assert code == code_b == 0 and fp_a == fp_b == key.fingerprint + "\n"
    # importing the same token again is a no-op; a damaged token is one line, exit 2
    code, _, err = run_cli(capsys, "key", "import", token.strip(), "--home", b)
    assert code == 0 and "already" in err
    for bad in (token.strip()[:-6], "pymr1:" + "A" * 108, "not-a-token", token.strip() + "x"):
        code, _, err = run_cli(capsys, "key", "import", bad, "--home", tmp_path / "c")
        assert code == 2, bad
        helpers.one_error_line(err)
    assert not (tmp_path / "c" / "cluster.key").exists()
    # --key-file overrides the home's key
    other = ClusterKey.generate()
    open_state(tmp_path / "d").save_key(other)
    code, fp, _ = run_cli(capsys, "key", "fingerprint", "--home", a, "--key-file",
                          tmp_path / "d" / "cluster.key")
    assert code == 0 and fp.strip() == other.fingerprint


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o700, 0o610])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, capsys, mode: int) -> None:
    # Given a key file whose mode lets group or others in
    home = tmp_path / "h"
    open_state(home).save_key(ClusterKey.generate())
    path = home / "cluster.key"
    os.chmod(path, mode)
    # When a command needs the key, then it stops with one line naming the fix, exit 2
    for argv in (["key", "export"], ["key", "fingerprint"],
                 ["status", "--nodes", "127.0.0.1:9"],
                 ["node", "--interface", "127.0.0.1", "--port", "0"]):
        code, out, err = run_cli(capsys, *argv, "--home", home)
        if mode & 0o077:
            assert code == 2, (argv, err)
            line = helpers.one_error_line(err)
            assert str(path) in line and "chmod 600" in line, line
            assert out == ""
        else:
            # 0700 on a file is odd but private: the key is accepted
            assert argv[0] == "node" or code in (0, 1), (argv, err)
            if argv[0] != "node":
                assert "readable by others" not in err
        if not mode & 0o077:
            break


DAMAGED_KEYS = {
    "empty": b"",
    "not a key file": b"hello\n",
    "public only": b"public=" + b"x" * 40 + b"\n",
    "short secret": b"public=" + b"x" * 40 + b"\nsecret=abc\n",
    "pair that does not match": None,        # filled in below
    "binary junk": bytes(range(256)),
    "not z85": b"public=" + b"~" * 40 + b"\nsecret=" + b"~" * 40 + b"\n",
}


@pytest.mark.parametrize("what", list(DAMAGED_KEYS))
def test_damaged_key_file_stops_a_node_with_one_line(tmp_path: Path, capsys, what: str
                                                    ) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    content = DAMAGED_KEYS[what]
    if content is None:
        a, b = ClusterKey.generate(), ClusterKey.generate()
        content = b"public=" + a.public + b"\nsecret=" + b.secret + b"\n"
    path = home / "cluster.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    code, out, err = run_cli(capsys, "node", "--home", home, "--interface", "127.0.0.1",
                             "--port", "0", "--slots", "1")
    assert code == 2, err
    line = helpers.one_error_line(err)
    assert str(path) in line and "damaged" in line, line


def test_unreadable_key_and_a_real_node_process(tmp_path: Path) -> None:
    """One real ``pymr node`` process: a group-readable key file, no traceback, exit 2."""
    home = tmp_path / "h"
    open_state(home).save_key(ClusterKey.generate())
    os.chmod(home / "cluster.key", 0o640)
    proc = subprocess.run(
        [sys.executable, "-m", "pymr", "node", "--home", str(home), "--interface",
         "127.0.0.1", "--port", "0", "--slots", "1"], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, env=helpers.subprocess_env(), timeout=60)
    assert proc.returncode == 2, proc.stderr
    helpers.one_error_line(proc.stderr)
    assert "readable by others" in proc.stderr and proc.stdout == ""


# ================================================================== --builtin-only


@dataclass
class NodeProc:
    proc: subprocess.Popen[bytes]
    log: Path
    control: str
    key: ClusterKey

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")


def start_node(tmp_path: Path, *args: str) -> NodeProc:
    """A real ``pymr node`` on 127.0.0.1 (mDNS pinned to loopback), one slot."""
    home = tmp_path / "node-home"
    if not (home / "cluster.key").exists():
        open_state(home).save_key(ClusterKey.generate())
    log = tmp_path / "node.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pymr", "node", "--home", str(home), "--interface",
             "127.0.0.1", "--port", "0", "--slots", "1", *args],
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
            env=helpers.subprocess_env(PYMR_INTERFACE="127.0.0.1"))
    node = NodeProc(proc, log, "", load_key(home / "cluster.key"))
    try:
        helpers.wait_serving(proc, node.output, START_TIMEOUT_S)
    except AssertionError:
        stop_node(node)
        raise
    import re

    port = re.search(r"control port (\d+)", node.output())
    assert port, node.output()
    node.control = f"tcp://127.0.0.1:{port.group(1)}"
    return node


def stop_node(node: NodeProc) -> None:
    helpers.stop_process(node.proc, timeout_s=20)


@pytest.fixture
def builtin_node(tmp_path: Path) -> Iterator[NodeProc]:
    node = start_node(tmp_path, "--builtin-only")
    try:
        yield node
    finally:
        stop_node(node)


EVIL_JOB = '''
"""Not a built-in job: it leaves a mark wherever it runs but in the test (its client,
which loads a job to check it before any node is contacted)."""
import os
from pathlib import Path

if os.getpid() != {client_pid}:
    Path({mark!r}).write_text("ran")

from pymr.jobs.wordcount import FIELDS, ORDER, PARAMS, chunk_mapper, combine, reduce  # noqa
'''


def run_on(node: NodeProc, spec: JobSpec, path: Path) -> list[tuple[bytes, int]]:
    out: list[tuple[bytes, int]] = []
    run_job(spec, resolve_inputs([str(path)]), JobOptions(split_size=64 * K), lambda r, s:
            out.extend(r), endpoints=[node.control], key=node.key)
    return out


def test_builtin_only_node_refuses_foreign_code_and_runs_wordcount(
        builtin_node: NodeProc, tmp_path: Path, zctx: zmq.Context) -> None:
    text = helpers.generate_text(tmp_path / "in.txt", 256 * K, seed=43)
    # Given a node started with --builtin-only: it says so, in its banner and its hello
    assert "built-in jobs only" in builtin_node.output()
    member = Member(zctx, builtin_node.key)
    try:
        hello = member.hello(builtin_node.control)
        assert hello is not None and hello.builtin_only
    finally:
        member.close()
    # When a member submits a job whose program is not built in
    mark = tmp_path / "evil-ran"
    evil = JobSpec.from_source("wordcount", EVIL_JOB.format(mark=str(mark), client_pid=os.getpid()))
    with pytest.raises(JobError) as info:
        run_on(builtin_node, evil, text)
    # Then the job fails with a clear error naming --builtin-only, and the code never ran
    assert "--builtin-only" in str(info.value) and "refused" in str(info.value)
    assert not mark.exists(), "the node ran code that is not built in"
    # and the built-in word count runs, exactly
    assert run_on(builtin_node, builtin_spec("wordcount"), text) == \
        helpers.wordcount_rows(text.read_bytes())
    assert builtin_node.proc.poll() is None
    assert "Traceback" not in builtin_node.output()


def job_start(member: Member, node: NodeProc, hello: p.HelloReply, job_id: str,
              **fields: Any) -> p.Ack | None:
    """A member's own job on ``node``: every partition reduced there (fields override)."""
    spec = builtin_spec("wordcount")
    seq = member.next_seq()
    base: dict[str, Any] = dict(
        seq=seq, job_id=job_id, job_name=spec.name, source=spec.source, sha256=spec.sha256,
        num_partitions=1, partition_map={0: hello.node_id},
        shuffle_endpoints={hello.node_id: hello.shuffle_endpoint})
    base.update(fields)
    ack: p.Ack | None = member.ask(node.control, p.JobStart(**base), p.Ack,
                                   match=lambda m: m.seq == seq)
    return ack


#: Two heartbeat periods: a daemon notices and replaces a dead executor within one.
EXECUTOR_CHECK_S = 2.0


def test_builtin_only_checks_the_program_not_just_its_claimed_hash(
        builtin_node: NodeProc, tmp_path: Path, zctx: zmq.Context) -> None:
    # Given a --builtin-only node, and a member that sends foreign source under the
    # sha256 of the built-in word count
    mark = tmp_path / "evil-ran"
    lying_source = EVIL_JOB.format(mark=str(mark), client_pid=os.getpid())
    member = Member(zctx, builtin_node.key)
    node_pid = builtin_node.proc.pid
    executors = executor_pids(node_pid)
    problems = []
    try:
        hello = member.hello(builtin_node.control)
        assert hello is not None
        ack = job_start(member, builtin_node, hello, "lying-job", source=lying_source)
        # Then the node refuses it (the hash does not match the program)
        if ack is None or ack.ok:
            problems.append(f"the node accepted foreign source under a built-in hash: {ack}")
        # The scenario: a window for the daemon to notice a crashed executor (there is no
        # event to wait for when none crashes).
        time.sleep(EXECUTOR_CHECK_S)
        # and nothing ran and no executor crashed on it
        if mark.exists():
            problems.append("the foreign source ran")
        if executor_pids(node_pid) != executors:
            problems.append(f"executors crashed and were replaced: {executors} -> "
                            f"{executor_pids(node_pid)}")
        # and the node still runs a job (bounded: a hang is a failure too)
        text = helpers.generate_text(tmp_path / "in.txt", 128 * K, seed=44)
        job = JobThread([builtin_node.control], builtin_node.key, builtin_spec("wordcount"),
                        text, JobOptions(split_size=32 * K))
        job.thread.join(60)
        if job.running():
            problems.append("a built-in job on the node did not finish within 60 s")
        elif job.error is not None:
            problems.append(f"a built-in job on the node failed: {job.error!r}")
        elif job.records != helpers.wordcount_rows(text.read_bytes()):
            problems.append("a built-in job on the node gave a wrong answer")
    finally:
        member.close()
    stop_node(builtin_node)   # ends a hung job's master too: its node is gone
    if problems:
        tail = "\n".join(builtin_node.output().splitlines()[-12:])
        pytest.fail("; ".join(problems) + f"\nnode log tail:\n{tail}", pytrace=False)


MALFORMED_OWN_JOB: dict[str, dict[str, Any]] = {
    # JobStart fields that decode (right types) but make no sense
    "zero partitions": dict(num_partitions=0, partition_map={}, shuffle_endpoints={}),
    "partition map beyond num_partitions": dict(num_partitions=1,
                                                partition_map={5: "{node}"}),
    "shuffle endpoint that is not an endpoint": dict(shuffle_endpoints={"{node}": "junk"}),
    "negative partition": dict(num_partitions=1, partition_map={-1: "{node}"}),
    "unknown tokenizer": dict(params={"tokenizer": "letters"}),
    "unknown parameter": dict(params={"letters": "x"}),
    "zero flush key limit": dict(flush_key_limit=0),
}


def test_malformed_fields_of_a_members_own_job_crash_no_executor(
        builtin_node: NodeProc, tmp_path: Path, zctx: zmq.Context) -> None:
    """A --builtin-only node runs no foreign code, so a member can only hurt it with the
    fields of its messages; each must be refused or survived without losing an executor."""
    member = Member(zctx, builtin_node.key, identity=b"member-master")
    node_pid = builtin_node.proc.pid
    executors = executor_pids(node_pid)
    outcomes: dict[str, str] = {}
    job_ids = []
    task = zctx.socket(zmq.PUSH)
    task.linger = 200
    try:
        hello = member.hello(builtin_node.control)
        assert hello is not None
        secure_connect(task, hello.task_endpoint, builtin_node.key)
        words = b"alpha beta gamma\n" * 100
        for i, (name, fields) in enumerate(MALFORMED_OWN_JOB.items()):
            fields = {k: ({int(pk): pv.replace("{node}", hello.node_id)
                           for pk, pv in v.items()} if k == "partition_map" else
                          {hello.node_id if nk == "{node}" else nk: nv
                           for nk, nv in v.items()} if k == "shuffle_endpoints" else v)
                      for k, v in fields.items()}
            job_id = f"malformed-{i}"
            job_ids.append(job_id)
            # When a member starts its own job with this field, and sends it a map task
            ack = job_start(member, builtin_node, hello, job_id, **fields)
            if ack is None or not ack.ok:
                outcomes[name] = f"refused: {ack.error if ack else 'no answer'}"
                continue
            task.send_multipart(p.encode(p.MapTask(job_id=job_id, task_id=0, attempt=1,
                                                   alone=True), words))
            reply = member.wait_for(builtin_node.control, (p.OutputDone, p.TaskFailedReport),
                                    5.0, lambda m, j=job_id: m.job_id == j)
            outcomes[name] = type(reply).__name__ if reply is not None else "no report"
        # and a commit whose manifest entries are not [chunks, records, checksum]
        ack = job_start(member, builtin_node, hello, "bad-commit")
        assert ack is not None and ack.ok
        job_ids.append("bad-commit")
        for manifest in ({0: [1, 2]}, {0: []}, {0: [1, 2, 3, 4]}, {7: [1, 1, 0]}):
            member.ask(builtin_node.control, p.Commit(
                seq=member.next_seq(), job_id="bad-commit", output_ids=["x.0.1.1"],
                tasks=[[0]], manifests=[manifest]), p.Ack, timeout_s=2)
        # The scenario: a window for the daemon to notice a crashed executor (as above).
        time.sleep(EXECUTOR_CHECK_S)
        after = executor_pids(node_pid)
        for job_id in job_ids:
            member.ask(builtin_node.control, p.JobEnd(seq=member.next_seq(), job_id=job_id),
                       p.Ack, timeout_s=2)
    finally:
        task.close()
        member.close()
    # Then the node daemon lives, no executor of it died, and every task was answered
    assert builtin_node.proc.poll() is None, "the node daemon died"
    print(f"outcomes: {outcomes}")
    problems = [f"{name}: its map task was neither reported done nor failed within 5 s "
                "(its master would wait for ever)"
                for name, what in outcomes.items() if what == "no report"]
    if after != executors:
        problems.append(f"executors replaced ({executors} -> {after})")
    if problems:
        crashes = [x.strip() for x in builtin_node.output().splitlines()
                   if x.startswith(("ValueError", "KeyError", "ZeroDivisionError",
                                    "pymr.errors", "IndexError", "TypeError"))]
        pytest.fail("; ".join(problems) + f"\nexecutor exceptions: {crashes}", pytrace=False)


def test_a_lan_node_reads_no_file_a_member_names(builtin_node: NodeProc, tmp_path: Path,
                                                 zctx: zmq.Context) -> None:
    """Only nodes a job started itself read splits by offset (docs/SECURITY.md, "Threat
    model"); a LAN node gets the bytes. Otherwise any member could have any node read any
    file its user can read (here the node's own key file) and get its words back --
    --builtin-only or not.
    """
    secret = tmp_path / "node-home" / "cluster.key"
    member = Member(zctx, builtin_node.key, identity=b"member-master")
    try:
        hello = member.hello(builtin_node.control)
        assert hello is not None
        ack = job_start(member, builtin_node, hello, "reader")
        assert ack is not None and ack.ok
        task = zctx.socket(zmq.PUSH)
        task.linger = 200
        try:
            secure_connect(task, hello.task_endpoint, builtin_node.key)
            # When a member's map task names a path on the node, with no bytes
            size = secret.stat().st_size
            task.send_multipart(p.encode(p.MapTask(job_id="reader", task_id=0, attempt=1,
                                                   path=str(secret), offset=0, length=size,
                                                   alone=True)))
            done = member.wait_for(builtin_node.control, p.TaskExecuted, 5.0)
            output = member.wait_for(builtin_node.control, p.OutputDone, 1.0)
        finally:
            task.close()
        member.ask(builtin_node.control, p.JobEnd(seq=member.next_seq(), job_id="reader"),
                   p.Ack, timeout_s=2)
    finally:
        member.close()
    # Then the node did not read it
    assert done is None, (f"the node read {done.nbytes} bytes of {secret} for a member "
                          f"(output {output.manifest if output else None})")


# ================================================================== the decoder, fuzzed


def test_decoder_short_fuzz_run() -> None:
    """The CI-sized run of tests/fuzz_protocol.py (its long mode runs >= 1,000,000 inputs):
    random bytes, mutated valid headers, structured maps and decoder bombs; ``decode``
    returns a well-typed message or raises ProtocolError, each input in under a second."""
    from tests import fuzz_protocol

    oracle = fuzz_protocol.Oracle(slow_ms=1000.0)
    fuzz_protocol.run_random(oracle, count=int(os.environ.get("PYMR_FUZZ_INPUTS", "10000")),
                             seconds=60.0, seed=int(os.environ.get("PYMR_FUZZ_SEED", "7")),
                             progress_s=0)
    report = fuzz_protocol.summary(oracle, "random")
    print(report)
    assert oracle.stats.failures == [], report
    assert sum(oracle.stats.accepted.values()) > 0 and len(oracle.stats.rejected) >= 5, report
