"""pymr.net.peerstore: the members a machine remembers (second rung of discovery)."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from pymr.net.peerstore import MAX_AGE_S, MAX_ENTRIES, PEERS_FILE, PeerStore, Remembered

FP = "0123456789abcdef"


def member(node_id: str, port: int, seen: float, fp: str = FP, host: str = "10.0.0.1"
           ) -> Remembered:
    return Remembered(node_id=node_id, name=f"n-{node_id}", endpoint=f"tcp://{host}:{port}",
                      fingerprint=fp, last_seen=seen)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_round_trip_private_file_and_no_temp_left(tmp_path: Path) -> None:
    store = PeerStore(tmp_path / "home", clock=Clock())
    a, b = member("aa", 7372, 999_990.0), member("bb", 7373, 999_999.0)
    store.record([a, b])
    assert store.load() == [b, a]                   # most recently seen first
    path = tmp_path / "home" / PEERS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["peers.json", "peers.lock"]
    assert json.loads(path.read_text())["members"][0]["node_id"] == "bb"


def test_entries_age_out(tmp_path: Path) -> None:
    clock = Clock()
    store = PeerStore(tmp_path, clock=clock)
    store.record([member("old", 1, clock.now - MAX_AGE_S - 1), member("new", 2, clock.now)])
    assert [e.node_id for e in store.load()] == ["new"]
    clock.now += MAX_AGE_S + 10
    assert store.load() == []


def test_a_node_at_an_address_replaces_the_one_remembered_there(tmp_path: Path) -> None:
    store = PeerStore(tmp_path, clock=Clock())
    store.record([member("aa", 7372, 999_000.0), member("cc", 7372, 999_000.0, host="10.0.0.3")])
    store.record([member("bb", 7372, 999_500.0)])      # 10.0.0.1:7372 now serves bb
    assert {e.node_id for e in store.load()} == {"bb", "cc"}
    store.record([member("bb", 7999, 999_600.0)])      # bb moved: one entry, the new address
    assert [e.endpoint for e in store.load() if e.node_id == "bb"] == ["tcp://10.0.0.1:7999"]


def test_forget_and_cluster_filter(tmp_path: Path) -> None:
    store = PeerStore(tmp_path, clock=Clock())
    store.record([member("aa", 1, 999_000.0), member("xx", 2, 999_000.0, fp="f" * 16)])
    assert [e.node_id for e in store.members(FP)] == ["aa"]
    store.forget(["aa"])
    assert [e.node_id for e in store.load()] == ["xx"]


def test_bounded(tmp_path: Path) -> None:
    store = PeerStore(tmp_path, clock=Clock())
    store.record([member(f"{i:04x}", 1000 + i, 990_000.0 + i) for i in range(MAX_ENTRIES + 20)])
    kept = store.load()
    assert len(kept) == MAX_ENTRIES and kept[0].node_id == f"{MAX_ENTRIES + 19:04x}"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"members": 5}',
                                  '{"members": [{"node_id": "a", "endpoint": "http://x:1", '
                                  '"last_seen": 1}, {"endpoint": "tcp://h:1"}, 7]}'])
def test_damaged_file_is_ignored_not_fatal(tmp_path: Path, text: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / PEERS_FILE).write_text(text)
    store = PeerStore(tmp_path, clock=Clock())
    with caplog.at_level(logging.WARNING):
        assert store.load() == []
    store.record([member("aa", 1, 999_999.0)])          # and it can be rewritten
    assert [e.node_id for e in store.load()] == ["aa"]


def test_unwritable_home_is_logged_not_raised(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = PeerStore(blocker / "home", clock=Clock())   # a home under a regular file
    with caplog.at_level(logging.WARNING):
        store.record([member("aa", 1, 999_999.0)])
    assert "cannot remember members" in caplog.text
    assert store.load() == []
