"""``placement.place``: embedded cluster or nodes, decided the same way for ``pymr job`` and
``pymr.run``. No socket: the discovery is a fake that records its calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymr.errors import ConfigError, DiscoveryError
from pymr.net.security import ClusterKey
from pymr.runtime.placement import Embedded, Found, OnNodes, PlacementRequest, place
from pymr.runtime.state import open_state

NODE = "tcp://10.0.0.5:7372"


class FakeDiscovery:
    """A ``Discover`` that answers ``found`` (or raises ``error``) and records its calls."""

    def __init__(self, found: Found | None = None, error: Exception | None = None) -> None:
        self.found = found or Found()
        self.error = error
        self.calls: list[tuple[PlacementRequest, list[str], ClusterKey]] = []

    def __call__(self, request: PlacementRequest, seeds: list[str], key: ClusterKey) -> Found:
        self.calls.append((request, seeds, key))
        if self.error is not None:
            raise self.error
        return self.found


@pytest.fixture
def member(tmp_path: Path) -> tuple[str, ClusterKey]:
    """A pymr home that holds a cluster key."""
    key = ClusterKey.generate()
    open_state(str(tmp_path / "member")).save_key(key)
    return str(tmp_path / "member"), key


def test_local_wins_over_nodes_and_skips_discovery(member: tuple[str, ClusterKey]) -> None:
    # Given --local 3 and --nodes on a member,
    home, _ = member
    discover = FakeDiscovery(Found([NODE]))
    # when the job is placed,
    placement = place(PlacementRequest(local=3, slots=2, nodes="10.0.0.5", home=home),
                      discover)
    # then it runs on 3 embedded nodes, and no discovery ran.
    assert placement == Embedded(nodes=3, slots=2)
    assert discover.calls == []


def test_no_key_runs_embedded_at_once(tmp_path: Path) -> None:
    discover = FakeDiscovery(Found([NODE]))
    placement = place(PlacementRequest(home=str(tmp_path / "fresh")), discover)
    assert placement == Embedded(nodes=1, slots=0)
    assert discover.calls == []


def test_a_member_uses_the_nodes_discovery_found(member: tuple[str, ClusterKey]) -> None:
    home, key = member
    discover = FakeDiscovery(Found([NODE]))
    request = PlacementRequest(home=home, discover_s=2.0, min_nodes=1)
    placement = place(request, discover)
    assert placement == OnNodes([NODE], key, watch=True)   # found by browsing: keep browsing
    assert discover.calls == [(request, [], key)]


def test_a_member_falls_back_to_embedded_when_nothing_answers(
        member: tuple[str, ClusterKey]) -> None:
    home, _ = member
    said: list[str] = []
    placement = place(PlacementRequest(home=home, slots=2),
                      FakeDiscovery(Found(why_none="no node found (mDNS: 0)")), said.append)
    assert placement == Embedded(nodes=1, slots=2, fallback=True)
    assert said == ["no node found (mDNS: 0); running on the embedded local cluster "
                    "(this machine only)"]


def test_discovery_that_cannot_run_falls_back(member: tuple[str, ClusterKey]) -> None:
    home, _ = member
    said: list[str] = []
    placement = place(PlacementRequest(home=home),
                      FakeDiscovery(error=DiscoveryError("no usable interface")), said.append)
    assert placement == Embedded(nodes=1, slots=0, fallback=True)
    assert said == ["no usable interface; running on the embedded local cluster"]


def test_nodes_are_seeds_of_the_discovery(member: tuple[str, ClusterKey]) -> None:
    home, key = member
    discover = FakeDiscovery(Found([NODE, "tcp://10.0.0.6:7372"]))
    placement = place(PlacementRequest(nodes="10.0.0.5", home=home), discover)
    assert placement == OnNodes([NODE, "tcp://10.0.0.6:7372"], key, watch=False)
    assert discover.calls[0][1] == [NODE]


def test_nodes_that_do_not_answer_fail_the_job(member: tuple[str, ClusterKey]) -> None:
    home, _ = member
    with pytest.raises(DiscoveryError, match="no node found"):
        place(PlacementRequest(nodes="10.0.0.5", home=home),
              FakeDiscovery(Found(why_none="no node found (--nodes: 0 of 1)")))


def test_nodes_need_the_cluster_key(tmp_path: Path) -> None:
    discover = FakeDiscovery(Found([NODE]))
    with pytest.raises(ConfigError, match="pymr key import"):
        place(PlacementRequest(nodes="10.0.0.5", home=str(tmp_path / "nokey")), discover)
    assert discover.calls == []


def test_without_discovery_nodes_are_used_as_given(member: tuple[str, ClusterKey]) -> None:
    # pymr.run: no discovery function; nodes as given, otherwise embedded even on a member.
    home, key = member
    assert place(PlacementRequest(nodes=["10.0.0.5"], home=home)) == OnNodes([NODE], key)
    assert place(PlacementRequest(home=home)) == Embedded(nodes=1, slots=0)
    assert place(PlacementRequest(local=2, nodes="10.0.0.5", home=home)) == \
        Embedded(nodes=2, slots=0)


def test_bad_nodes_are_a_usage_error_before_the_key_is_read(tmp_path: Path) -> None:
    from pymr.errors import UsageError

    with pytest.raises(UsageError):
        place(PlacementRequest(nodes="localhost:notaport", home=str(tmp_path / "nokey")))
