"""pymr.net.transport.ReadyPoller: epoll on ZMQ_FD never loses a wake-up.

The hazard: ZMQ_FD signals when commands reach a socket, not while messages are queued; a
send (or an EVENTS read) on the socket can consume the "input arrived" command, leaving a
message queued behind a quiet fd. The poller's contract (touch after a send, drain until
``has_input`` is false or touch) must make every queued message visible to the next poll.
Over inproc a send is in the peer's queue when it returns, so the expected state is known
exactly after every step.
"""

from __future__ import annotations

import itertools
import time

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from pymr.net.transport import ReadyPoller, has_input

_ids = itertools.count()
#: libzmq processes a socket's commands on send at most every ~1 ms (max_command_delay,
#: 3M TSC ticks); past that a send swallows the "input arrived" signal. Not a wait for an
#: event: the pause is what makes the hazard happen.
THROTTLE_S = 0.003


class Sockets:
    """A context whose sockets are all closed at the end (a socket left to the garbage
    collector is never closed when its ResourceWarning is an error, and term then waits
    for it forever)."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.made: list[zmq.Socket] = []

    def socket(self, kind: int) -> zmq.Socket:
        s = self.ctx.socket(kind)
        self.made.append(s)
        return s

    def close(self) -> None:
        for s in self.made:
            s.close(linger=0)
        self.ctx.term()


@pytest.fixture
def ctx():
    c = Sockets()
    yield c
    c.close()


def pair(ctx: Sockets) -> tuple[zmq.Socket, zmq.Socket]:
    """(DEALER the poller watches, ROUTER peer), like the master's control link."""
    ep = f"inproc://ready-{next(_ids)}"
    peer = ctx.socket(zmq.ROUTER)
    peer.bind(ep)
    mine = ctx.socket(zmq.DEALER)
    mine.identity = b"m"
    mine.connect(ep)
    mine.send(b"hello")   # the ROUTER learns the DEALER's identity
    assert peer.recv_multipart() == [b"m", b"hello"]
    return mine, peer


def test_a_message_wakes_a_blocking_poll(ctx: Sockets) -> None:
    mine, peer = pair(ctx)
    poller = ReadyPoller()
    poller.register(mine)
    assert poller.poll(0) == []
    peer.send_multipart([b"m", b"x"])
    started = time.monotonic()
    assert poller.poll(5000) == [mine]
    assert time.monotonic() - started < 2.5  # woken by the message, not the 5 s timeout
    assert mine.recv() == b"x" and not has_input(mine)
    assert poller.poll(0) == []
    poller.unregister(mine)
    peer.send_multipart([b"m", b"y"])
    assert poller.poll(0) == []   # unregistered sockets are not reported
    poller.close()


def test_a_send_that_swallows_the_signal_is_covered_by_touch(ctx: Sockets) -> None:
    """The message arrives, then the socket sends before anyone polled: the send processes
    the "input arrived" command, the fd goes quiet; touch makes the next poll look."""
    mine, peer = pair(ctx)
    poller = ReadyPoller()
    poller.register(mine)
    assert poller.poll(0) == []
    peer.send_multipart([b"m", b"x"])
    time.sleep(THROTTLE_S)   # the scenario: past libzmq's command throttle (see THROTTLE_S)
    mine.send(b"reply")
    assert poller.poll(0) == [] and has_input(mine)   # the hazard: queued, fd quiet
    poller.touch(mine)
    assert poller.poll(0) == [mine]
    poller.close()


OPS = st.lists(st.sampled_from(["peer_sends", "peer_sends_many", "send", "crossing", "poll",
                                "recv_one"]), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_poll_reports_exactly_the_sockets_with_queued_input(ops: list[str]) -> None:
    """Random interleavings on two links: after every step, a poll that follows the
    contract reports a socket iff messages are queued on it."""
    ctx = Sockets()
    try:
        links = [pair(ctx), pair(ctx)]
        queued = [0, 0]
        poller = ReadyPoller()
        for mine, _ in links:
            poller.register(mine)
        for i, op in enumerate(ops):
            k = i % 2
            mine, peer = links[k]
            if op == "peer_sends":
                peer.send_multipart([b"m", b"a"])
                queued[k] += 1
            elif op == "peer_sends_many":
                for _ in range(5):
                    peer.send_multipart([b"m", b"b"])
                queued[k] += 5
            elif op in ("send", "crossing"):
                if op == "crossing":   # a message arrives unseen just before our send
                    peer.send_multipart([b"m", b"c"])
                    queued[k] += 1
                time.sleep(THROTTLE_S)   # the scenario: past the command throttle
                mine.send(b"r")
                poller.touch(mine)
                peer.recv_multipart()
            elif op == "recv_one" and queued[k]:
                mine.recv()
                queued[k] -= 1
                poller.touch(mine)     # not drained: the contract says touch
            ready = poller.poll(0)
            assert sorted(id(s) for s in ready) == sorted(
                id(links[j][0]) for j in (0, 1) if queued[j]), (ops[:i + 1], queued)
            if op == "poll":           # drain what was reported, as the master does
                for s in ready:
                    j = 0 if s is links[0][0] else 1
                    while has_input(s):
                        s.recv()
                        queued[j] -= 1
                assert queued == [0, 0]
            else:                      # reported but left queued: the contract says touch
                for s in ready:
                    poller.touch(s)
        poller.close()
    finally:
        ctx.close()
