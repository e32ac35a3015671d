"""pymr.engine.partitions.PartitionBook: the master's partition placement and moves, as scripts
of events (nodes lost, partitions lost, disks refusing, partitions complete, time
passing) and acks, with explicit times and no sockets."""

from __future__ import annotations

import itertools

from pymr.engine.partitions import REDUCE_LAG_MIN_S, Move, PartitionBook
from pymr.wire import protocol as p

LIVE3 = {"a": "tcp://a:1", "b": "tcp://b:1", "c": "tcp://c:1"}


class Script:
    """A book with a sequence counter and a record of the refills it asked for."""

    def __init__(self, slots: dict[str, int], num_partitions: int = 0) -> None:
        self.refills: list[list[int]] = []
        self.book = PartitionBook("j1", itertools.count(1).__next__, self.refills.append)
        self.book.place(slots, num_partitions)

    def ack_all(self, move: Move) -> None:
        for send in move.sends:
            assert send.then is not None
            send.then()

    def complete(self, part: int, now: float, records: int = 1) -> bool:
        owner = self.book.partition_map[part]
        return self.book.complete(owner, p.PartitionComplete(
            job_id="j1", node_id=owner, partition=part, records=records, chunks=1), now)


def updates(move: Move) -> list[tuple[str, p.JobUpdate]]:
    out = []
    for send in move.sends:
        assert isinstance(send.msg, p.JobUpdate)
        out.append((send.node_id, send.msg))
    return out


def test_partitions_are_dealt_round_robin_by_slots_in_node_order() -> None:
    s = Script({"b": 1, "a": 2, "c": 0})
    assert s.book.partition_map == {0: "a", 1: "a", 2: "b", 3: "c"}  # a node has >= 1 slot
    assert s.book.by_node() == {"a": [0, 1], "b": [2], "c": [3]}
    s = Script({"a": 2, "b": 1}, num_partitions=7)
    assert s.book.partition_map == {0: "a", 1: "a", 2: "b", 3: "a", 4: "a", 5: "b", 6: "a"}
    assert s.book.epoch == 1 and not s.book.updating


def test_a_lost_nodes_partitions_move_to_live_nodes_in_a_new_epoch() -> None:
    s = Script({"a": 1, "b": 2, "c": 1})                  # a:0  b:1,2  c:3
    live = {"a": LIVE3["a"], "c": LIVE3["c"]}
    move = s.book.node_lost("b", live, now=5.0, num_tasks=-1)
    assert move is not None
    assert move.parts == [1, 2] and move.epoch == s.book.epoch == 2
    assert s.book.partition_map == {0: "a", 1: "a", 2: "c", 3: "c"}  # least loaded first
    assert s.book.by_node() == {"a": [0, 1], "c": [2, 3]}
    sent = updates(move)
    assert [n for n, _ in sent] == ["a", "c"]               # every live node, not the lost
    for _, msg in sent:
        assert msg.partition_map == s.book.partition_map and msg.epoch == 2
        assert msg.shuffle_endpoints == live and msg.num_tasks == -1
    assert len({msg.seq for _, msg in sent}) == 2
    assert s.book.moved == {1: (2, 5.0), 2: (2, 5.0)}


def test_a_node_owning_nothing_moves_nothing() -> None:
    s = Script({"a": 1, "b": 1}, num_partitions=1)
    assert s.book.node_lost("b", {"a": "x"}, now=1.0, num_tasks=3) is None
    assert s.book.epoch == 1


def test_the_move_is_settled_and_refilled_once_every_live_node_acked() -> None:
    s = Script({"a": 1, "b": 1, "c": 1})
    move = s.book.node_lost("c", {"a": "x", "b": "y"}, now=1.0, num_tasks=9)
    assert move is not None and s.book.updating == 1
    first, second = move.sends
    assert first.then is not None and second.then is not None
    first.then()
    assert s.book.updating == 1 and s.refills == []
    second.then()
    assert s.book.updating == 0 and s.refills == [[2]]


def test_a_completed_partition_that_moves_is_no_longer_done() -> None:
    s = Script({"a": 1, "b": 1})
    assert s.complete(0, now=1.0) and s.complete(1, now=1.0) and s.book.all_done()
    s.book.partition_lost(1, {"a": "x", "b": "y"}, now=2.0, num_tasks=4)
    assert 1 not in s.book.done and not s.book.all_done()


