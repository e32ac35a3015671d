"""pymr.engine.commits.Commits: committed outputs queued and cut into one Commit per reducer node,
refilled after a partition moves, lost with their mapper; scripts of events, no sockets."""

from __future__ import annotations

import itertools

from pymr.engine.commits import COMMIT_BATCH, Commits
from pymr.engine.partitions import PartitionBook
from pymr.wire import protocol as p


def make(slots: dict[str, int]) -> tuple[Commits, PartitionBook]:
    seq = itertools.count(1).__next__
    book = PartitionBook("j1", seq, lambda parts: None)
    book.place(slots)
    return Commits("j1", seq, book), book


def commits(sends: list) -> dict[str, list[p.Commit]]:
    out: dict[str, list[p.Commit]] = {}
    for send in sends:
        assert isinstance(send.msg, p.Commit) and send.then is None
        out.setdefault(send.node_id, []).append(send.msg)
    return out


def test_each_reducer_node_gets_its_partitions_slices_in_one_commit() -> None:
    c, book = make({"a": 2, "b": 1})                    # a:0,1  b:2
    c.add("o1", "a", [0], {0: [1], 1: [2], 2: [3]}, {"n": 1})
    c.add("o2", "b", [1, 2], {0: [4], 1: [5], 2: [6]}, {})
    sent = commits(c.flush(lambda n: True))
    assert sent["a"][0].output_ids == ["o1", "o2"] and sent["a"][0].tasks == [[0], [1, 2]]
    assert sent["a"][0].manifests == [{0: [1], 1: [2]}, {0: [4], 1: [5]}]
    assert sent["b"][0].manifests == [{2: [3]}, {2: [6]}]
    assert {m.epoch for ms in sent.values() for m in ms} == {book.epoch}
    assert c.flush(lambda n: True) == []                # nothing queued twice
    assert c.outputs["o1"].counters == {"n": 1} and c.of_node("b") == ["o2"]


def test_a_partial_manifest_goes_only_to_its_owners() -> None:
    c, _ = make({"a": 1, "b": 1, "c": 1})
    c.add("o1", "a", [0], {1: [2]}, {})
    sent = commits(c.flush(lambda n: True))
    assert list(sent) == ["b"] and sent["b"][0].manifests == [{1: [2]}]


def test_a_dead_reducer_gets_nothing_and_big_turns_are_batched() -> None:
    c, _ = make({"a": 1, "b": 1})
    for i in range(COMMIT_BATCH + 1):
        c.add(f"o{i}", "a", [i], {0: [1], 1: [1]}, {})
    sent = commits(c.flush(lambda n: n != "b"))
    assert list(sent) == ["a"]
    assert [len(m.output_ids) for m in sent["a"]] == [COMMIT_BATCH, 1]


def test_a_moved_partition_is_refilled_from_the_retained_outputs() -> None:
    c, book = make({"a": 1, "b": 1})                    # a:0  b:1
    c.add("o1", "a", [0], {0: [1], 1: [2]}, {})
    c.add("o2", "b", [1], {0: [3]}, {})
    c.flush(lambda n: True)
    book.node_lost("b", {"a": "tcp://a"}, now=1.0, num_tasks=2)
    resends = c.refill([1], lambda n: f"tcp://{n}")
    assert [(s.node_id, s.msg.output_id, s.msg.partition, s.msg.endpoint, s.msg.epoch)
            for s in resends] == [("a", "o1", 1, "tcp://a", 2)]   # o2 has no partition 1
    sent = commits(c.flush(lambda n: n == "a"))
    assert sent["a"][0].output_ids == ["o1"] and sent["a"][0].manifests == [{1: [2]}]


def test_a_lost_output_is_no_longer_committed() -> None:
    c, _ = make({"a": 1})
    c.add("o1", "a", [0], {0: [1]}, {"n": 2})
    lost = c.lose("o1")
    assert lost is not None and lost.counters == {"n": 2}
    assert c.lose("o1") is None and c.outputs == {}
