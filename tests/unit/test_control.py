"""pymr.engine.control.ControlChannel: acked control messages as scripts of sends, acks and
times, with a list for a socket."""

from __future__ import annotations

from typing import Any

from pymr.engine.control import ControlChannel, Refusal
from pymr.wire import protocol as p

RESEND = 1.0


class Wire:
    """The socket side: what was sent to whom, and which nodes can be reached."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, p.Message]] = []
        self.gone: set[str] = set()
        self.now = 0.0

    def send(self, node_id: str, frames: list[Any]) -> None:
        if node_id not in self.gone:
            msg, _ = p.decode(frames)
            assert msg is not None
            self.sent.append((node_id, msg))

    def seqs(self) -> list[tuple[str, int]]:
        return [(node, getattr(msg, "seq")) for node, msg in self.sent]


def make() -> tuple[ControlChannel, Wire]:
    wire = Wire()
    return ControlChannel(wire.send, clock=lambda: wire.now, resend_after_s=RESEND), wire


def flush(chan: ControlChannel, node: str = "a", then: Any = None) -> int:
    seq = chan.next_seq()
    chan.send(node, p.Flush(seq=seq, job_id="j"), then=then)
    return seq


def test_sequence_numbers_increase() -> None:
    chan, _ = make()
    assert [chan.next_seq() for _ in range(3)] == [1, 2, 3]


def test_a_send_goes_out_at_once_and_waits_for_its_ack() -> None:
    chan, wire = make()
    seq = flush(chan, "a")
    assert wire.seqs() == [("a", seq)]
    assert set(chan.pending) == {seq}
    assert chan.waiting_on() == {"a"}


def test_an_ack_runs_then() -> None:
    chan, _ = make()
    ran: list[str] = []
    seq = flush(chan, "a", then=lambda: ran.append("a"))
    assert chan.ack(seq, ok=True) is None
    assert ran == ["a"]
    assert not chan.pending
    assert chan.ack(seq, ok=True) is None     # a repeated ack changes nothing
    assert ran == ["a"]


def test_a_refusal_is_a_failure_and_then_does_not_run() -> None:
    chan, _ = make()
    ran: list[str] = []
    seq = flush(chan, "b", then=lambda: ran.append("b"))
    assert chan.ack(seq, ok=False, error="bad hash") == Refusal("b", seq, "bad hash")
    assert ran == []
    assert not chan.pending


def test_an_unknown_ack_is_ignored() -> None:
    chan, _ = make()
    seq = flush(chan)
    assert chan.ack(seq + 100, ok=False, error="x") is None
    assert set(chan.pending) == {seq}


def test_resent_after_the_interval_until_acked() -> None:
    chan, wire = make()
    seq = flush(chan, "a")
    wire.now = 0.5
    chan.resend(0.5)
    assert wire.seqs() == [("a", seq)]       # not yet
    chan.resend(1.0)
    assert wire.seqs() == [("a", seq)] * 2
    chan.resend(1.5)
    assert len(wire.sent) == 2               # the interval restarts at each resend
    chan.resend(2.0)
    assert len(wire.sent) == 3
    chan.ack(seq, ok=True)
    chan.resend(10.0)
    assert len(wire.sent) == 3               # no resend after the ack


def test_resends_keep_the_message_and_its_node() -> None:
    chan, wire = make()
    a = flush(chan, "a")
    wire.now = 0.6
    b = flush(chan, "b")
    chan.resend(1.0)                          # only a is due
    chan.resend(1.6)                          # now b
    assert wire.seqs() == [("a", a), ("b", b), ("a", a), ("b", b)]
    assert all(isinstance(msg, p.Flush) for _, msg in wire.sent)


def test_a_node_that_cannot_be_reached_still_owes_the_ack() -> None:
    chan, wire = make()
    wire.gone.add("a")
    seq = flush(chan, "a")
    chan.resend(5.0)
    assert wire.sent == []
    assert set(chan.pending) == {seq}


def test_dropping_a_node_runs_its_thens_in_order() -> None:
    chan, _ = make()
    ran: list[int] = []
    a1 = flush(chan, "a", then=lambda: ran.append(1))
    b = flush(chan, "b", then=lambda: ran.append(2))
    a2 = flush(chan, "a", then=lambda: ran.append(3))
    chan.drop_node("a")
    assert ran == [1, 3]
    assert set(chan.pending) == {b}
    assert chan.ack(a1, ok=True) is None and chan.ack(a2, ok=True) is None
    assert ran == [1, 3]


def test_a_then_may_send_more() -> None:
    """A JobUpdate's last ack refills: the then sends new acked messages."""
    chan, wire = make()

    def refill() -> None:
        flush(chan, "b")

    seq = flush(chan, "a", then=refill)
    chan.drop_node("a")
    assert seq not in chan.pending
    assert chan.waiting_on() == {"b"}
    assert [node for node, _ in wire.sent] == ["a", "b"]


def test_clear_forgets_everything() -> None:
    chan, wire = make()
    ran: list[str] = []
    seq = flush(chan, "a", then=lambda: ran.append("a"))
    chan.clear()
    assert not chan.pending and chan.waiting_on() == set()
    chan.resend(10.0)
    assert len(wire.sent) == 1
    assert chan.ack(seq, ok=True) is None and ran == []
    assert chan.next_seq() == seq + 1         # numbers are never reused
