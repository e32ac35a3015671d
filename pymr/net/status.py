"""Observers: ask nodes how they are (control DEALER) and follow their events (SUB).

An observer binds nothing. It connects one DEALER per node, sends a ``Hello`` and a
``StatusRequest`` and polls with a deadline (never REQ: a lost reply must not wedge
the socket). A node that does not answer in time is reported as unreachable: an mDNS
record can outlive a killed node.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import zmq

from .._version import __version__
from ..config import UNICODE_VERSION
from ..errors import ProtocolError
from ..wire import protocol as p
from .discovery import NodeRecord
from .security import ClusterKey, secure_connect
from .transport import LogOnce, make_socket

log = logging.getLogger(__name__)

#: How long an observer waits for every node's hello and status replies.
PROBE_TIMEOUT_S = 3.0


@dataclass
class NodeStatus:
    """One node as an observer saw it."""

    endpoint: str
    record: NodeRecord | None = None
    hello: p.HelloReply | None = None
    status: p.StatusReply | None = None
    error: str = ""
    rtt_ms: float = 0.0
    #: why it failed, for callers that explain it: "timeout", "connect" (refused or
    #: unreachable), "key" (the CURVE handshake failed: another cluster), "version", "status"
    failure: str = ""

    @property
    def reachable(self) -> bool:
        return self.hello is not None and not self.error

    @property
    def name(self) -> str:
        if self.hello is not None:
            return self.hello.name
        return self.record.name if self.record is not None else self.endpoint

    @property
    def node_id(self) -> str:
        if self.hello is not None:
            return self.hello.node_id
        return self.record.node_id if self.record is not None else ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"endpoint": self.endpoint, "name": self.name,
                               "node_id": self.node_id, "reachable": self.reachable,
                               "error": self.error or None}
        if self.record is not None:
            out["instance"] = self.record.instance
            out["addresses"] = list(self.record.addresses)
        if self.hello is not None:
            h = self.hello
            out.update(incarnation=h.incarnation, version=h.pymr_version,
                       unicode=h.unicode_version, slots=h.slots,
                       builtin_only=h.builtin_only, task_endpoint=h.task_endpoint,
                       shuffle_endpoint=h.shuffle_endpoint, events_endpoint=h.events_endpoint,
                       rtt_ms=round(self.rtt_ms, 2))
        if self.status is not None:
            s = self.status
            out.update(slots=s.slots, busy=s.busy, tasks_done=s.tasks_done,
                       bytes_processed=s.bytes_processed, uptime_s=round(s.uptime_s, 1),
                       jobs=list(s.jobs))
            if s.mem_total:
                out.update(cpu_percent=s.cpu_percent, mem_percent=s.mem_percent,
                           mem_used=s.mem_used, mem_total=s.mem_total)
            if s.addresses:
                out.setdefault("addresses", list(s.addresses))
        return out


def probe(targets: list[tuple[str, NodeRecord | None]], key: ClusterKey, *,
          timeout_s: float = PROBE_TIMEOUT_S, want_status: bool = True,
          want_peers: bool = False, member: dict[str, str] | None = None,
          fail_fast: bool = False) -> list[NodeStatus]:
    """Hello (and status) every ``(control endpoint, record)``; answers within the deadline.

    A node whose pymr or Unicode version differs from ours is marked with an error: its
    answers would differ from a single-process count. ``want_peers`` asks each node for
    the members it knows (peer exchange); ``member`` says this is a node (``Hello.member``).
    ``fail_fast`` watches each connection (a socket monitor) and gives up on a node at once
    when its port cannot be connected or the CURVE handshake fails (another cluster's key),
    instead of waiting out the deadline.
    """
    results = [NodeStatus(endpoint=ep, record=rec) for ep, rec in targets]
    if not results:
        return results
    ctx = zmq.Context()
    drop = LogOnce(log)
    socks: dict[zmq.Socket, NodeStatus] = {}
    sent_at: dict[zmq.Socket, float] = {}
    monitors: dict[zmq.Socket, zmq.Socket] = {}     # monitor -> the DEALER it watches
    poller = zmq.Poller()
    try:
        client = "obs-" + secrets.token_hex(4)
        for st in results:
            sock = make_socket(ctx, zmq.DEALER, identity=f"{client}-{len(socks)}".encode())
            sock.immediate = False    # queue the hello until the connection is up
            try:
                secure_connect(sock, st.endpoint, key)
            except Exception as exc:   # a bad endpoint string: report, do not crash
                st.error = str(exc)
                sock.close(linger=0)
                continue
            if fail_fast:
                mon = sock.get_monitor_socket(
                    zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
                monitors[mon] = sock
                poller.register(mon, zmq.POLLIN)
            sock.send_multipart(p.encode(p.Hello(seq=1, client_id=client,
                                                 pymr_version=__version__,
                                                 unicode_version=UNICODE_VERSION,
                                                 want_peers=want_peers, member=member or {})))
            if want_status:
                sock.send_multipart(p.encode(p.StatusRequest(seq=2)))
            sent_at[sock] = time.monotonic()
            socks[sock] = st
            poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + timeout_s
        waiting = set(socks)
        connected: set[zmq.Socket] = set()
        while waiting:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            for sock, _ in poller.poll(left_ms):
                if sock in monitors:
                    _on_monitor(sock, monitors[sock], socks, connected, waiting)
                    continue
                st = socks[sock]
                try:
                    msg, _ = p.decode(sock.recv_multipart())
                except ProtocolError as exc:
                    drop(st.endpoint, str(exc))
                    continue
                if isinstance(msg, p.HelloReply):
                    st.hello = msg
                    st.rtt_ms = (time.monotonic() - sent_at[sock]) * 1000
                elif isinstance(msg, p.StatusReply):
                    st.status = msg
                if st.hello is not None and (st.status is not None or not want_status):
                    waiting.discard(sock)
        for st in socks.values():
            if st.failure:
                continue          # given up early (fail_fast): the error is set
            if st.hello is None:
                st.failure = "timeout"
                st.error = (f"no answer in {timeout_s:g} s (stopped, unreachable, or it holds "
                            "another cluster key)")
            elif st.hello.pymr_version != __version__ or \
                    st.hello.unicode_version != UNICODE_VERSION:
                st.failure = "version"
                st.error = (f"runs pymr {st.hello.pymr_version} with Unicode "
                            f"{st.hello.unicode_version}; this machine pymr {__version__} with "
                            f"Unicode {UNICODE_VERSION}: refused")
            elif want_status and st.status is None:
                st.failure = "status"
                st.error = f"answered the hello but not the status request in {timeout_s:g} s"
    finally:
        for mon, sock in monitors.items():
            sock.disable_monitor()
            mon.close(linger=0)
        for sock in socks:
            sock.close(linger=0)
        ctx.destroy(linger=0)
    return results


def _on_monitor(mon: zmq.Socket, sock: zmq.Socket, socks: dict[zmq.Socket, NodeStatus],
                connected: set[zmq.Socket], waiting: set[zmq.Socket]) -> None:
    """One connection event of a fail-fast probe: give up on a node that cannot answer."""
    from zmq.utils.monitor import recv_monitor_message

    try:
        event = recv_monitor_message(mon, flags=zmq.NOBLOCK)["event"]
    except zmq.ZMQError:
        return
    st = socks[sock]
    if event == zmq.EVENT_CONNECTED:
        connected.add(sock)
    elif st.hello is not None or sock not in waiting:
        return
    elif event == zmq.EVENT_CONNECT_RETRIED and sock not in connected:
        st.failure = "connect"
        st.error = ("no answer: its port cannot be connected (connection refused: nothing "
                    "listens there, or the host is unreachable)")
        waiting.discard(sock)
    elif event in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                   zmq.EVENT_HANDSHAKE_FAILED_AUTH):
        st.failure = "key"
        st.error = ("no answer: it refuses this cluster's key in the CURVE handshake (a node of "
                    "another cluster, or not a pymr node)")
        waiting.discard(sock)


@dataclass
class Event:
    """One event from one node's PUB socket."""

    node: str
    topic: str
    msg: p.Message
    received: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"time": round(self.received, 3), "node": self.node, "topic": self.topic,
                "type": self.msg.TYPE, **self.msg.to_fields()}

    def line(self) -> str:
        m = self.msg
        stamp = time.strftime("%H:%M:%S", time.localtime(self.received))
        if isinstance(m, p.Heartbeat):
            what = (f"heartbeat  slots {m.slots} busy {m.busy} tasks done {m.tasks_done}"
                    + (f" jobs {','.join(m.jobs)}" if m.jobs else ""))
        elif isinstance(m, p.Progress):
            what = (f"progress   job {m.job_id} task {m.task_id} attempt {m.attempt} "
                    f"{m.nbytes:,} bytes")
        elif isinstance(m, p.JobNotice):
            what = f"job        {m.job_id}: {m.text}"
        elif isinstance(m, p.JobProgress):
            what = (f"job        {m.job_id} {m.job_name}: {m.state}, {m.phase}, "
                    f"{m.tasks_done} of {m.tasks_total if m.tasks_total >= 0 else '?'} "
                    f"split(s) mapped, {m.partitions_done} of {m.partitions} partition(s)")
        elif isinstance(m, p.ErrorEvent):
            what = (f"error      job {m.job_id} task {m.task_id} attempt {m.attempt}: "
                    f"{m.exc_type}: {m.message}")
        else:
            what = f"{m.TYPE} {m.to_fields()}"
        return f"{stamp} {self.node:<16} {what}"


