"""pymr.engine.credits.NodeCredits: which node gets the next task, as scripts of events
(nodes added and removed, tasks started and ended, pauses, time passing), no sockets.

``check`` asserts after every step that the incremental books (the heap of nodes with
credit, the running total of free capacity) agree with full scans; the random-script test
drives long interleavings through the same checks.
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymr.engine.credits import NodeCredits

FUZZ_EXAMPLES = int(os.environ.get("PYMR_FUZZ_EXAMPLES", "100"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def check(c: NodeCredits) -> None:
    """The books agree with scans over every node."""
    assert c.room() == sum(c.credit(n) for n in c.slots), "free capacity drifted"
    with_credit = [n for n in c.slots if c.credit(n) > 0]
    # the scan's tie-break: most credit, then served longest ago, then added first
    best = max(with_credit, key=lambda n: (c.credit(n), -c.last_served.get(n, -1)),
               default=None)
    assert c.best() == best, "the heap's pick differs from the scan's"
    for n in c.slots:
        assert 0 <= c.in_flight[n] <= c.cap(n)


def make(nodes: dict[str, int], prefetch: int = 1,
         clock: FakeClock | None = None) -> NodeCredits:
    c = NodeCredits(prefetch=prefetch, clock=clock or FakeClock())
    for node, slots in nodes.items():
        c.add(node, slots)
    check(c)
    return c


def hand_out(c: NodeCredits, count: int) -> list[str]:
    """Give ``count`` tasks to the best node each time, as ``Scheduler.assign`` does."""
    out = []
    for _ in range(count):
        node = c.best()
        if node is None:
            break
        c.served(node)
        c.busy(node, +1)
        check(c)
        out.append(node)
    return out


# ------------------------------------------------------------------ credit


def test_credit_is_slots_plus_prefetch_minus_tasks_held() -> None:
    c = make({"a": 2, "b": 1}, prefetch=1)
    assert (c.credit("a"), c.credit("b"), c.room()) == (4, 2, 6)
    c.busy("a", +3)
    assert c.credit("a") == 1 and c.room() == 3
    c.busy("a", -1)
    assert c.credit("a") == 2
    assert c.credit("nobody") == 0


def test_the_best_node_has_the_most_credit_then_waited_longest_then_came_first() -> None:
    # Given three equal nodes
    c = make({"a": 1, "b": 1, "c": 1}, prefetch=0)
    # Then they are served in the order they were added, once each
    assert hand_out(c, 4) == ["a", "b", "c"]
    # When b and a free their slots (b first), the one served longest ago goes first
    c.busy("b", -1)
    c.busy("a", -1)
    assert hand_out(c, 2) == ["a", "b"]
    # A node with more credit goes before any tie-break
    c.add("d", 3)
    assert hand_out(c, 3) == ["d", "d", "d"]


def test_a_slots_change_moves_the_capacity() -> None:
    c = make({"a": 1}, prefetch=1)
    c.busy("a", +2)
    assert c.best() is None
    c.add("a", 3)   # the node came back with more slots: its held tasks still count
    check(c)
    assert c.credit("a") == 4 and c.best() == "a"


def test_a_removed_node_has_no_credit_and_its_tasks_no_longer_count() -> None:
    c = make({"a": 2, "b": 1}, prefetch=0)
    c.busy("a", +1)
    c.remove("a")
    check(c)
    assert c.credit("a") == 0 and "a" not in c.in_flight and c.room() == 1
    c.busy("a", -1)                  # a late end on the gone node changes nothing
    check(c)
    assert hand_out(c, 3) == ["b"]
    c.remove("zzz")                  # unknown: harmless
    check(c)


# ------------------------------------------------------------------ pauses


def test_a_paused_node_gets_nothing_until_its_pause_ends() -> None:
    # Given two nodes, the larger one paused for a second (its task socket was full)
    clock = FakeClock()
    c = make({"a": 2, "b": 1}, prefetch=0, clock=clock)
    c.pause("a", 1.0)
    check(c)
    # Then it has no credit and its free slots are not counted as room
    assert c.credit("a") == 0 and c.room() == 1
    assert hand_out(c, 3) == ["b"]
    # When the pause ends, it gets work again
    clock.now = 1.0
    check(c)
    assert c.credit("a") == 2 and not c.paused
    assert hand_out(c, 3) == ["a", "a"]


def test_removing_a_paused_node_ends_its_pause() -> None:
    clock = FakeClock()
    c = make({"a": 1, "b": 1}, clock=clock)
    c.pause("a", 5.0)
    c.remove("a")
    check(c)
    assert not c.paused
    c.add("a", 1)
    assert c.credit("a") == 2


# ------------------------------------------------------------------ choices by scan


def test_a_task_that_raised_waits_for_a_node_where_it_has_not_failed() -> None:
    c = make({"a": 1, "b": 1}, prefetch=0)
    c.busy("b", +1)                  # only a has credit
    # The head of the queue failed on a: the next task that may run on a goes first
    assert c.place_avoiding([{"a"}, set(), {"b"}]) == (1, "a")
    # Nothing may run on a: every task waits for b's credit
    assert c.place_avoiding([{"a"}, {"a", "c"}]) is None
    # A task every node has failed runs anywhere rather than never
    assert c.place_avoiding([{"a", "b"}]) == (0, "a")


def test_a_task_that_raised_goes_to_the_fresh_node_with_most_credit_then_longest_wait() -> None:
    c = make({"a": 2, "b": 2, "c": 1}, prefetch=0)
    assert c.place_avoiding([{"c"}]) == (0, "a"), "a tie goes to the node added first"
    c.served("a")
    assert c.place_avoiding([{"c"}]) == (0, "b"), "then to the node served longest ago"
    c.busy("b", +1)
    assert c.place_avoiding([{"c"}]) == (0, "a"), "more credit wins over a longer wait"


def test_a_backup_goes_to_another_node_with_an_idle_slot() -> None:
    c = make({"a": 1, "b": 2, "c": 2}, prefetch=1)
    assert c.backup_target(besides="b") == "c", "most credit first"
    assert c.backup_target(besides="a") == "c", "ties go by name, the last one"
    c.busy("c", +2)                  # c has prefetch room left, but no idle slot
    assert c.credit("c") == 2
    assert c.backup_target(besides="b") == "a"
    c.busy("a", +1)
    assert c.backup_target(besides="b") is None


# ------------------------------------------------------------------ random scripts


def random_script(seed: int, steps: int = 300) -> NodeCredits:
    rng = random.Random(seed)
    clock = FakeClock()
    c = make({f"n{i}": rng.randint(1, 3) for i in range(rng.randint(1, 5))},
             prefetch=rng.randint(0, 2), clock=clock)
    for _ in range(steps):
        event = rng.choice(["give", "give", "end", "end", "add", "remove", "pause", "tick"])
        nodes = sorted(c.slots)
        if event == "give":
            hand_out(c, rng.randint(1, 4))
        elif event == "end":
            held = [n for n in nodes if c.in_flight[n] > 0]
            if held:
                c.busy(rng.choice(held), -1)
        elif event == "add":
            # a node joins, or comes back (empty), or a known node gains slots
            node = f"n{rng.randint(0, 6)}"
            c.add(node, max(rng.randint(1, 3), c.slots.get(node, 0)))
        elif event == "remove" and nodes:
            c.remove(rng.choice(nodes))
        elif event == "pause" and nodes:
            c.pause(rng.choice(nodes), rng.choice([0.5, 1.0, 3.0]))
        elif event == "tick":
            clock.now += rng.random()
        check(c)
    return c


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_scripts_keep_the_books_straight(seed: int) -> None:
    random_script(seed)
