"""The master's acked control channel: sequence numbers, pending messages, resends and
what runs on an ack, with no sockets.

A control message that must arrive (``JobStart``, ``Commit``, ``JobUpdate`` ...) is kept
until its node acks its ``seq`` and sent again every ``resend_after_s`` meanwhile. The
socket send is a callable passed in (it decides whether the node can still be reached), so
the bookkeeping is tested with plain scripts of sends, acks and times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import RESEND_INTERVAL_S
from ..wire import protocol as p

#: Sends one control message's frames to a node (or drops them if it cannot be reached).
SendFn = Callable[[str, list[Any]], None]


@dataclass
class PendingControl:
    """A control message sent and not yet acked."""

    node_id: str
    frames: list[Any]
    sent_at: float
    then: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A node refused (``Ack ok=False``) a control message: the job cannot go on there."""

    node_id: str
    seq: int
    error: str


class ControlChannel:
    """Acked control messages to nodes, keyed by their sequence number."""

    def __init__(self, send: SendFn, *, clock: Callable[[], float] = time.monotonic,
                 resend_after_s: float = RESEND_INTERVAL_S) -> None:
        self._send = send
        self._clock = clock
        self.resend_after_s = resend_after_s
        self.seq = 0
        self.pending: dict[int, PendingControl] = {}

    def next_seq(self) -> int:
        """A fresh sequence number (also for unacked messages that are answered by seq)."""
        self.seq += 1
        return self.seq

    def send(self, node_id: str, msg: p.Message, then: Callable[[], None] | None = None
             ) -> None:
        """Send ``msg`` (which carries its ``seq``) and keep it until acked; ``then`` runs
        on the ack."""
        frames = p.encode(msg)
        seq: int = getattr(msg, "seq")
        self.pending[seq] = PendingControl(node_id, frames, self._clock(), then)
        self._send(node_id, list(frames))

    def ack(self, seq: int, ok: bool, error: str = "") -> Refusal | None:
        """A node applied (``ok``) or refused a message: an applied one runs its ``then``;
        a refused one is returned, for the caller to fail the job. Unknown or repeated
        acks change nothing."""
        pend = self.pending.pop(seq, None)
        if pend is None:
            return None
        if not ok:
            return Refusal(pend.node_id, seq, error)
        if pend.then is not None:
            pend.then()
        return None

    def resend(self, now: float) -> None:
        """Send again every message unacked for ``resend_after_s``."""
        for pend in self.pending.values():
            if now - pend.sent_at >= self.resend_after_s:
                self._send(pend.node_id, list(pend.frames))
                pend.sent_at = now

    def drop_node(self, node_id: str) -> None:
        """A lost node will ack nothing: forget its messages and run their ``then`` (a
        ``JobUpdate`` waits for no ack from a node that is gone)."""
        for seq in [s for s, x in self.pending.items() if x.node_id == node_id]:
            pend = self.pending.pop(seq, None)
            if pend is not None and pend.then is not None:
                pend.then()

    def clear(self) -> None:
        """Forget every pending message (the job is ending: only its end is awaited)."""
        self.pending.clear()

    def waiting_on(self) -> set[str]:
        """The nodes that still owe an ack."""
        return {x.node_id for x in self.pending.values()}
