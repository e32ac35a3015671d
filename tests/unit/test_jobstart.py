"""pymr.runtime.jobstart.JobStarter: which nodes take a job (``--builtin-only``), at its start
and when they answer later, and the JobStart each gets; the links are a fake (no sockets),
the acked sends are read back from the control channel."""

from __future__ import annotations

from typing import Any

import pytest

from pymr.config import JobOptions
from pymr.engine.control import ControlChannel
from pymr.engine.partitions import PartitionBook
from pymr.engine.scheduler import Scheduler
from pymr.engine.summary import JobSummary
from pymr.errors import ClusterLost, JobError
from pymr.jobs import JobSpec, builtin_spec
from pymr.jobs.program import load_program
from pymr.runtime.jobstart import JobStarter
from pymr.runtime.links import NodeLink
from pymr.wire import protocol as p

USER_JOB = ("def map(line):\n    yield line, 1\n\n\n"
            "def reduce(key, values):\n    return sum(values)\n")


class FakeLinks:
    """What JobStarter uses of ``NodeLinks``: the links, hellos accepted, forgetting."""

    def __init__(self, **builtin_only: bool) -> None:
        self.links: dict[str, NodeLink] = {}
        for n, only in builtin_only.items():
            self.accept_hello(NodeLink(f"tcp://{n}:1", None), hello(n, only))  # type: ignore[arg-type]
        self.closed: list[str] = []
        self.forgotten: list[str] = []

    def live(self) -> list[NodeLink]:
        return [x for x in self.links.values() if x.alive]

    def accept_hello(self, link: NodeLink, msg: p.HelloReply) -> None:
        link.node_id, link.name, link.slots = msg.node_id, msg.name, msg.slots
        link.shuffle_endpoint, link.builtin_only = msg.shuffle_endpoint, msg.builtin_only
        self.links[msg.node_id] = link

    def forget(self, link: NodeLink) -> None:
        self.forgotten.append(link.node_id)
        self.links.pop(link.node_id, None)

    def close(self, link: NodeLink) -> None:
        self.closed.append(link.endpoint)


def hello(node_id: str, builtin_only: bool = False) -> p.HelloReply:
    return p.HelloReply(seq=1, node_id=node_id, name=f"name-{node_id}", incarnation="i",
                        pymr_version="x", unicode_version="x", slots=2,
                        task_endpoint="", shuffle_endpoint=f"tcp://{node_id}:2",
                        events_endpoint="", builtin_only=builtin_only)


class World:
    def __init__(self, links: FakeLinks, *, user_job: bool) -> None:
        spec = JobSpec.from_source("mine", USER_JOB) if user_job else builtin_spec("wordcount")
        self.links = links
        self.control = ControlChannel(lambda node_id, frames: None)
        self.book = PartitionBook("j1", self.control.next_seq, lambda parts: None)
        self.summary = JobSummary(job_id="j1")
        self.sched: Scheduler | None = None
        self.events: list[str] = []
        self.starter = JobStarter("j1", "token", load_program(spec), JobOptions(), links,  # type: ignore[arg-type]
                                  self.control, self.book, self.summary, lambda: self.sched,
                                  self.events.append)

    def sent(self) -> list[tuple[str, Any]]:
        return [(x.node_id, p.decode(list(x.frames))[0]) for x in self.control.pending.values()]


def test_every_node_gets_the_program_the_partition_map_and_the_token() -> None:
    w = World(FakeLinks(a=False, b=True), user_job=False)   # a built-in runs anywhere
    w.starter.start()
    sent = w.sent()
    assert sorted(n for n, _ in sent) == ["a", "b"]
    assert w.book.partition_map == {0: "a", 1: "a", 2: "b", 3: "b"}
    for _, msg in sent:
        assert isinstance(msg, p.JobStart) and msg.task_token == "token" and msg.epoch == 1
        assert msg.partition_map == w.book.partition_map and msg.job_name == "wordcount"
        assert msg.shuffle_endpoints == {"a": "tcp://a:2", "b": "tcp://b:2"}


def test_a_user_job_leaves_out_nodes_that_run_only_builtins() -> None:
    w = World(FakeLinks(a=False, b=True), user_job=True)
    w.starter.start()
    assert [n for n, _ in w.sent()] == ["a"] and w.links.forgotten == ["b"]
    assert set(w.book.partition_map.values()) == {"a"}
    assert w.events == ["node name-b not used: it runs only built-in jobs (--builtin-only)"]


def test_a_user_job_no_node_accepts_fails() -> None:
    w = World(FakeLinks(a=True, b=True), user_job=True)
    with pytest.raises(JobError, match="refused by name-a, name-b"):
        w.starter.start()
    assert w.sent() == []


def test_no_node_fails_the_job() -> None:
    with pytest.raises(ClusterLost, match="no node is available"):
        World(FakeLinks(), user_job=False).starter.start()


def test_a_late_node_joins_the_map_phase_once_it_acks() -> None:
    w = World(FakeLinks(a=False), user_job=True)
    w.starter.start()
    w.control.pending.clear()
    w.sched = Scheduler({"a": 2})
    w.book.epoch = 3                # partitions moved meanwhile
    w.starter.late_hello(NodeLink("tcp://c:1", None), hello("c"))  # type: ignore[arg-type]
    ((node_id, msg),) = w.sent()
    assert node_id == "c" and isinstance(msg, p.JobStart) and msg.epoch == 3
    assert msg.shuffle_endpoints == {"a": "tcp://a:2", "c": "tcp://c:2"}
    assert w.sched.credit("c") == 0 and w.summary.nodes == []
    w.control.ack(msg.seq, True, "")
    assert w.sched.credit("c") == 4 and w.summary.nodes == ["name-c"]
    assert w.events == ["node name-c joined the job (2 slots)"]


def test_a_late_node_acking_after_the_job_ended_gets_no_tasks() -> None:
    w = World(FakeLinks(a=False), user_job=True)
    w.starter.late_hello(NodeLink("tcp://c:1", None), hello("c"))  # type: ignore[arg-type]
    ((_, msg),) = w.sent()
    w.control.ack(msg.seq, True, "")
    assert w.summary.nodes == [] and w.events == []


def test_a_late_second_link_to_a_live_node_is_closed() -> None:
    w = World(FakeLinks(a=False), user_job=True)
    w.starter.late_hello(NodeLink("tcp://a-again:1", None), hello("a"))  # type: ignore[arg-type]
    assert w.links.closed == ["tcp://a-again:1"] and w.sent() == []


def test_a_late_node_that_runs_only_builtins_is_not_used_for_a_user_job() -> None:
    w = World(FakeLinks(a=False), user_job=True)
    w.starter.late_hello(NodeLink("tcp://c:1", None), hello("c", builtin_only=True))  # type: ignore[arg-type]
    assert w.sent() == [] and w.links.forgotten == ["c"] and "c" not in w.links.links
    assert w.events == ["node name-c not used: it runs only built-in jobs (--builtin-only)"]
