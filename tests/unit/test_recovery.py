"""pymr.runtime.recovery.Recovery: a lost node, output, partition or task, as explicit events
into the real scheduler, partition book, commits and control channel; the links are a fake
(no sockets), the sends are read back from the control channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymr.engine.commits import Commits
from pymr.engine.control import ControlChannel
from pymr.engine.partitions import PartitionBook
from pymr.engine.scheduler import Scheduler
from pymr.engine.summary import JobSummary
from pymr.engine.task_failures import TaskPlaces
from pymr.errors import ClusterLost, JobError, TaskFailed
from pymr.runtime.links import NodeLink
from pymr.runtime.recovery import Recovery
from pymr.wire import protocol as p


class FakeLinks:
    """What Recovery uses of ``NodeLinks``: the links, which are live, marking, closing."""

    def __init__(self, *node_ids: str) -> None:
        self.links = {n: NodeLink(f"tcp://{n}:1", None, node_id=n, name=f"name-{n}",  # type: ignore[arg-type]
                                  slots=1, shuffle_endpoint=f"tcp://{n}:2")
                      for n in node_ids}
        self.closed: list[str] = []

    def live(self) -> list[NodeLink]:
        return [x for x in self.links.values() if x.alive]

    def live_shuffle(self) -> dict[str, str]:
        return {x.node_id: x.shuffle_endpoint for x in self.live()}

    def mark_dead(self, link: NodeLink) -> None:
        link.alive = False

    def close(self, link: NodeLink) -> None:
        self.closed.append(link.node_id)


class FakeStreams:
    def __init__(self) -> None:
        self.restarted: list[int] = []

    def restart(self, part: int) -> None:
        self.restarted.append(part)


@dataclass
class World:
    links: FakeLinks
    control: ControlChannel
    book: PartitionBook
    commits: Commits
    sched: Scheduler
    summary: JobSummary
    streams: FakeStreams
    recovery: Recovery
    events: list[str] = field(default_factory=list)
    notices: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def sent(self) -> list[tuple[str, p.Message]]:
        """Every control message still waiting for its ack: (node id, message)."""
        return [(x.node_id, p.decode(list(x.frames))[0]) for x in self.control.pending.values()]


def world(*node_ids: str, max_attempts: int = 4) -> World:
    links = FakeLinks(*node_ids)
    control = ControlChannel(lambda node_id, frames: None)
    book = PartitionBook("j1", control.next_seq, lambda parts: None)
    book.place({n: 1 for n in node_ids})
    commits = Commits("j1", control.next_seq, book)
    sched = Scheduler({n: 1 for n in node_ids}, max_attempts=max_attempts)
    summary = JobSummary(job_id="j1", job_name="test")
    streams = FakeStreams()
    events: list[str] = []
    notices: list[tuple[str, dict[str, Any]]] = []
    recovery = Recovery("j1", links, control, book, commits, streams,  # type: ignore[arg-type]
                        summary, TaskPlaces([], []), lambda: sched, events.append,
                        events.append, lambda text, **kw: notices.append((text, kw)))
    return World(links, control, book, commits, sched, summary, streams, recovery, events,
                 notices)


def commit_one_task(w: World, node_id: str, output_id: str) -> int:
    """One task run on ``node_id`` and committed as ``output_id`` (counter n=2)."""
    task_id = w.sched.add_task(10)
    w.sched.finish_input()
    (a,) = [x for x in w.sched.assign() if x.task_id == task_id]
    w.sched.on_executed(a.task_id, a.attempt, a.node_id)
    assert w.sched.on_output(output_id, [(a.task_id, a.attempt)], a.node_id).commit
    w.commits.add(output_id, a.node_id, [a.task_id], {0: [1], 1: [1]}, {"n": 2})
    w.summary.counters["n"] = 2
    return task_id


def test_a_lost_node_drops_its_outputs_reruns_its_tasks_and_moves_its_partitions() -> None:
    w = world("a", "b")
    task_id = commit_one_task(w, "a", "o1")
    owned_by_a = [part for part, n in w.book.partition_map.items() if n == "a"]
    assert w.recovery.node_lost(w.links.links["a"], "silent") is None
    assert not w.links.links["a"].alive and w.links.closed == ["a"]
    assert w.summary.nodes_lost == ["name-a"] and w.summary.counters == {}
    assert w.sched.tasks[task_id].committed is None and task_id in w.sched.queue
    sent = w.sent()
    assert any(isinstance(m, p.DropOutput) and m.output_id == "o1" for _, m in sent)
    assert any(isinstance(m, p.JobUpdate) and n == "b" for n, m in sent)
    assert all(n == "b" for n, _ in sent)
    assert w.streams.restarted == owned_by_a
    assert all(w.book.partition_map[part] == "b" for part in owned_by_a)
    assert any("node name-a lost (silent)" in e for e in w.events)


def test_losing_the_last_node_fails_the_job() -> None:
    w = world("a")
    error = w.recovery.node_lost(w.links.links["a"], "silent")
    assert isinstance(error, ClusterLost) and "no live node is left" in str(error)
    assert w.sent() == []


def test_missing_chunks_are_sent_again_by_a_live_mapper() -> None:
    w = world("a", "b")
    commit_one_task(w, "a", "o1")
    w.recovery.chunks_missing(p.ChunksMissing(job_id="j1", node_id="b", output_id="o1",
                                              partition=1, seqs=[0]))
    ((node_id, msg),) = w.sent()
    assert node_id == "a" and isinstance(msg, p.ResendChunks)
    owner = w.links.links[w.book.partition_map[1]]
    assert msg.partition == 1 and msg.seqs == [0] and msg.endpoint == owner.shuffle_endpoint


def test_missing_chunks_of_a_dead_mapper_lose_its_output() -> None:
    w = world("a", "b")
    task_id = commit_one_task(w, "a", "o1")
    w.links.links["a"].alive = False
    w.recovery.chunks_missing(p.ChunksMissing(job_id="j1", node_id="b", output_id="o1",
                                              partition=1, seqs=[0]))
    assert [(n, type(m)) for n, m in w.sent()] == [("b", p.DropOutput)]
    assert "o1" not in w.commits.outputs and task_id in w.sched.queue


def test_an_output_lost_twice_is_lost_once() -> None:
    w = world("a", "b")
    commit_one_task(w, "a", "o1")
    w.recovery.output_lost(p.OutputLost(job_id="j1", node_id="a", output_id="o1"))
    w.recovery.output_lost(p.OutputLost(job_id="j1", node_id="a", output_id="o1"))
    assert len(w.sent()) == 2  # one DropOutput to each live node


def test_a_refused_spill_moves_the_partition_until_no_node_is_left() -> None:
    w = world("a", "b")
    part = next(x for x, n in w.book.partition_map.items() if n == "a")
    lost = p.PartitionLost(job_id="j1", node_id="a", partition=part, reason="disk full",
                           disk=True)
    assert w.recovery.partition_lost(w.links.links["a"], lost) is None
    assert w.book.partition_map[part] == "b" and w.streams.restarted == [part]
    again = p.PartitionLost(job_id="j1", node_id="b", partition=part, reason="disk full",
                            disk=True)
    error = w.recovery.partition_lost(w.links.links["b"], again)
    assert isinstance(error, JobError) and "no other node can take it" in str(error)


def test_a_partition_lost_by_a_node_not_owning_it_is_ignored() -> None:
    w = world("a", "b")
    part = next(x for x, n in w.book.partition_map.items() if n == "a")
    lost = p.PartitionLost(job_id="j1", node_id="b", partition=part, reason="crash")
    assert w.recovery.partition_lost(w.links.links["b"], lost) is None
    assert w.sent() == [] and w.streams.restarted == []


def failed(task_id: int, attempt: int, exc_type: str = "ValueError") -> p.TaskFailedReport:
    return p.TaskFailedReport(job_id="j1", node_id="a", task_id=task_id, attempt=attempt,
                              exc_type=exc_type, message="bad")


def test_a_lost_attempt_runs_again_without_counting_as_a_retry() -> None:
    w = world("a")
    task_id = w.sched.add_task(10)
    (a,) = w.sched.assign()
    assert w.recovery.task_failed(w.links.links["a"], failed(task_id, a.attempt, p.LOST)) \
        is None
    assert w.summary.retries == 0 and task_id in w.sched.queue and w.notices == []


def test_a_task_failing_on_every_attempt_fails_the_job() -> None:
    w = world("a", max_attempts=2)
    task_id = w.sched.add_task(10)
    errors = []
    for _ in range(2):
        (a,) = w.sched.assign()
        errors.append(w.recovery.task_failed(w.links.links["a"], failed(task_id, a.attempt)))
    assert errors[0] is None and isinstance(errors[1], TaskFailed)
    assert w.summary.retries == 2 and len(w.notices) == 2
    assert w.notices[0][1]["failed_on"] == "name-a"


def test_a_silent_node_is_lost_and_its_work_moves() -> None:
    w = world("a", "b")
    assert w.recovery.nodes_silent({}) is None and w.links.closed == []
    assert w.recovery.nodes_silent({"a": "silent for 4.0 s"}) is None
    assert not w.links.links["a"].alive and w.links.links["b"].alive
    assert w.summary.nodes_lost == ["name-a"]
    assert any("node name-a lost (silent for 4.0 s)" in e for e in w.events)


def test_every_node_silent_at_once_fails_the_job_without_moving_anything() -> None:
    w = world("a", "b", "c")
    w.links.links["c"].alive = False
    error = w.recovery.nodes_silent({"a": "silent", "b": "silent"})
    assert isinstance(error, ClusterLost) and "nodes name-a, name-b were lost (silent)" \
        in str(error)
    assert not any(x.alive for x in w.links.links.values())
    assert w.links.closed == ["a", "b"] and w.summary.nodes_lost == ["name-a", "name-b"]
    assert w.sent() == [] and w.streams.restarted == []


def test_the_last_node_silent_fails_the_job_as_a_lost_node() -> None:
    w = world("a")
    error = w.recovery.nodes_silent({"a": "silent"})
    assert isinstance(error, ClusterLost) and "node name-a was lost (silent)" in str(error)
