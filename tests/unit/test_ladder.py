"""pymr.net.ladder: the discovery ladder with a scripted network (no sockets, no mDNS)."""

from __future__ import annotations

import time
from pathlib import Path

from pymr.net.discovery import BrowseResult, NodeRecord
from pymr.net.ladder import LadderOptions, climb
from pymr.net.peerstore import PeerStore, Remembered
from pymr.net.security import ClusterKey
from pymr.wire.protocol import PROTOCOL_VERSION

from .fake_members import FakeNet, FakeNode

KEY = ClusterKey.generate()
A, B, C, D = (f"tcp://10.0.0.{i}:7372" for i in (1, 2, 3, 4))


def remembered(node_id: str, endpoint: str, fp: str = KEY.fingerprint) -> Remembered:
    return Remembered(node_id=node_id, name=f"n-{node_id}", endpoint=endpoint, fingerprint=fp,
                      last_seen=time.time() - 60)


def record(node_id: str, endpoint: str) -> NodeRecord:
    host, port = endpoint.removeprefix("tcp://").split(":")
    return NodeRecord(instance=f"n-{node_id}", name=f"n-{node_id}", node_id=node_id,
                      incarnation="inc1", protocol=PROTOCOL_VERSION, slots=1,
                      control_port=int(port), addresses=(host,), python="3", unicode="",
                      fingerprint=KEY.fingerprint)


def no_mdns(**kw: object) -> LadderOptions:
    return LadderOptions(interfaces=None, **kw)  # type: ignore[arg-type]


def test_one_seed_finds_the_whole_cluster_by_peer_exchange(tmp_path: Path) -> None:
    # Given A names B, B names C, and C names A and B (a chain, not a full list),
    net = FakeNet({A: FakeNode("a", "alpha", [B]), B: FakeNode("b", "beta", [C]),
                   C: FakeNode("c", "gamma", [A, B])})
    store = PeerStore(tmp_path)
    # when a client starts from A alone,
    res = climb(KEY, no_mdns(seeds=[A], use_memory=False), store, probe_fn=net.probe)
    # then it finds all three, credits each to its rung, dials each address once,
    assert [(f.status.node_id, f.how) for f in res.members] == [
        ("a", "--nodes"), ("b", "peer exchange via alpha"), ("c", "peer exchange via beta")]
    assert sorted(net.dialled()) == [A, B, C]
    assert all(call["want_peers"] and call["fail_fast"] for call in net.calls)
    assert "--nodes: 1 of 1 answered" in res.summary()
    assert "peer exchange: 2 named, 2 answered" in res.summary()
    # and remembers them for the next time.
    assert {m.node_id for m in store.members(KEY.fingerprint)} == {"a", "b", "c"}


def test_remembered_members_are_dialled_and_refreshed(tmp_path: Path) -> None:
    store = PeerStore(tmp_path)
    store.record([remembered("a", A), remembered("b", B), remembered("x", D, fp="f" * 16)])
    before = {m.node_id: m.last_seen for m in store.load()}
    net = FakeNet({A: FakeNode("a", "alpha"), B: "connect"})
    res = climb(KEY, no_mdns(), store, probe_fn=net.probe)
    assert [(f.status.node_id, f.rung) for f in res.members] == [("a", "memory")]
    assert [f.endpoint for f in res.failed] == [B]
    assert D not in net.dialled()                    # another cluster's entry is not dialled
    after = {m.node_id: m.last_seen for m in store.load()}
    assert after["a"] > before["a"] and after["b"] == before["b"]   # b kept: may be away
    assert "remembered: 1 of 2 answered" in res.summary()


def test_remembered_address_of_another_cluster_is_ignored_with_reason(tmp_path: Path) -> None:
    store = PeerStore(tmp_path)
    store.record([remembered("a", A), remembered("b", B)])
    net = FakeNet({A: FakeNode("a", "alpha"), B: "key"})
    res = climb(KEY, no_mdns(), store, probe_fn=net.probe)
    assert [f.status.node_id for f in res.members] == ["a"]
    assert res.ignored == [("remembered n-b (10.0.0.2:7372)",
                            "it now answers with another cluster's key; forgotten")]
    assert {m.node_id for m in store.load()} == {"a"}


def test_remembered_address_answering_as_another_node_drops_the_old_entry(
        tmp_path: Path) -> None:
    store = PeerStore(tmp_path)
    store.record([remembered("b", B)])
    net = FakeNet({B: FakeNode("z", "zeta")})
    res = climb(KEY, no_mdns(), store, probe_fn=net.probe)
    assert [(f.status.node_id, f.rung) for f in res.members] == [("z", "memory")]
    assert len(res.ignored) == 1 and "now answers as node zeta (z); forgotten" in res.ignored[0][1]
    assert [m.node_id for m in store.load()] == ["z"]


def test_mdns_is_credited_first_and_not_dialled_twice(tmp_path: Path) -> None:
    store = PeerStore(tmp_path)
    store.record([remembered("a", A)])
    heard = BrowseResult(nodes=[record("a", A), record("c", C)], interfaces=["10.0.0.9"],
                         elapsed_s=1.5)
    net = FakeNet({A: FakeNode("a", "alpha"), C: FakeNode("c", "gamma")})
    res = climb(KEY, no_mdns(), store, heard=heard, probe_fn=net.probe)
    assert sorted((f.status.node_id, f.rung) for f in res.members) == [("a", "mdns"),
                                                                       ("c", "mdns")]
    assert sorted(net.dialled()) == [A, C]
    assert res.summary().startswith("mDNS: 2 nodes in 1.5 s on 10.0.0.9")


def test_copied_identity_and_other_versions(tmp_path: Path) -> None:
    net = FakeNet({A: FakeNode("a", "alpha", [B, C]), B: FakeNode("a", "alpha-copy",
                                                                    incarnation="inc2"),
                   C: FakeNode("c", "gamma", pymr_version="0.0.1")})
    res = climb(KEY, no_mdns(seeds=[A], use_memory=False), None, probe_fn=net.probe)
    assert [f.status.node_id for f in res.members] == ["a"]
    assert len(res.warnings) == 1 and "two live nodes share the id a" in res.warnings[0]
    refused = [f for f in res.failed if f.status.failure == "version"]
    assert [f.endpoint for f in refused] == [C]


def test_nothing_found_says_what_was_tried(tmp_path: Path) -> None:
    from pymr.cli.discovery import no_node_text

    store = PeerStore(tmp_path)
    store.record([remembered("a", A)])
    res = climb(KEY, no_mdns(seeds=[B]), store, probe_fn=FakeNet().probe)
    assert res.members == []
    text = no_node_text(res)
    assert text.startswith("no node found (")
    for part in ("remembered: 0 of 1 answered", "peer exchange: nobody to ask",
                 "--nodes: 0 of 1 answered", "pymr doctor", "--nodes HOST"):
        assert part in text, part