def test_only_the_owner_completes_a_partition() -> None:
    s = Script({"a": 1, "b": 1})
    msg = p.PartitionComplete(job_id="j1", node_id="a", partition=0, records=1, chunks=1)
    assert not s.book.complete("b", msg, now=1.0)          # a former owner, say
    assert s.book.done == {}
    assert s.book.complete("a", msg, now=1.0) and s.book.done_at == {0: 1.0}
    s.book.complete("a", msg, now=3.0)
    assert s.book.done_at == {0: 1.0}                       # the first completion counts


def test_a_refused_partition_moves_to_a_node_that_has_not_refused_it() -> None:
    s = Script({"a": 1, "b": 1, "c": 1})                  # a:0  b:1  c:2
    move = s.book.disk_refused(0, "a", LIVE3, now=1.0, num_tasks=-1)
    assert move is not None and s.book.partition_map[0] == "b"  # b, c equally loaded
    assert [n for n, _ in updates(move)] == ["a", "b", "c"]    # a still runs the job
    s.ack_all(move)
    move = s.book.disk_refused(0, "b", LIVE3, now=2.0, num_tasks=-1)
    assert move is not None and s.book.partition_map[0] == "c"
    s.ack_all(move)
    assert s.book.disk_refused(0, "c", LIVE3, now=3.0, num_tasks=-1) is None  # none left
    assert s.book.disk_failed == {0: {"a", "b", "c"}}
    assert s.book.epoch == 3 and s.book.partition_map[0] == "c"


def test_chunks_sent_under_an_older_epoch_are_sent_again() -> None:
    s = Script({"a": 1, "b": 1, "c": 1})
    assert s.book.stale_parts([0, 1, 2], sent_epoch=1) == []   # nothing moved yet
    move = s.book.node_lost("c", {"a": "x", "b": "y"}, now=1.0, num_tasks=-1)
    assert move is not None
    assert s.book.stale_parts([0, 1, 2], sent_epoch=1) == []   # the refill covers it
    s.ack_all(move)
    assert s.book.stale_parts([0, 1, 2], sent_epoch=1) == [2]
    assert s.book.stale_parts([0, 1, 2], sent_epoch=2) == []
    assert s.book.stale_parts([0, 1, 2], sent_epoch=0) == []   # epoch not known


def lagging_script() -> Script:
    """Four partitions on a, b (a:0,2  b:1,3); a finished both by 1 s and b one of its."""
    s = Script({"a": 1, "b": 1}, num_partitions=4)
    for part in (0, 2, 1):
        assert s.complete(part, now=1.0)
    return s


def test_a_lagging_reducer_on_a_slow_node_is_backed_up_once() -> None:
    s = lagging_script()
    live = {"a": "x", "b": "y"}
    limit = max(REDUCE_LAG_MIN_S, 4.0 * 1.0)               # median took 1 s
    assert s.book.back_up_lagging(0.0, limit - 0.1, {"b"}, live, 8) is None  # not yet
    lag = s.book.back_up_lagging(0.0, limit, {"b"}, live, 8)
    assert lag is not None
    assert lag.move.parts == [3] and lag.slow == {"b"} and lag.fast == ["a"]
    assert s.book.partition_map[3] == "a" and s.book.epoch == 2
    assert [n for n, _ in updates(lag.move)] == ["a", "b"]
    assert s.book.back_up_lagging(0.0, limit + 1, {"b"}, live, 8) is None  # updating
    s.ack_all(lag.move)
    assert s.refills == [[3]]
    s.book.partition_map[3] = "b"                          # even back on the slow node
    assert s.book.back_up_lagging(0.0, 100.0, {"b", "a"}, live, 8) is None  # once only


def test_no_backup_without_suspects_before_most_are_done_or_without_a_fast_node() -> None:
    s = lagging_script()
    assert s.book.back_up_lagging(0.0, 50.0, set(), {"a": "x", "b": "y"}, 8) is None
    assert s.book.back_up_lagging(0.0, 50.0, {"b"}, {"b": "y"}, 8) is None  # no fast node
    s = Script({"a": 1, "b": 1}, num_partitions=4)
    s.complete(0, now=1.0)                                 # one of four: too early
    assert s.book.back_up_lagging(0.0, 50.0, {"b"}, {"a": "x", "b": "y"}, 8) is None
    assert s.book.epoch == 1 and not s.book.lag_moved


def test_a_moved_partition_is_timed_from_its_move() -> None:
    s = lagging_script()
    s.book.moved[3] = (1, 10.0)                            # rebuilt on b from 10 s on
    live = {"a": "x", "b": "y"}
    assert s.book.back_up_lagging(0.0, 13.9, {"b"}, live, 8) is None
    assert s.book.back_up_lagging(0.0, 14.0, {"b"}, live, 8) is not None
