"""pymr.runtime.links.NodeLinks: hellos accepted, refused or duplicated, endpoints joined once,
links forgotten; real sockets that connect to nothing (a connect does not wait for a peer),
so no node runs."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest

from pymr._version import __version__
from pymr.config import UNICODE_VERSION
from pymr.engine.liveness import Liveness
from pymr.errors import ClusterLost, JobError
from pymr.net.security import ClusterKey
from pymr.net.transport import LogOnce
from pymr.runtime.links import NodeLinks
from pymr.wire import protocol as p


@pytest.fixture
def links() -> Iterator[tuple[NodeLinks, list[str]]]:
    reported: list[str] = []
    nl = NodeLinks(ClusterKey.generate(), "job1", ["tcp://127.0.0.1:1"], local_reads=True,
                   liveness=Liveness(4.0, 0.0), next_seq=itertools.count(1).__next__,
                   report=reported.append, drop=LogOnce(logging.getLogger("test")))
    nl.open()
    try:
        yield nl, reported
    finally:
        nl.close_all()


def reply(node_id: str, version: str = __version__) -> p.HelloReply:
    return p.HelloReply(seq=1, node_id=node_id, name=f"name-{node_id}", incarnation="i",
                        pymr_version=version, unicode_version=UNICODE_VERSION, slots=2,
                        task_endpoint="tcp://127.0.0.1:2", shuffle_endpoint="tcp://s:3",
                        events_endpoint="tcp://127.0.0.1:4")


def test_an_accepted_hello_makes_a_live_watched_link(links) -> None:
    nl, _ = links
    link = nl.connect("tcp://127.0.0.1:1")
    nl.accept_hello(link, reply("n1"))
    assert nl.links == {"n1": link} and link.slots == 2 and link.local
    assert link.task is not None and link.events is not None
    assert set(nl.by_socket) == {link.control, link.events}
    assert nl.live_shuffle() == {"n1": "tcp://s:3"}
    nl.mark_dead(link)
    assert nl.live() == [] and nl.live_shuffle() == {}
    nl.forget(link)
    assert nl.links == {} and nl.by_socket == {}


def test_a_second_node_with_a_known_id_is_closed_and_reported(links) -> None:
    nl, reported = links
    first = nl.connect("tcp://127.0.0.1:1")
    nl.accept_hello(first, reply("n1"))
    copy = nl.connect("tcp://127.0.0.1:5")
    nl.accept_hello(copy, reply("n1"))
    assert nl.links == {"n1": first} and copy.control not in nl.by_socket
    assert reported == ["two nodes answered with the id n1 (a copied identity?); using only "
                        "tcp://127.0.0.1:1"]


def test_a_node_of_another_version_is_refused(links) -> None:
    nl, _ = links
    link = nl.connect("tcp://127.0.0.1:1")
    with pytest.raises(JobError, match="install the same version everywhere"):
        nl.accept_hello(link, reply("n1", version="0.0.1"))
    assert nl.links == {}


def test_discovered_endpoints_are_helloed_once(links) -> None:
    nl, _ = links
    nl.connect_new(["tcp://127.0.0.1:1", "tcp://127.0.0.1:7"])
    nl.connect_new(["tcp://127.0.0.1:7"])
    assert nl.endpoints == ["tcp://127.0.0.1:1", "tcp://127.0.0.1:7"]
    assert [x.endpoint for x in nl.by_socket.values()] == ["tcp://127.0.0.1:7"]


def test_no_node_answering_fails_the_job(links) -> None:
    nl, _ = links
    with pytest.raises(ClusterLost, match="no node answered"):
        nl.connect_all(0.0)
