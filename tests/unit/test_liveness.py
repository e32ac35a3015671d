"""pymr.engine.liveness.Liveness: which node is dead and when, with explicit times, no sockets."""

from __future__ import annotations

from pymr.engine.liveness import Liveness

TIMEOUT = 4.0


def make(*nodes: str, now: float = 0.0) -> Liveness:
    live = Liveness(TIMEOUT, now, check_every_s=0.05)
    for node in nodes:
        live.watch(node, now)
    return live


def walk(live: Liveness, start: float, end: float, step: float = 0.1,
         heard: tuple[str, ...] = ()) -> dict[str, str]:
    """Check every ``step`` seconds (the master's loop), hearing from ``heard`` each time;
    returns the first non-empty verdict."""
    t = start
    while t <= end + 1e-9:
        for node in heard:
            live.heard(node, t, heartbeat=True)
        dead = live.dead(t)
        if dead:
            return dead
        t += step
    return {}


def test_a_node_heard_from_is_never_dead() -> None:
    live = make("a")
    assert walk(live, 0.1, 20.0, heard=("a",)) == {}


def test_a_silent_node_dies_just_after_the_timeout() -> None:
    live = make("a", "b")
    for t in (1.0, 2.0, 3.0, 4.0):
        live.heard("a", t, heartbeat=True)
        live.heard("b", t, heartbeat=True)
        assert live.dead(t) == {}
    for t in (5.0, 6.0, 7.0, 8.0):           # b silent from 4.0 on
        live.heard("a", t, heartbeat=True)
        assert live.dead(t) == {}            # up to exactly the timeout: not yet
    live.heard("a", 8.1, heartbeat=True)
    assert live.dead(8.1) == {"b": "silent for 4 s"}


def test_a_node_that_never_heartbeated_is_timed_from_its_hello() -> None:
    live = make("a", now=10.0)
    live.heard("a", 11.0)                    # a reply, but no heartbeat
    assert walk(live, 11.0, 15.0) == {}
    assert walk(live, 15.0, 16.0) == {"a": "no heartbeat since its hello"}


def test_any_message_restarts_the_timer() -> None:
    live = make("a")
    live.heard("a", 3.5)                     # not a heartbeat: still counts
    assert walk(live, 3.5, 7.5) == {}
    assert live.dead(7.6) == {"a": "no heartbeat since its hello"}


def test_checks_are_rate_limited() -> None:
    live = Liveness(TIMEOUT, 0.0, check_every_s=1.0)
    live.watch("a", 0.0)
    assert live.dead(1.5) == {}              # a check: nobody overdue yet
    assert live.dead(2.4) == {}
    assert live.dead(3.4) == {}
    assert live.dead(4.3) == {}              # overdue, but too soon after the last check
    assert live.dead(4.4) == {"a": "no heartbeat since its hello"}


def test_a_long_gap_between_checks_is_the_masters_own_silence() -> None:
    """The master was busy (or suspended) for longer than half the timeout: nobody is
    blamed; every node's timer restarts at that check."""
    live = make("a", "b")
    live.heard("a", 1.0, heartbeat=True)
    live.dead(1.0)
    assert live.dead(11.0) == {}             # 10 s of the master's own silence
    assert walk(live, 11.1, 15.0, heard=("a",)) == {}
    assert walk(live, 15.1, 15.1, heard=("a",)) == {"b": "no heartbeat since its hello"}


def test_several_silent_nodes_die_together() -> None:
    live = make("a", "b", "c")
    assert walk(live, 0.1, 10.0, heard=("c",)) == {
        "a": "no heartbeat since its hello", "b": "no heartbeat since its hello"}


def test_a_forgotten_node_is_no_longer_judged_nor_revived() -> None:
    live = make("a", "b")
    live.forget("b")
    live.heard("b", 1.0, heartbeat=True)     # a straggler from a lost node
    assert walk(live, 0.1, 10.0, heard=("a",)) == {}
    assert live.dead(20.0) == {}             # after a long gap, still nothing about b


def test_a_node_that_returns_is_timed_afresh() -> None:
    live = make("a", "b")
    live.heard("b", 1.0, heartbeat=True)
    assert walk(live, 0.1, 6.0, heard=("a",)) == {"b": "silent for 4 s"}
    live.forget("b")
    live.watch("b", 6.0)                     # it said hello again
    assert walk(live, 6.1, 10.0, heard=("a",)) == {}
    assert live.dead(10.1) == {"b": "no heartbeat since its hello"}


def test_an_unwatched_node_is_ignored() -> None:
    live = make()
    live.heard("x", 1.0, heartbeat=True)
    assert live.dead(100.0) == {}
