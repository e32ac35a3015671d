"""pymr.net.keeper: a node redials its seeds with backoff and keeps what answers."""

from __future__ import annotations

import time
from pathlib import Path

from pymr.net.keeper import SEED_BACKOFF_MAX_S, PeerKeeper, backoff_s
from pymr.net.members import MemberBook
from pymr.net.peerstore import PeerStore, Remembered
from pymr.net.security import ClusterKey
from tests import helpers

from .fake_members import FakeNet, FakeNode

KEY = ClusterKey.generate()
ME = "tcp://10.0.0.9:7372"
A, B, C = (f"tcp://10.0.0.{i}:7372" for i in (1, 2, 3))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keeper(net: FakeNet, tmp_path: Path, seeds: list[str]) -> tuple[PeerKeeper, Clock,
                                                                     list[str]]:
    clock = Clock()
    said: list[str] = []
    book = MemberBook("me000009", clock=clock)
    k = PeerKeeper(book, KEY, me={"node_id": "me000009", "name": "me", "endpoint": ME},
                   seeds=seeds, store=PeerStore(tmp_path), say=said.append,
                   probe_fn=net.probe)
    return k, clock, said


def test_backoff_schedule() -> None:
    assert [backoff_s("seed", n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_s("seed", 50) == SEED_BACKOFF_MAX_S
    assert backoff_s("peer", 1) == 5 and backoff_s("peer", 20) == 300


def test_seed_is_redialled_with_backoff_until_it_answers(tmp_path: Path) -> None:
    net = FakeNet()
    k, clock, said = keeper(net, tmp_path, [A])
    waits = []
    for _ in range(5):
        assert k.step() <= 5.0                      # sleeps are short; new members wake it
        due = k.book.next_due()
        assert due is not None
        waits.append(due - clock.now)
        clock.now = due
    assert waits == [1, 2, 4, 8, 16]
    assert net.dialled() == [A] * 5
    assert len(said) == 1 and said[0].startswith("seed 10.0.0.1:7372: no answer")
    # When the seed comes up, the node joins through it: it says so once, tells the seed
    # who it is (Hello.member), and dials the members the seed named.
    net.at[A] = FakeNode("a", "alpha", [B])
    net.at[B] = FakeNode("b", "beta")
    k.step()
    assert said[-1] == "reached seed 10.0.0.1:7372 (alpha); it named 1 member(s) new to this node"
    assert net.calls[-1]["member"] == {"node_id": "me000009", "name": "me", "endpoint": ME}
    k.step()
    assert net.dialled()[-1] == B
    assert {p["endpoint"] for p in k.book.answer()} == {A, B}
    assert {m.node_id for m in PeerStore(tmp_path).load()} == {"a", "b"}


def test_remembered_member_now_of_another_cluster_is_dropped_and_forgotten(
        tmp_path: Path) -> None:
    PeerStore(tmp_path).record([Remembered("c", "gamma", C, KEY.fingerprint, time.time())])
    net = FakeNet({C: "key"})
    k, _, said = keeper(net, tmp_path, [])
    k.step()
    assert k.book.answer() == [] and k.book.due() == []
    assert PeerStore(tmp_path).load() == []
    assert said == []


def test_a_seed_that_is_this_node_is_left_alone(tmp_path: Path) -> None:
    net = FakeNet({A: FakeNode("me000009", "me")})
    k, clock, said = keeper(net, tmp_path, [A])
    k.step()
    clock.now += 100
    assert k.book.due() == [] and k.book.answer() == [] and said == []


def test_heard_records_of_this_cluster_only(tmp_path: Path) -> None:
    import dataclasses

    from .test_ladder import record

    k, _, _ = keeper(FakeNet(), tmp_path, [])
    k.heard(dataclasses.replace(record("b", B), fingerprint=KEY.fingerprint))
    k.heard(dataclasses.replace(record("x", C), fingerprint="f" * 16))
    assert [e.endpoint for e in k.book.due()] == [B]


def test_thread_dials_at_once_and_stops_promptly(tmp_path: Path) -> None:
    net = FakeNet()
    k, _, _ = keeper(net, tmp_path, [A])
    k.start()
    helpers.wait_until(lambda: net.calls, 5, "the keeper to dial its seed", interval_s=0.01)
    started = time.monotonic()
    k.stop()
    assert time.monotonic() - started < 1.0 and k._thread is None