class EventStream:
    """SUB sockets to nodes' events PUB; ``add`` more nodes at any time."""

    def __init__(self, key: ClusterKey,
                 topics: tuple[bytes, ...] = (p.TOPIC_HEARTBEAT, p.TOPIC_PROGRESS,
                                              p.TOPIC_ERROR)) -> None:
        self.key = key
        self.topics = topics
        self.ctx = zmq.Context()
        self.poller = zmq.Poller()
        self.names: dict[zmq.Socket, str] = {}
        self.endpoints: set[str] = set()
        self.drop = LogOnce(log)

    def add(self, name: str, events_endpoint: str) -> bool:
        if events_endpoint in self.endpoints:
            return False
        sock = make_socket(self.ctx, zmq.SUB, rcvhwm=10_000)
        for t in self.topics:
            sock.setsockopt(zmq.SUBSCRIBE, t)
        secure_connect(sock, events_endpoint, self.key)
        self.poller.register(sock, zmq.POLLIN)
        self.names[sock] = name
        self.endpoints.add(events_endpoint)
        return True

    def events(self, timeout_s: float) -> Iterator[Event]:
        """Events that arrive within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return
            for sock, _ in self.poller.poll(left_ms):
                frames = sock.recv_multipart()
                if len(frames) < 2:
                    continue
                try:
                    msg, _ = p.decode(frames[1:])
                except ProtocolError as exc:
                    self.drop(self.names[sock], str(exc))
                    continue
                yield Event(self.names[sock], frames[0].decode("ascii", "replace"), msg)

    def close(self) -> None:
        for sock in self.names:
            sock.close(linger=0)
        self.names.clear()
        self.ctx.destroy(linger=0)
