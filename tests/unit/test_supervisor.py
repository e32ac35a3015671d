"""Executor supervision without processes or sockets: faults, replacement, delivery."""

from __future__ import annotations

from typing import Any

import pytest

from pymr.config import EXECUTOR_STOPPED_S
from pymr.net.security import ClusterKey
from pymr.runtime import supervisor
from pymr.runtime.supervisor import ExecutorSlot, Supervisor


class FakeProcess:
    """Just what the supervisor asks of a multiprocessing.Process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.alive = True
        self.exitcode: int | None = None
        self.killed = self.terminated = False

    def is_alive(self) -> bool:
        return self.alive

    def kill(self) -> None:
        self.killed, self.alive, self.exitcode = True, False, -9

    def terminate(self) -> None:
        self.terminated, self.alive, self.exitcode = True, False, -15

    def join(self, timeout: float | None = None) -> None:
        pass


def a_supervisor(count: int = 2, stopped: set[int] | None = None
                 ) -> tuple[Supervisor, list[list[Any]]]:
    procs = [FakeProcess(100 + i) for i in range(count)]
    paused = stopped if stopped is not None else set()
    sup = Supervisor("n1", "ipc:///nowhere", ClusterKey.generate(), 5, prespawned=procs,
                     stopped=lambda pid: pid in paused)
    sup.start(count)
    sent: list[list[Any]] = []
    sup.attach(lambda frames: sent.append(frames) is None)
    return sup, sent


def test_prespawned_executors_fill_the_slots() -> None:
    sup, _ = a_supervisor(3)
    assert [(e.index, e.identity) for e in sup.slots] == [(0, b"e0"), (1, b"e1"), (2, b"e2")]
    assert not sup.all_ready() and sup.ready_count() == 0


def test_an_exited_executor_is_a_fault_at_once() -> None:
    sup, _ = a_supervisor()
    sup.slots[1].process.alive = False
    sup.slots[1].process.exitcode = 3
    assert [(e.index, why) for e, why in sup.faults(10.0)] == \
        [(1, "executor exited with code 3")]
    assert sup.died_at_start() is sup.slots[1]


def test_a_stopped_executor_is_killed_only_after_a_grace_period() -> None:
    paused = {100}
    sup, _ = a_supervisor(stopped=paused)
    e = sup.slots[0]
    assert sup.faults(10.0) == [] and e.stopped_since == 10.0
    assert sup.faults(10.0 + EXECUTOR_STOPPED_S / 2) == []
    paused.clear()                                   # SIGCONT: the clock starts again
    assert sup.faults(11.0 + EXECUTOR_STOPPED_S) == [] and e.stopped_since is None
    paused.add(100)
    assert sup.faults(20.0) == []
    faults = sup.faults(21.0 + EXECUTOR_STOPPED_S)
    assert [(f.index, why) for f, why in faults] == \
        [(0, f"executor stopped for {EXECUTOR_STOPPED_S + 1:.0f} s (SIGSTOP?); killed")]
    assert e.process.killed


def test_replace_puts_a_fresh_replacement_in_the_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    sup, _ = a_supervisor()
    calls: list[tuple[int, int]] = []

    def spawn(count: int, *args: Any, first_index: int = 0, **kw: Any) -> list[Any]:
        calls.append((count, first_index))
        return [FakeProcess(200 + first_index)]

    monkeypatch.setattr(supervisor, "spawn_executors", spawn)
    old = sup.slots[1]
    old.tasks.append(("j", 1, 1))
    new = sup.replace(1)
    assert calls == [(1, 1)]
    assert sup.slots[1] is new and new is not old
    assert (new.identity, new.replacement, new.ready, list(new.tasks)) == (b"e1", True, False, [])


def test_messages_wait_in_the_outbox_until_the_executor_is_ready() -> None:
    sup, sent = a_supervisor()
    sup.deliver(0, [b"a"])
    sup.deliver(0, [b"b"])
    assert sent == [] and sup.slots[0].outbox == [[b"a"], [b"b"]]
    sup.mark_ready(sup.slots[0])
    sup.deliver(0, [b"c"])
    assert sent == [[b"e0", b"a"], [b"e0", b"b"], [b"e0", b"c"]]
    assert sup.slots[0].outbox == [] and sup.ready_count() == 1


def test_tasks_go_to_the_ready_executor_that_holds_the_fewest() -> None:
    sup, _ = a_supervisor(3)
    assert sup.free() is None                        # none ready yet
    for e in sup.slots:
        sup.mark_ready(e)
    sup.slots[0].tasks.append(("j", 1, 1))
    assert sup.free() is sup.slots[1]
    for e in sup.slots:
        while len(e.tasks) < supervisor.EXECUTOR_TASK_DEPTH:
            e.tasks.append(("j", len(e.tasks) + 10 * e.index, 1))
    assert sup.free() is None and sup.busy_count() == 3


def test_the_holder_of_a_task_is_found_until_its_output_is_flushed() -> None:
    sup, _ = a_supervisor()
    e: ExecutorSlot = sup.slots[1]
    e.tasks.append(("j", 4, 2))
    assert sup.holder(("j", 4, 2)) is e
    e.task_over(("j", 4, 2))
    e.unflushed.add(("j", 4, 2))
    assert sup.holder(("j", 4, 2)) is e
    e.task_over(("j", 4, 2))
    assert sup.holder(("j", 4, 2)) is None


def test_shutdown_stops_ready_executors_and_terminates_starting_ones() -> None:
    sup, _ = a_supervisor()
    sup.mark_ready(sup.slots[0])
    stopped: list[int] = []
    sup.shutdown(lambda e: stopped.append(e.index))
    assert stopped == [0]
    assert not sup.slots[0].process.terminated and sup.slots[1].process.terminated


def test_is_stopped_reads_proc_and_is_false_for_a_missing_process() -> None:
    import os

    assert supervisor.is_stopped(os.getpid()) is False
    assert supervisor.is_stopped(2 ** 22 + 12345) is False
