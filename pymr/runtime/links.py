"""The master's links to its nodes: connect and hello, the sockets per node, sends that
never block, receives, and closing a node's sockets.

Per node the master has one DEALER (control, connected before the hello), and after the
hello one PUSH (tasks) and one SUB (events); it binds nothing. ``NodeLinks`` owns the
sockets, the poller over them and which node is still alive (each message received counts
as a sign of life); what a node's messages mean stays in the master.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from .._version import __version__
from ..config import UNICODE_VERSION
from ..engine.liveness import Liveness
from ..errors import ClusterLost, JobError, ProtocolError, TransportError
from ..net.security import ClusterKey, secure_connect
from ..net.transport import LogOnce, ReadyPoller, context_for, has_input, make_socket, send_nowait
from ..wire import protocol as p

log = logging.getLogger(__name__)


@dataclass(eq=False)
class NodeLink:
    """The master's sockets to one node and what it said in its hello."""

    endpoint: str
    control: zmq.Socket
    node_id: str = ""
    name: str = ""
    slots: int = 0
    local: bool = False
    task: zmq.Socket | None = None
    events: zmq.Socket | None = None
    shuffle_endpoint: str = ""
    builtin_only: bool = False
    alive: bool = True


class NodeLinks:
    """One job's links: ``links`` (node id -> link, once it said hello) and ``by_socket``
    (every open socket -> its link, hello or not)."""

    def __init__(self, key: ClusterKey, job_id: str, endpoints: list[str], *,
                 local_reads: bool, liveness: Liveness, next_seq: Callable[[], int],
                 report: Callable[[str], None], drop: LogOnce) -> None:
        self.key = key
        self.job_id = job_id
        self.identity = f"m-{job_id}".encode()
        self.endpoints = endpoints      # the nodes asked for, and those that joined
        self.local_reads = local_reads
        self.liveness = liveness
        self._next_seq = next_seq
        self._report = report
        self.drop = drop
        self.links: dict[str, NodeLink] = {}
        self.by_socket: dict[zmq.Socket, NodeLink] = {}
        self.ctx: zmq.Context | None = None
        self.poller = ReadyPoller()

    def open(self) -> None:
        """Three sockets per node, with room for nodes that join during the job."""
        self.ctx = context_for(6 * len(self.endpoints) + 64)

    def close_all(self) -> None:
        self.poller.close()
        if self.ctx is not None:
            self.ctx.destroy(linger=0)

    # ---------------------------------------------------------------- connect
    def connect_all(self, hello_timeout_s: float) -> None:
        """Hello every endpoint and wait up to ``hello_timeout_s`` for the answers; nodes
        that do not answer are not used (none answering fails the job)."""
        assert self.ctx is not None
        waiting: list[NodeLink] = []
        for ep in self.endpoints:
            waiting.append(self.connect(ep))
        deadline = time.monotonic() + hello_timeout_s
        while any(not x.node_id for x in waiting) and time.monotonic() < deadline:
            for sock in self.poller.poll(200):
                while sock in self.by_socket and has_input(sock):
                    msg, _ = self.recv(sock)
                    link = self.by_socket[sock]
                    if isinstance(msg, p.HelloReply) and not link.node_id:
                        self.accept_hello(link, msg)
        missing = [x for x in waiting if not x.node_id]
        if len(missing) == len(waiting):
            raise ClusterLost("no node answered (" + ", ".join(x.endpoint for x in missing) +
                              "); check that they run and hold this cluster's key")
        for x in missing:
            self._report(f"node {x.endpoint} did not answer; not used")
            self.close(x)

    def connect(self, endpoint: str) -> NodeLink:
        """A control socket to ``endpoint``, with the hello sent on it."""
        assert self.ctx is not None
        sock = make_socket(self.ctx, zmq.DEALER, identity=self.identity,
                           sndhwm=10_000, rcvhwm=10_000)
        sock.immediate = False
        secure_connect(sock, endpoint, self.key)
        link = NodeLink(endpoint=endpoint, control=sock)
        self.by_socket[sock] = link
        self.poller.register(sock)
        sock.send_multipart(p.encode(p.Hello(
            seq=self._next_seq(), client_id=self.job_id, pymr_version=__version__,
            unicode_version=UNICODE_VERSION)))
        return link

    def connect_new(self, discovered: list[str]) -> None:
        """Hello the endpoints not seen before (nodes that appeared during the job)."""
        known = {x.endpoint for x in self.by_socket.values()} | set(self.endpoints)
        for endpoint in discovered:
            if endpoint not in known:
                self.endpoints.append(endpoint)
                self.connect(endpoint)

    def accept_hello(self, link: NodeLink, msg: p.HelloReply) -> None:
        """The node answered: its task and event sockets are connected and it is watched.
        A node of another version raises ``JobError``; a second node with a known id is
        closed and reported."""
        if msg.unicode_version != UNICODE_VERSION or msg.pymr_version != __version__:
            raise JobError(f"node {msg.name} runs pymr {msg.pymr_version} with Unicode "
                           f"{msg.unicode_version}; this machine has pymr {__version__} with "
                           f"Unicode {UNICODE_VERSION}: install the same version everywhere")
        if msg.node_id in self.links:
            self._report(f"two nodes answered with the id {msg.node_id} (a copied "
                         f"identity?); using only {self.links[msg.node_id].endpoint}")
            self.close(link)
            return
        assert self.ctx is not None
        link.node_id, link.name, link.slots = msg.node_id, msg.name, msg.slots
        link.shuffle_endpoint = msg.shuffle_endpoint
        link.builtin_only = msg.builtin_only
        link.local = self.local_reads
        # Credit (slots + prefetch) bounds what is queued; the HWM must not be the bound:
        # libzmq returns write credit in batches, so a tight HWM refuses sends within credit.
        link.task = make_socket(self.ctx, zmq.PUSH, sndhwm=1000)
        # Queue while the connection is still in its CURVE handshake: refusing (immediate)
        # handed the first tasks back and paused the node for a second at every job start.
        # One peer per socket, and credit bounds the queue.
        link.task.immediate = False
        secure_connect(link.task, msg.task_endpoint, self.key)
        link.events = make_socket(self.ctx, zmq.SUB, rcvhwm=10_000)
        for topic in (p.TOPIC_ERROR, p.TOPIC_HEARTBEAT):
            link.events.setsockopt(zmq.SUBSCRIBE, topic)
        secure_connect(link.events, msg.events_endpoint, self.key)
        self.poller.register(link.events)
        self.by_socket[link.events] = link
        self.links[link.node_id] = link
        self.liveness.watch(link.node_id, time.monotonic())

    # ---------------------------------------------------------------- state
    def live(self) -> list[NodeLink]:
        return [x for x in self.links.values() if x.alive]

    def live_shuffle(self) -> dict[str, str]:
        """The live nodes (in link order) and their shuffle endpoints."""
        return {x.node_id: x.shuffle_endpoint for x in self.live()}

    def mark_dead(self, link: NodeLink) -> None:
        """No more work goes to the node, and its silence is no longer timed."""
        link.alive = False
        self.liveness.forget(link.node_id)

    def forget(self, link: NodeLink) -> None:
        """A node not used after all: no longer a link, not timed, its sockets closed."""
        if link.node_id in self.links:
            del self.links[link.node_id]
            self.liveness.forget(link.node_id)
        self.close(link)

    def close(self, link: NodeLink) -> None:
        for sock in (link.control, link.task, link.events):
            if sock is None:
                continue
            if sock in self.by_socket:
                self.poller.unregister(sock)
                del self.by_socket[sock]
            sock.close(linger=0)

    # ---------------------------------------------------------------- send, receive
    def send_to(self, node_id: str, frames: list[Any]) -> None:
        """The control channel's send: only to a node still alive."""
        link = self.links.get(node_id)
        if link is not None and link.alive:
            self.send_on(link, frames)

    def send_on(self, link: NodeLink, frames: list[Any]) -> bool:
        """Unacked send on a node's control socket.  A send can consume the socket's
        "input arrived" signal, so the poller is told to look at the socket again."""
        assert link.control is not None
        self.poller.touch(link.control)
        return send_nowait(link.control, frames)

    def publish(self, msg: p.Message) -> None:
        """One message to every live node that said hello (unacked)."""
        frames = p.encode(msg)
        for link in self.live():
            if link.node_id:
                self.send_on(link, list(frames))

    def receive(self, timeout_ms: int) -> Iterator[tuple[NodeLink, p.Message, list[Any]]]:
        """Every message that arrives within ``timeout_ms`` from a live node, with its
        payload frames; each counts as a sign of life (``Liveness.heard``). A socket with
        more than 10,000 waiting is left for the next call (the poller looks at it again),
        so one busy node cannot hold the caller's loop."""
        for sock in self.poller.poll(timeout_ms):
            for _ in range(10_000):
                if sock not in self.by_socket or not has_input(sock):
                    break
                msg, payload = self.recv(sock)
                link = self.by_socket[sock]
                if msg is None or not link.alive:
                    continue
                self.liveness.heard(link.node_id, time.monotonic(),
                                    heartbeat=isinstance(msg, p.Heartbeat))
                yield link, msg, payload
            else:  # not drained: the poller must look at it again
                self.poller.touch(sock)

    def recv(self, sock: zmq.Socket) -> tuple[p.Message | None, list[Any]]:
        """One message from a ready socket; one that does not decode is dropped (None)."""
        try:
            frames = sock.recv_multipart(copy=False)
        except zmq.ZMQError as exc:
            raise TransportError(f"receive failed: {exc.strerror}") from exc
        if frames and sock.type == zmq.SUB:
            frames = frames[1:]
        try:
            return p.decode(frames)
        except ProtocolError as exc:
            self.drop(self.by_socket[sock].endpoint, str(exc))
            return None, []
