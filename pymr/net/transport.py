"""Socket helpers: every socket gets bounded linger, size limits and short queues."""

from __future__ import annotations

import logging
import select
from collections import OrderedDict
from typing import Any

import zmq

from ..config import HANDSHAKE_IVL_MS, LINGER_MS
from ..errors import TransportError
from ..wire.protocol import MAX_FRAME_BYTES

log = logging.getLogger(__name__)


def context_for(sockets: int) -> zmq.Context:
    """A context for about ``sockets`` sockets. libzmq allows 1023 per context by default
    and each socket holds file descriptors: a master with three sockets per node needs
    more of both past ~300 nodes."""
    ctx = zmq.Context()
    wanted = sockets + 64
    if wanted > ctx.get(zmq.MAX_SOCKETS):
        ctx.set(zmq.MAX_SOCKETS, wanted)
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 3 * wanted
        if soft != resource.RLIM_INFINITY and soft < need:
            new = need if hard == resource.RLIM_INFINITY else min(hard, need)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ImportError, ValueError, OSError):
        log.debug("could not raise the open-file limit", exc_info=True)
    return ctx


def make_socket(ctx: zmq.Context, kind: int, *, sndhwm: int = 1000, rcvhwm: int = 1000,
                identity: bytes | None = None) -> zmq.Socket:
    """A socket with the options every pymr socket needs."""
    try:
        sock = ctx.socket(kind)
    except zmq.ZMQError as exc:
        raise TransportError(f"cannot create socket: {exc.strerror}") from exc
    sock.linger = LINGER_MS
    sock.maxmsgsize = MAX_FRAME_BYTES
    sock.handshake_ivl = HANDSHAKE_IVL_MS
    sock.sndhwm = sndhwm
    sock.rcvhwm = rcvhwm
    if identity is not None:
        sock.identity = identity
    if kind == zmq.ROUTER:
        sock.router_mandatory = True
    if kind in (zmq.PUSH, zmq.DEALER):
        sock.immediate = True
    return sock


def send_nowait(sock: zmq.Socket, frames: list[Any]) -> bool:
    """Send without blocking; False when the peer is gone or its queue is full."""
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        return True
    except zmq.Again:
        return False
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EHOSTUNREACH:
            return False
        raise TransportError(f"send failed: {exc.strerror}") from exc


class ReadyPoller:
    """Waits for input on many ZeroMQ sockets in O(sockets with news), where ``zmq.Poller``
    walks every registered socket on every call (the master's loop polls two sockets per
    node: at 256 nodes that walk was a third of its CPU).

    It waits with epoll on each socket's ``ZMQ_FD``, which signals when the socket has
    commands to process, not while messages are queued: once ``ZMQ_EVENTS`` was read, or
    a send or receive ran on the socket, messages may be queued with the fd quiet.  So a
    socket is checked with ``ZMQ_EVENTS`` when its fd fired, when it was registered, and
    when the caller says it sent on it or stopped draining it early (:meth:`touch`).  The
    caller must drain a socket it was given until ``has_input`` is false, or touch it.
    """

    def __init__(self) -> None:
        self._epoll_fd: select.epoll | None = None   # opened at the first register
        self._by_fd: dict[int, zmq.Socket] = {}
        self._fd_of: dict[zmq.Socket, int] = {}
        self._check: set[zmq.Socket] = set()

    def register(self, sock: zmq.Socket) -> None:
        fd = int(sock.getsockopt(zmq.FD))
        self._epoll().register(fd, select.EPOLLIN)
        self._by_fd[fd] = sock
        self._fd_of[sock] = fd
        self._check.add(sock)

    def unregister(self, sock: zmq.Socket) -> None:
        """Call before closing the socket (its fd number may be reused)."""
        fd = self._fd_of.pop(sock, None)
        if fd is None:
            return
        del self._by_fd[fd]
        self._check.discard(sock)
        try:
            self._epoll().unregister(fd)
        except (OSError, ValueError):
            pass

    def touch(self, sock: zmq.Socket) -> None:
        """``sock`` was sent on, or not drained: look at it again at the next poll."""
        if sock in self._fd_of:
            self._check.add(sock)

    def poll(self, timeout_ms: int) -> list[zmq.Socket]:
        """The sockets with a message to receive, waiting up to ``timeout_ms`` for one."""
        ready = self._take_ready()
        events = self._epoll().poll(0 if ready else timeout_ms / 1000)
        if events:
            by_fd = self._by_fd
            check = self._check
            for fd, _ in events:
                sock = by_fd.get(fd)
                if sock is not None:
                    check.add(sock)
            seen = set(ready)
            ready.extend(s for s in self._take_ready() if s not in seen)
        return ready

    def close(self) -> None:
        if self._epoll_fd is not None:
            self._epoll_fd.close()
            self._epoll_fd = None
        self._by_fd.clear()
        self._fd_of.clear()
        self._check.clear()

    def _epoll(self) -> select.epoll:
        if self._epoll_fd is None:
            self._epoll_fd = select.epoll()
        return self._epoll_fd

    def _take_ready(self) -> list[zmq.Socket]:
        check, self._check = self._check, set()
        return [s for s in check if has_input(s)]


def has_input(sock: zmq.Socket) -> bool:
    """A message can be received now (reads ``ZMQ_EVENTS``: cheaper than a one-socket
    ``poll``, which builds a poller)."""
    try:
        return bool(int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)
    except zmq.ZMQError:
        return False


class LogOnce:
    """Log each (peer, reason) once, in bounded memory: junk must not flood the log."""

    def __init__(self, logger: logging.Logger, limit: int = 1024) -> None:
        self._log = logger
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._limit = limit
        self.count = 0

    def __call__(self, peer: str, reason: str) -> None:
        self.count += 1
        key = (peer, reason)
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        self._log.warning("dropped a message from %s: %s", peer or "unknown peer", reason)
