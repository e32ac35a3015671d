"""pymr.net.members: what a node names to others in peer exchange."""

from __future__ import annotations

from pymr.net.members import FRESH_S, MAX_PEERS, MemberBook, peer_entries


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def book() -> tuple[MemberBook, Clock]:
    clock = Clock()
    b = MemberBook("self0001", clock=clock)
    b.own_endpoint = "tcp://10.0.0.1:7372"
    return b, clock


def endpoints(answer: list[dict[str, str]]) -> list[str]:
    return sorted(p["endpoint"] for p in answer)


def test_never_itself_never_malformed() -> None:
    b, _ = book()
    assert not b.learn("tcp://10.0.0.1:7372")                      # our own endpoint
    assert not b.learn("tcp://10.0.0.9:7372", node_id="self0001")  # our own id elsewhere
    for bad in ("", "tcp://a b:1", "ipc:///tmp/x", "tcp://h:99999", "http://h:1"):
        assert not b.learn(bad)
    assert b.learn("tcp://10.0.0.2:7372", "n2", "two", source="mdns")
    assert not b.learn("tcp://10.0.0.2:7372", "n2")                # known already
    assert b.changed.is_set()
    assert endpoints(b.answer()) == ["tcp://10.0.0.2:7372"]


def test_joined_nodes_are_named_and_age_unless_they_answer() -> None:
    b, clock = book()
    b.joined({"node_id": "n3", "name": "three", "endpoint": "tcp://10.0.0.3:7372"})
    b.joined({"node_id": "n4", "name": "four", "endpoint": "tcp://10.0.0.4:7372"})
    assert endpoints(b.answer()) == ["tcp://10.0.0.3:7372", "tcp://10.0.0.4:7372"]
    b.answered("tcp://10.0.0.3:7372", "n3", "three", next_check_s=60)
    b.failed("tcp://10.0.0.4:7372", retry_s=5)
    assert endpoints(b.answer()) == ["tcp://10.0.0.3:7372"]        # a failing one is not named
    clock.now += FRESH_S + 1
    assert b.answer() == []                                        # nothing answered lately
    b.answered("tcp://10.0.0.3:7372", "n3", "three", next_check_s=60)
    assert endpoints(b.answer()) == ["tcp://10.0.0.3:7372"]


def test_due_and_backoff_schedule() -> None:
    b, clock = book()
    b.learn("tcp://10.0.0.2:7372", source="seed")
    assert [e.endpoint for e in b.due()] == ["tcp://10.0.0.2:7372"]
    b.failed("tcp://10.0.0.2:7372", retry_s=4)
    assert b.due() == [] and b.next_due() == clock.now + 4
    clock.now += 4
    assert len(b.due()) == 1


def test_dropped_entries_are_not_named_until_someone_names_another_node_there() -> None:
    b, _ = book()
    b.learn("tcp://10.0.0.5:7372", "old", source="memory")
    b.drop("tcp://10.0.0.5:7372", "it holds another cluster's key")
    assert b.answer() == [] and b.due() == []
    b.learn("tcp://10.0.0.5:7372", "new", source="peer")
    assert [e.node_id for e in b.due()] == ["new"]


def test_a_node_that_moved_is_named_once() -> None:
    b, clock = book()
    b.learn("tcp://10.0.0.6:7372", "n6", source="memory")
    b.learn("tcp://10.0.0.7:7372", "n6", source="mdns")
    b.answered("tcp://10.0.0.6:7372", "n6", "six", 60)
    clock.now += 1
    b.answered("tcp://10.0.0.7:7372", "n6", "six", 60)
    assert endpoints(b.answer()) == ["tcp://10.0.0.7:7372"]
    assert [e.endpoint for e in b.members()] == ["tcp://10.0.0.7:7372"]


def test_peer_lists_from_the_wire_are_checked_and_bounded() -> None:
    raw = [{"endpoint": f"tcp://10.1.{i // 250}.{i % 250}:7372", "node_id": "x" * 100}
           for i in range(MAX_PEERS + 50)]
    raw.insert(0, {"endpoint": "tcp://evil host:1"})
    got = peer_entries(raw)
    assert len(got) == MAX_PEERS - 1                 # the bad one is dropped, the rest cut
    assert all(len(p["node_id"]) == 64 and p["name"] == "" for p in got)
    b, _ = book()
    assert b.learn_peers(raw, via="n2") == MAX_PEERS - 1
