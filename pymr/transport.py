"""Socket helpers: every socket gets bounded linger, size limits and short queues."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import zmq

from .config import HANDSHAKE_IVL_MS, LINGER_MS
from .errors import TransportError
from .protocol import MAX_FRAME_BYTES

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
