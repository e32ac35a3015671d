"""pymr.runtime.mapdispatch.MapDispatch: the master's map phase driven by explicit steps and
reports, with the real scheduler, partition book, commits and control channel; the links
are a fake (no sockets), task PUSHes and unacked sends are recorded, acked sends are read
back from the control channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymr.config import JobOptions
from pymr.engine.commits import Commits
from pymr.engine.control import ControlChannel
from pymr.engine.inputs import InputFile
from pymr.engine.partitions import PartitionBook
from pymr.engine.summary import JobSummary
from pymr.jobs import builtin_spec
from pymr.jobs.program import load_program
from pymr.runtime.links import NodeLink
from pymr.runtime.mapdispatch import MapDispatch
from pymr.wire import protocol as p

LINE = b"some words on a line\n"   # 21 bytes: a 64-byte split holds three lines


class FakeLinks:
    """What MapDispatch uses of ``NodeLinks``: the links, which are live, unacked sends."""

    def __init__(self, node_ids: list[str], local: bool) -> None:
        self.links = {n: NodeLink(f"tcp://{n}:1", None, node_id=n, name=f"name-{n}",  # type: ignore[arg-type]
                                  slots=1, local=local, shuffle_endpoint=f"tcp://{n}:2")
                      for n in node_ids}
        self.sent: list[tuple[str, p.Message]] = []

    def live(self) -> list[NodeLink]:
        return [x for x in self.links.values() if x.alive]

    def send_on(self, link: NodeLink, frames: list[Any]) -> bool:
        self.sent.append((link.node_id, p.decode(frames)[0]))
        return True


@dataclass
class World:
    links: FakeLinks
    control: ControlChannel
    book: PartitionBook
    commits: Commits
    summary: JobSummary
    dispatch: MapDispatch
    pushed: list[tuple[str, p.MapTask, list[Any]]]
    events: list[str] = field(default_factory=list)
    full: set[str] = field(default_factory=set)     # nodes whose task PUSH is full

    def acked(self) -> list[tuple[str, p.Message]]:
        """Every control message still waiting for its ack: (node id, message)."""
        return [(x.node_id, p.decode(list(x.frames))[0]) for x in self.control.pending.values()]

    def acked_of(self, cls: type[p.Message]) -> list[tuple[str, Any]]:
        return [(n, m) for n, m in self.acked() if isinstance(m, cls)]


def world(tmp_path: Path, lines: int, *, nodes: tuple[str, ...] = ("a",),
          local: bool = True) -> World:
    """A job over one file of ``lines`` lines, cut into 64-byte splits (three lines each),
    on ``nodes`` of one slot each, no prefetch: a node holds one task at a time."""
    path = tmp_path / "in.txt"
    path.write_bytes(LINE * lines)
    inputs = [InputFile(str(path), "in.txt", "plain", path.stat().st_size, 0)]
    links = FakeLinks(list(nodes), local)
    control = ControlChannel(lambda node_id, frames: None)
    book = PartitionBook("j1", control.next_seq, lambda parts: None)
    book.place({n: 1 for n in nodes})
    commits = Commits("j1", control.next_seq, book)
    summary = JobSummary(job_id="j1", job_name="wordcount")
    pushed: list[tuple[str, p.MapTask, list[Any]]] = []
    events: list[str] = []
    full: set[str] = set()

    def push(link: NodeLink, frames: list[Any]) -> bool:
        if link.node_id in full:
            return False
        msg, payload = p.decode(frames)
        assert isinstance(msg, p.MapTask)
        pushed.append((link.node_id, msg, payload))
        return True

    opts = JobOptions(split_size=64, max_token=16, prefetch=0)
    dispatch = MapDispatch("j1", "token", load_program(builtin_spec("wordcount")), inputs,
                           opts, links, control, book, commits, summary,  # type: ignore[arg-type]
                           events.append, push=push)
    dispatch.start({n: 1 for n in nodes})
    return World(links, control, book, commits, summary, dispatch, pushed, events, full)


def output(task_id: int, attempt: int, output_id: str, *, epoch: int = 1,
           parts: tuple[int, ...] = (0,)) -> p.OutputDone:
    return p.OutputDone(job_id="j1", node_id="x", output_id=output_id,
                        tasks=[[task_id, attempt]], manifest={part: [1, 1, 0] for part in parts},
                        counters={"words": 3}, epoch=epoch)


def test_a_local_node_is_sent_each_split_by_path_as_its_credit_allows(tmp_path: Path) -> None:
    w = world(tmp_path, lines=6)
    w.dispatch.step()
    ((node_id, task, payload),) = w.pushed
    assert node_id == "a" and payload == [] and task.token == "token"
    assert (task.task_id, task.attempt, task.path, task.offset, task.length) == \
        (0, 1, str(tmp_path / "in.txt"), 0, 63)
    assert w.acked() == []          # the input is not read to its end yet
    w.dispatch.executed("a", p.TaskExecuted(job_id="j1", node_id="a", task_id=0,
                                            attempt=1, nbytes=63))
    w.dispatch.step()
    assert [t.task_id for _, t, _ in w.pushed] == [0, 1] and w.pushed[1][1].offset == 63


def test_once_the_input_is_read_every_node_is_told_the_number_of_tasks(tmp_path: Path) -> None:
    w = world(tmp_path, lines=3, nodes=("a", "b"))
    w.dispatch.step()
    assert sorted(n for n, _ in w.acked_of(p.InputComplete)) == ["a", "b"]
    assert all(m.num_tasks == 1 for _, m in w.acked_of(p.InputComplete))
    assert (w.summary.tasks, w.summary.input_bytes) == (1, 63)


def test_a_remote_node_gets_the_split_bytes_with_the_task(tmp_path: Path) -> None:
    w = world(tmp_path, lines=3, local=False)
    w.dispatch.step()
    ((_, task, payload),) = w.pushed
    assert task.path == "" and bytes(payload[0]) == LINE * 3


def test_a_full_task_socket_hands_the_task_back_and_pauses_the_node(tmp_path: Path) -> None:
    w = world(tmp_path, lines=3)
    sched = w.dispatch.sched
    assert sched is not None
    now = [0.0]
    sched.clock = lambda: now[0]
    w.full.add("a")
    w.dispatch.step()
    assert w.pushed == [] and sched.queue == [0] and sched.credit("a") == 0
    assert sched.tasks[0].failures == 0         # a lost send is not an attempt
    w.full.clear()
    w.dispatch.step()
    assert w.pushed == []                       # paused for a second
    now[0] = 1.0
    w.dispatch.step()
    assert [(n, t.task_id) for n, t, _ in w.pushed] == [("a", 0)]


def test_a_committed_output_counts_and_a_second_output_of_its_task_is_dropped(
        tmp_path: Path) -> None:
    w = world(tmp_path, lines=3, nodes=("a", "b"))
    w.dispatch.step()
    a = w.links.links["a"]
    w.dispatch.executed("a", p.TaskExecuted(job_id="j1", node_id="a", task_id=0,
                                            attempt=1, nbytes=63))
    w.dispatch.on_output(a, output(0, 1, "o1"))
    assert "o1" in w.commits.outputs and w.summary.counters == {"words": 3}
    assert w.acked_of(p.DropOutput) == []
    w.dispatch.on_output(a, output(0, 1, "o2"))
    drops = w.acked_of(p.DropOutput)
    assert sorted(n for n, _ in drops) == ["a", "b"] and drops[0][1].output_id == "o2"
    assert w.summary.counters == {"words": 3} and "o2" not in w.commits.outputs


def test_the_attempt_that_loses_to_a_backup_is_cancelled(tmp_path: Path) -> None:
    w = world(tmp_path, lines=6, nodes=("a", "b"))
    sched = w.dispatch.sched
    assert sched is not None
    now = [0.0]
    sched.clock = lambda: now[0]
    w.dispatch.step()               # task 0 -> a, task 1 -> b
    assert sorted((n, t.task_id) for n, t, _ in w.pushed) == [("a", 0), ("b", 1)]
    first = next(n for n, t, _ in w.pushed if t.task_id == 0)
    slow = next(n for n, t, _ in w.pushed if t.task_id == 1)
    now[0] = 1.0
    w.dispatch.executed(first, p.TaskExecuted(job_id="j1", node_id=first, task_id=0,
                                              attempt=1, nbytes=63))
    w.dispatch.on_output(w.links.links[first], output(0, 1, "o0"))
    w.dispatch.step()               # the input ends: InputComplete, no backup yet
    assert len(w.pushed) == 2 and w.acked_of(p.InputComplete)
    now[0] = 10.0                   # task 1 runs 10 s, the median task took 1 s
    w.dispatch.step()
    (backup,) = w.pushed[2:]
    assert backup[0] == first and backup[1].task_id == 1 and backup[1].alone
    assert w.events == [f"task 1 is slow; backup attempt on name-{first}"]
    w.dispatch.executed(slow, p.TaskExecuted(job_id="j1", node_id=slow, task_id=1,
                                             attempt=1, nbytes=63))
    w.dispatch.on_output(w.links.links[slow], output(1, 1, "o1"))
    assert w.links.sent == [(first, p.CancelTask(job_id="j1", task_id=1, attempt=2))]
    assert w.summary.cancelled == 1 and sched.all_committed()
    assert w.events[-1] == f"task 1 done by another attempt; attempt 2 on name-{first} cancelled"


def test_executed_tasks_not_yet_committed_are_flushed_once_per_commit_count(
        tmp_path: Path) -> None:
    w = world(tmp_path, lines=3, nodes=("a", "b"))
    w.dispatch.step()
    (node_id, task, _), = w.pushed
    w.dispatch.executed(node_id, p.TaskExecuted(job_id="j1", node_id=node_id, task_id=0,
                                                attempt=1, nbytes=63))
    w.dispatch.step()
    w.dispatch.step()
    assert sorted(n for n, _ in w.acked_of(p.Flush)) == ["a", "b"]


def test_chunks_sent_under_an_older_map_are_sent_again_to_the_new_owner(
        tmp_path: Path) -> None:
    w = world(tmp_path, lines=3, nodes=("a", "b", "c"))
    w.dispatch.step()
    (node_id, _, _), = w.pushed
    move = w.book.partition_lost(2, {n: f"tcp://{n}:2" for n in "abc"}, 0.0, -1)
    for send in move.sends:         # every node acks the JobUpdate
        assert send.then is not None
        send.then()
    w.control.pending.clear()
    new_owner = w.book.partition_map[2]
    w.dispatch.executed(node_id, p.TaskExecuted(job_id="j1", node_id=node_id, task_id=0,
                                                attempt=1, nbytes=63))
    w.dispatch.on_output(w.links.links[node_id], output(0, 1, "o1", parts=(0, 1, 2)))
    ((to, resend),) = w.acked_of(p.ResendChunks)
    assert to == node_id and resend.partition == 2 and resend.epoch == 2
    assert resend.endpoint == f"tcp://{new_owner}:2"


def test_once_stopped_map_reports_are_ignored(tmp_path: Path) -> None:
    w = world(tmp_path, lines=3)
    w.dispatch.step()
    w.dispatch.stop()
    assert not w.dispatch.running
    assert not w.dispatch.executed("a", p.TaskExecuted(job_id="j1", node_id="a", task_id=0,
                                                       attempt=1, nbytes=63))
    w.dispatch.on_output(w.links.links["a"], output(0, 1, "o1"))
    w.dispatch.step()
    assert w.commits.outputs == {} and len(w.pushed) == 1
    w.dispatch.close()
