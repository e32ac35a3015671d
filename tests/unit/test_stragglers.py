"""pymr.engine.stragglers.Stragglers: which running attempts are overdue for a backup, as
scripts of attempts started and finished at explicit times, no sockets."""

from __future__ import annotations

from pymr.engine.stragglers import Stragglers


def finished(s: Stragglers, *durations: float) -> None:
    """Attempts of tasks 100, 101, ... that ran for these durations."""
    for i, took in enumerate(durations):
        s.start(100 + i, 1, 0.0)
        started = s.stop(100 + i, 1)
        assert started == 0.0
        s.took(took)


def test_nothing_is_overdue_before_an_attempt_has_finished() -> None:
    s = Stragglers(backup_after_s=1.0)
    s.start(0, 1, 0.0)
    assert s.overdue([(0, 1, "a")], now=1000.0) == []


def test_an_attempt_is_overdue_past_twice_the_median_and_the_floor() -> None:
    # Given finished attempts whose median is 2 s (the floor is 1 s)
    s = Stragglers(backup_after_s=1.0)
    finished(s, 1.0, 3.0, 2.0)
    assert s.durations == [1.0, 2.0, 3.0]
    s.start(0, 1, 10.0)
    running = [(0, 1, "a")]
    # Then it is not overdue at exactly 4 s, and is just after
    assert s.overdue(running, now=14.0) == []
    assert s.overdue(running, now=14.01) == [(0, "a")]


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    s = Stragglers(backup_after_s=0.0)
    finished(s, 1.0, 2.0, 4.0, 100.0)     # median 3 s: the limit is 6 s
    s.start(0, 1, 0.0)
    assert s.overdue([(0, 1, "a")], now=6.0) == []
    assert s.overdue([(0, 1, "a")], now=6.5) == [(0, "a")]


def test_the_floor_holds_when_tasks_are_quick() -> None:
    s = Stragglers(backup_after_s=1.0)
    finished(s, 0.01, 0.02)
    s.start(0, 1, 0.0)
    assert s.overdue([(0, 1, "a")], now=0.9) == []
    assert s.overdue([(0, 1, "a")], now=1.1) == [(0, "a")]


def test_the_slowest_comes_first_and_unknown_attempts_are_never_overdue() -> None:
    s = Stragglers(backup_after_s=0.5)
    finished(s, 0.1)
    s.start(0, 1, 5.0)
    s.start(1, 2, 2.0)
    s.start(2, 1, 9.9)                    # too young
    running = [(0, 1, "a"), (1, 2, "b"), (2, 1, "c"), (3, 1, "d")]   # 3: never started
    assert s.overdue(running, now=10.0) == [(1, "b"), (0, "a")]


def test_a_stopped_attempt_is_forgotten_and_feeds_only_if_told() -> None:
    s = Stragglers(backup_after_s=1.0)
    s.start(0, 1, 3.0)
    assert s.stop(0, 1) == 3.0
    assert s.stop(0, 1) is None, "stopped once"
    assert s.durations == [], "a cancelled loser's time does not count"
    finished(s, 0.5)
    assert s.overdue([(0, 1, "a")], now=100.0) == []


def test_backups_are_counted_with_the_slow_nodes() -> None:
    s = Stragglers(backup_after_s=1.0)
    s.backed_up("a")
    s.backed_up("a")
    s.backed_up("b")
    assert s.backups_started == 3 and s.slow_nodes == {"a", "b"}
