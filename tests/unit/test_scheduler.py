"""pymr.engine.scheduler.Scheduler: event scripts, no sockets.

Each test is a script of events (tasks added, assignments, executed / failed / lost
reports, map outputs, node loss) and the decisions expected back. ``check`` asserts the
bookkeeping invariants after every step; the random-script test drives long interleavings
through the same checks.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymr.engine.scheduler import Assignment, CommitDecision, JobFailedError, Scheduler

FUZZ_EXAMPLES = int(os.environ.get("PYMR_FUZZ_EXAMPLES", "100"))


def check(s: Scheduler) -> None:
    """Invariants that hold after every event."""
    running_per_node: dict[str, int] = {}
    running_bytes = 0
    for t in s.tasks:
        for node in t.running.values():
            running_per_node[node] = running_per_node.get(node, 0) + 1
            running_bytes += t.size
        if t.committed is None:
            # liveness: an uncommitted task is always somewhere -- waiting, running, or
            # executed with its output still to come
            assert t.task_id in s.queue or t.running or t.executed, \
                f"task {t.task_id} was forgotten: {t}"
        assert t.failures <= s.max_attempts
    assert s.bytes_in_flight == running_bytes, "byte accounting drifted"
    for node in s.credits.slots:
        assert s.credits.in_flight.get(node, 0) == running_per_node.get(node, 0), \
            f"credit accounting of {node} drifted"
        assert s.credits.in_flight.get(node, 0) <= s.credits.slots[node] * (1 + s.credits.prefetch)
    assert not set(running_per_node) - set(s.credits.slots), "a removed node still runs tasks"
    assert len(s.queue) == len(set(s.queue)), "a task is queued twice"
    assert s.committed_count == sum(1 for t in s.tasks if t.committed is not None)
    assert s.running_count() == sum(running_per_node.values())
    # the incremental books agree with full scans
    assert s.credits.room() == sum(s.credit(n) for n in s.credits.slots), "free capacity drifted"
    assert s._running_tasks == {t.task_id for t in s.tasks if t.running}
    assert s._unsettled == {t.task_id for t in s.tasks if t.committed is None
                            and (t.running or not t.executed)}
    assert s.stragglers.durations == sorted(s.stragglers.durations)
    with_credit = [n for n in s.credits.slots if s.credit(n) > 0]
    best = max(with_credit, key=lambda n: (s.credit(n), -s.credits.last_served.get(n, -1)),
               default=None)
    assert s.credits.best() == best, "the heap's pick differs from the scan's"


def make(nodes: dict[str, int], tasks: int = 0, size: int = 100, **kw: int) -> Scheduler:
    s = Scheduler(nodes, **kw)
    for _ in range(tasks):
        s.add_task(size)
    check(s)
    return s


def assign(s: Scheduler) -> list[Assignment]:
    out = s.assign()
    check(s)
    return out


def by_node(assignments: list[Assignment]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in assignments:
        out[a.node_id] = out.get(a.node_id, 0) + 1
    return out


def run_to_executed(s: Scheduler, a: Assignment) -> None:
    s.on_executed(a.task_id, a.attempt, a.node_id)
    check(s)


# ------------------------------------------------------------------ credits


def test_credit_is_slots_plus_prefetch_per_node() -> None:
    # Given two nodes of 2 and 1 slots, prefetch 1, and more tasks than they may hold
    s = make({"a": 2, "b": 1}, tasks=20, prefetch=1)
    # When the scheduler assigns
    first = assign(s)
    # Then each node holds exactly slots * (1 + prefetch) tasks, and no more are handed out
    assert by_node(first) == {"a": 4, "b": 2}
    assert s.credit("a") == 0 and s.credit("b") == 0
    assert assign(s) == []
    assert len(s.queue) == 14
    # When one task of a is reported executed, exactly one more goes to a
    done = next(x for x in first if x.node_id == "a")
    run_to_executed(s, done)
    assert s.credit("a") == 1
    more = assign(s)
    assert [(x.node_id, x.attempt) for x in more] == [("a", 1)]


def test_prefetch_zero_means_one_task_per_slot() -> None:
    s = make({"a": 3}, tasks=10, prefetch=0)
    assert len(assign(s)) == 3
    assert assign(s) == []


def test_assignment_fills_the_node_with_most_credit_first() -> None:
    s = make({"a": 1, "b": 3}, tasks=3, prefetch=0)
    got = assign(s)
    # b has 3 credits, a has 1: the first two go to b, then they tie at 1 each
    assert by_node(got) == {"b": 2, "a": 1} or by_node(got) == {"b": 3}
    assert got[0].node_id == "b"
    assert [x.task_id for x in got] == [0, 1, 2], "tasks are handed out in FIFO order"
    assert all(x.attempt == 1 and x.size == 100 for x in got)


def test_unknown_node_has_no_credit_and_added_node_gets_work() -> None:
    s = make({"a": 1}, tasks=5, prefetch=0)
    assert s.credit("nobody") == 0
    assign(s)
    s.add_node("b", 2)
    check(s)
    got = assign(s)
    assert by_node(got) == {"b": 2}


def test_wants_input_only_when_work_would_be_dispatched_at_once() -> None:
    s = make({"a": 1}, prefetch=0)
    assert s.wants_input()
    s.add_task(10)
    assert not s.wants_input(), "a queued task is waiting: do not read ahead"
    assign(s)
    assert not s.wants_input(), "no credit left"
    s.on_executed(0, 1, "a")
    assert s.wants_input()
    s.finish_input()
    assert not s.wants_input()


# ------------------------------------------------------------------ byte budget


def test_byte_budget_bounds_bytes_in_flight() -> None:
    # Given plenty of credit but a budget of 2.5 tasks' bytes
    s = make({"a": 8, "b": 8}, tasks=10, size=100, prefetch=1, byte_budget=250)
    got = assign(s)
    # Then assignment stops once the budget is reached: every task was handed out while
    # the bytes in flight were below the budget, so the overshoot is less than one task
    assert len(got) == 3
    assert s.bytes_in_flight == 300
    assert not s.wants_input()
    assert assign(s) == []
    # When one finishes, in flight drops to 200 < 250: exactly one more goes out
    run_to_executed(s, got[0])
    assert s.bytes_in_flight == 200
    assert len(assign(s)) == 1
    assert assign(s) == []


def test_byte_budget_counts_running_not_executed_or_queued() -> None:
    s = make({"a": 4}, tasks=4, size=100, prefetch=0, byte_budget=1000)
    got = assign(s)
    assert s.bytes_in_flight == 400
    for a in got:
        run_to_executed(s, a)
    assert s.bytes_in_flight == 0
    s.on_failed(got[0].task_id, got[0].attempt, "a", lost=True)
    check(s)
    assert s.bytes_in_flight == 0


def test_a_task_larger_than_the_budget_still_runs_alone() -> None:
    s = make({"a": 4}, tasks=3, size=500, prefetch=0, byte_budget=100)
    got = assign(s)
    assert len(got) == 1, "one oversized task at a time, never a deadlock"
    run_to_executed(s, got[0])
    assert len(assign(s)) == 1


# ------------------------------------------------------------------ failures and retries


def error(n: int) -> tuple[str, int, str, str, str]:
    return ("node", n, "ValueError", f"boom {n}", "Traceback ...")


def test_failed_task_is_retried_first_with_a_new_attempt_then_fails_the_job() -> None:
    # Given one slot, three tasks and at most 3 attempts
    s = make({"a": 1}, tasks=3, prefetch=0, max_attempts=3)
    first = assign(s)
    assert [(x.task_id, x.attempt) for x in first] == [(0, 1)]
    for attempt in (1, 2):
        # When attempt n of task 0 raises
        s.on_failed(0, attempt, "a", lost=False, error=error(attempt))
        check(s)
        # Then task 0 runs again before the others, as attempt n + 1
        again = assign(s)
        assert [(x.task_id, x.attempt) for x in again] == [(0, attempt + 1)]
        assert s.tasks[0].failures == attempt
    # When the third attempt raises, the job fails with the last error
    with pytest.raises(JobFailedError) as info:
        s.on_failed(0, 3, "a", lost=False, error=error(3))
    assert info.value.task.task_id == 0
    assert info.value.task.last_error == error(3)
    assert info.value.task.failures == 3


def test_max_attempts_one_fails_on_the_first_error() -> None:
    s = make({"a": 1}, tasks=1, max_attempts=1)
    a, = assign(s)
    with pytest.raises(JobFailedError):
        s.on_failed(a.task_id, a.attempt, "a", lost=False, error=error(1))


def test_failures_of_different_tasks_are_counted_separately() -> None:
    s = make({"a": 2}, tasks=2, prefetch=0, max_attempts=2)
    for round_ in (1,):
        got = assign(s)
        for x in got:
            s.on_failed(x.task_id, x.attempt, "a", lost=False, error=error(round_))
            check(s)
    assert [t.failures for t in s.tasks] == [1, 1]
    got = assign(s)
    s.on_executed(got[0].task_id, got[0].attempt, "a")
    with pytest.raises(JobFailedError) as info:
        s.on_failed(got[1].task_id, got[1].attempt, "a", lost=False, error=error(2))
    assert info.value.task.task_id == got[1].task_id


def test_lost_attempts_do_not_count_against_the_task() -> None:
    # Given at most 2 attempts
    s = make({"a": 1}, tasks=1, prefetch=0, max_attempts=2)
    # When the task's attempts are lost ten times (executor crash of a batch, node gone ...)
    for _ in range(10):
        a, = assign(s)
        s.on_failed(a.task_id, a.attempt, "a", lost=True)
        check(s)
    # Then the job goes on; the count starts with the first real failure
    assert s.tasks[0].failures == 0
    a, = assign(s)
    assert a.attempt == 11
    s.on_failed(0, a.attempt, "a", lost=False, error=error(1))
    a, = assign(s)
    with pytest.raises(JobFailedError):
        s.on_failed(0, a.attempt, "a", lost=False, error=error(2))


def test_lost_executed_attempt_is_requeued() -> None:
    """A batch discarded after another task failed: executed tasks in it run again."""
    s = make({"a": 1}, tasks=2, prefetch=1)
    x, y = assign(s)
    run_to_executed(s, x)
    s.on_failed(x.task_id, x.attempt, "a", lost=True)
    check(s)
    assert s.queue == [x.task_id]
    assert s.tasks[x.task_id].failures == 0


def test_stale_and_duplicate_failure_reports_are_ignored() -> None:
    s = make({"a": 1}, tasks=1, prefetch=0, max_attempts=2)
    a, = assign(s)
    s.on_failed(0, a.attempt, "a", lost=False, error=error(1))
    s.on_failed(0, a.attempt, "a", lost=False, error=error(1))   # duplicate report
    s.on_failed(0, 99, "a", lost=False, error=error(1))          # attempt never started
    s.on_failed(42, 1, "a", lost=False, error=error(1))          # unknown task
    check(s)
    assert s.tasks[0].failures == 1
    assert s.queue == [0]


def test_failure_of_a_committed_task_changes_nothing() -> None:
    """A backup attempt raising after the task was committed must not fail the job."""
    s = make({"a": 1, "b": 1}, tasks=1, prefetch=0, max_attempts=1)
    a, = assign(s)
    run_to_executed(s, a)
    assert s.on_output("o1", [(0, a.attempt)]).commit
    # a late backup (dispatched by hand) fails afterwards
    s.queue.append(0)
    b, = assign(s)
    s.on_failed(0, b.attempt, b.node_id, lost=False, error=error(1))
    check(s)
    assert s.all_committed() is False  # input not finished yet
    s.finish_input()
    assert s.all_committed()


# ------------------------------------------------------------------ the commit rule


def execute_all(s: Scheduler) -> list[Assignment]:
    got = assign(s)
    for a in got:
        run_to_executed(s, a)
    return got


def test_first_output_wins_and_a_second_output_reruns_its_uncommitted_tasks() -> None:
    # Given tasks 0..2 executed, and a backup attempt of task 1
    s = make({"a": 4, "b": 4}, tasks=3, prefetch=0)
    execute_all(s)
    s.queue.append(1)  # a backup attempt of task 1
    backup, = assign(s)
    run_to_executed(s, backup)
    # When an output holding tasks 0 and 1 arrives, it is committed
    first = s.on_output("o1", [(0, 1), (1, 1)])
    check(s)
    assert first == CommitDecision(True, cancel=((1, backup.attempt, backup.node_id),))
    assert s.tasks[0].committed == "o1" and s.tasks[1].committed == "o1"
    assert s.committed_count == 2
    # When a second output holds task 1 (committed) and task 2 (not)
    second = s.on_output("o2", [(1, backup.attempt), (2, 1)])
    check(s)
    # Then it is not committed, and task 2 alone runs again
    assert second.commit is False
    assert second.rerun == (2,)
    assert s.tasks[1].committed == "o1" and s.tasks[2].committed is None
    assert s.queue == [2]
    rerun, = assign(s)
    assert (rerun.task_id, rerun.attempt) == (2, 2)
    run_to_executed(s, rerun)
    s.finish_input()
    assert s.all_executed() and not s.all_committed()
    assert s.on_output("o3", [(2, 2)]).commit
    check(s)
    assert s.all_committed()


def test_losing_output_does_not_rerun_a_task_still_running_elsewhere() -> None:
    s = make({"a": 2, "b": 2}, tasks=2, prefetch=0)
    execute_all(s)
    s.queue.append(1)
    backup, = assign(s)        # task 1 attempt 2 still running
    assert s.on_output("o1", [(0, 1)]).commit
    decision = s.on_output("o2", [(0, 1), (1, 1)])   # loses: task 0 is committed
    check(s)
    assert decision.commit is False and decision.rerun == ()
    assert 1 not in s.queue, "task 1 has a running attempt: no need to run it a third time"
    run_to_executed(s, backup)
    assert s.on_output("o3", [(1, backup.attempt)]).commit


def test_single_task_outputs_duplicate_attempts_count_once() -> None:
    s = make({"a": 1, "b": 1}, tasks=1, prefetch=0)
    s.queue.append(0)
    a1, a2 = assign(s)
    assert {a1.node_id, a2.node_id} == {"a", "b"} and {a1.attempt, a2.attempt} == {1, 2}
    run_to_executed(s, a1)
    run_to_executed(s, a2)
    assert s.on_output("o-a", [(0, a1.attempt)]).commit
    late = s.on_output("o-b", [(0, a2.attempt)])
    check(s)
    assert late == CommitDecision(False, ())
    assert s.committed_count == 1 and s.tasks[0].committed == "o-a"


def test_output_naming_a_task_twice_counts_it_once() -> None:
    """A malformed output (task 0 listed twice) must not make the job look complete.

    Otherwise ``all_committed()`` turns true while task 1 was never committed, and the job
    would finish without task 1's words.
    """
    s = make({"a": 1, "b": 1}, tasks=1, prefetch=0)
    s.queue.append(0)  # a backup
    got = assign(s)
    assert sorted((x.task_id, x.attempt) for x in got) == [(0, 1), (0, 2)]
    for a in got:
        run_to_executed(s, a)
    s.add_task(100)
    s.finish_input()
    s.on_output("o", [(0, 1), (0, 2)])
    assert s.committed_count == sum(1 for t in s.tasks if t.committed is not None)
    assert not s.all_committed(), "task 1 has not even run"


def test_output_naming_an_unknown_task_is_not_committed() -> None:
    s = make({"a": 2}, tasks=2)
    execute_all(s)
    assert s.on_output("bad", [(0, 1), (7, 1)]).commit is False
    assert s.on_output("empty", []).commit is False
    check(s)
    assert s.committed_count == 0
    assert s.on_output("good", [(0, 1), (1, 1)]).commit


def test_phases_all_executed_then_all_committed() -> None:
    s = make({"a": 2}, tasks=2, prefetch=0)
    assert not s.all_executed()
    got = assign(s)
    run_to_executed(s, got[0])
    s.finish_input()
    assert not s.all_executed(), "task 1 still runs"
    run_to_executed(s, got[1])
    assert s.all_executed() and not s.all_committed()
    assert s.running_count() == 0
    s.on_output("o", [(0, 1), (1, 1)])
    assert s.all_committed()


# ------------------------------------------------------------------ node loss


def test_remove_node_requeues_its_running_and_unflushed_tasks_without_counting() -> None:
    # Given node a running tasks 0 and 1, with task 2 executed on a (unflushed), and node b
    # running task 3 and a backup of task 0; task 4 committed from a
    s = make({"a": 3, "b": 2}, tasks=5, prefetch=0, max_attempts=1)
    got = assign(s)
    where = {x.task_id: x for x in got}
    assert by_node(got) == {"a": 3, "b": 2}
    on_a = sorted(t for t, x in where.items() if x.node_id == "a")
    on_b = sorted(t for t, x in where.items() if x.node_id == "b")
    # make the script independent of the tie-break: re-label by what ran where
    executed_on_a, committed_from_a, running_on_a = on_a[0], on_a[1], on_a[2]
    run_to_executed(s, where[executed_on_a])
    run_to_executed(s, where[committed_from_a])
    assert s.on_output("oa", [(committed_from_a, 1)]).commit
    for t in on_b:
        run_to_executed(s, where[t])
    s.queue.append(running_on_a)
    backup, = assign(s)
    assert backup.node_id == "b"
    # When node a is lost
    requeued = s.remove_node("a")
    check(s)
    # Then its executed-but-unflushed task runs again; the task with a backup on b does not;
    # the committed one does not (uncommit is the master's separate decision)
    assert sorted(requeued) == [executed_on_a]
    assert s.queue == [executed_on_a]
    assert s.credit("a") == 0 and "a" not in s.credits.in_flight
    assert all(t.failures == 0 for t in s.tasks), "node loss does not count as a failure"
    # and new work goes to b only
    s.on_executed(backup.task_id, backup.attempt, "b")
    again = assign(s)
    assert [x.node_id for x in again] == ["b"]
    # Late reports from the lost node change nothing
    s.on_executed(running_on_a, 1, "a")
    s.on_failed(executed_on_a, 1, "a", lost=False, error=error(1))
    check(s)
    assert s.tasks[executed_on_a].failures == 0


def test_remove_node_with_only_running_tasks_releases_bytes_and_requeues_in_order() -> None:
    s = make({"a": 2, "b": 1}, tasks=3, size=10, prefetch=0)
    got = assign(s)
    lost = sorted(x.task_id for x in got if x.node_id == "a")
    assert s.bytes_in_flight == 30
    assert sorted(s.remove_node("a")) == lost
    check(s)
    assert s.bytes_in_flight == 10
    assert sorted(s.queue) == lost


def test_remove_unknown_node_is_harmless() -> None:
    s = make({"a": 1}, tasks=1)
    assign(s)
    assert s.remove_node("zzz") == []
    check(s)


def test_uncommit_reruns_the_lost_outputs_task_set() -> None:
    # Given tasks 0,1 committed in output o1 and task 2 in o2
    s = make({"a": 3}, tasks=3, prefetch=0)
    execute_all(s)
    s.finish_input()
    assert s.on_output("o1", [(0, 1), (1, 1)]).commit
    assert s.on_output("o2", [(2, 1)]).commit
    assert s.all_committed()
    # When o1's mapper is gone with its retained output
    rerun = s.uncommit("o1")
    check(s)
    # Then exactly its tasks run again, and the job is no longer complete
    assert sorted(rerun) == [0, 1]
    assert s.tasks[0].committed is None and s.tasks[2].committed == "o2"
    assert s.committed_count == 1 and not s.all_committed() and not s.all_executed()
    again = assign(s)
    assert sorted((x.task_id, x.attempt) for x in again) == [(0, 2), (1, 2)]
    for a in again:
        run_to_executed(s, a)
    assert s.on_output("o3", [(0, 2), (1, 2)]).commit
    assert s.all_committed()
    assert s.uncommit("o1") == [] and s.uncommit("never") == []
    check(s)


# ------------------------------------------------------------------ backups and "alone"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_attempts_batch_and_reruns_flush_alone() -> None:
    s = make({"a": 1}, tasks=2, prefetch=0)
    first, = assign(s)
    assert first.alone is False, "first attempts may be batched with others"
    s.on_failed(first.task_id, first.attempt, "a", lost=True)
    rerun, = assign(s)
    assert (rerun.task_id, rerun.alone) == (first.task_id, True), \
        "a re-run flushes alone, so that losing it again costs one task"


def test_a_straggler_gets_one_backup_on_another_node_and_the_first_to_finish_wins() -> None:
    # Given two 2-slot nodes, two tasks, one of which finishes quickly
    clock = FakeClock()
    s = Scheduler({"a": 2, "b": 2}, prefetch=0, clock=clock, backup_after_s=1.0)
    s.add_task(100)
    s.add_task(100)
    got = {x.task_id: x for x in assign(s)}
    slow, fast = got[0], got[1]
    assert slow.node_id != fast.node_id
    assert s.backups() == [], "no backups while input may still come"
    s.finish_input()
    clock.now = 0.2
    run_to_executed(s, fast)
    # When the other has run less than the threshold: no backup
    clock.now = 0.9
    assert s.backups() == []
    # When it has run longer than max(backup_after_s, 2 x median): one backup, elsewhere,
    # flushing alone
    clock.now = 1.5
    backup, = s.backups()
    check(s)
    assert (backup.task_id, backup.attempt, backup.alone) == (slow.task_id, 2, True)
    assert backup.node_id != slow.node_id
    assert s.backups() == [], "one backup per task"
    # Then the backup finishes first and is committed: the original is cancelled, its
    # slot is free at once, and it does not count as an attempt
    run_to_executed(s, backup)
    won = s.on_output("o-backup", [(slow.task_id, backup.attempt)])
    check(s)
    assert won.commit and won.cancel == ((slow.task_id, slow.attempt, slow.node_id),)
    assert s.credits.in_flight[slow.node_id] == 0 and s.tasks[slow.task_id].attempts == 1
    assert s.on_output("o-fast", [(fast.task_id, fast.attempt)]).commit
    # ... and if the cancel came too late, the original's output loses without a re-run
    s.on_executed(slow.task_id, slow.attempt, slow.node_id)
    late = s.on_output("o-slow", [(slow.task_id, slow.attempt)], slow.node_id)
    check(s)
    assert late == CommitDecision(False, ())
    assert s.all_committed() and s.committed_count == 2


def test_a_loser_executed_into_a_batch_is_cancelled_and_its_batch_mates_rerun_on_loss() -> None:
    # Given task 0 executed on node a (unflushed, in a batch with task 1) and a backup of
    # task 0 on node b
    s = make({"a": 2}, tasks=2, prefetch=0)
    s.finish_input()
    on_a = assign(s)
    assert [x.node_id for x in on_a] == ["a", "a"]
    for x in on_a:
        run_to_executed(s, x)
    t0 = on_a[0]
    s.add_node("b", 1)
    other = "b"
    backup = s._start(s.tasks[t0.task_id], other, True)
    check(s)
    # When the backup's output commits first
    run_to_executed(s, backup)
    won = s.on_output("o-b", [(t0.task_id, backup.attempt)], other)
    check(s)
    # Then the executed original is a loser to cancel, and frees no credit (it had none)
    assert won.commit and won.cancel == ((t0.task_id, t0.attempt, "a"),)
    assert t0.attempt not in s.tasks[t0.task_id].executed
    # ... and when node a discards its batch, the batch mates run again (not as failures)
    for x in on_a[1:]:
        s.on_failed(x.task_id, x.attempt, "a", lost=True)
        check(s)
        assert x.task_id in s.queue and s.tasks[x.task_id].failures == 0
    s.on_failed(t0.task_id, t0.attempt, "a", lost=True)  # its "Cancelled" report
    check(s)
    assert t0.task_id not in s.queue


def test_no_backup_while_tasks_are_queued_or_without_an_idle_slot() -> None:
    clock = FakeClock()
    s = Scheduler({"a": 1, "b": 1}, prefetch=0, clock=clock, backup_after_s=0.5)
    for _ in range(3):
        s.add_task(100)
    first = assign(s)
    s.finish_input()
    clock.now = 0.1
    run_to_executed(s, first[0])
    clock.now = 5.0
    assert s.queue and s.backups() == [], "queued work comes before backups"
    assign(s)
    clock.now = 10.0
    assert s.backups() == [], "every slot is busy: no backup"
    check(s)


# ------------------------------------------------------------------ random scripts


def random_script(seed: int, steps: int = 400) -> Scheduler:
    """Random interleavings of every event; invariants checked after each one."""
    rng = random.Random(seed)
    nodes = {f"n{i}": rng.randint(1, 3) for i in range(rng.randint(1, 4))}
    clock = FakeClock()
    s = Scheduler(nodes, prefetch=rng.randint(0, 2), byte_budget=rng.choice([150, 1000, 1 << 30]),
                  max_attempts=1_000_000, clock=clock, backup_after_s=rng.choice([0.0, 1.0]))
    pending_outputs: list[tuple[str, list[tuple[int, int]]]] = []
    unflushed: dict[str, list[tuple[int, int]]] = {}
    committed_outputs: list[str] = []
    out_seq = 0
    removed: list[str] = []
    for _ in range(steps):
        event = rng.choice(["add", "add", "assign", "assign", "exec", "exec", "fail", "lost",
                            "flush", "deliver", "deliver", "remove", "readd", "uncommit",
                            "backup", "tick", "backups"])
        running = [(t.task_id, a, n) for t in s.tasks for a, n in t.running.items()]
        if event == "add" and not s.input_done:
            s.add_task(rng.randint(1, 100))
            if rng.random() < 0.05:
                s.finish_input()
        elif event == "assign":
            s.assign()
        elif event == "exec" and running:
            t, a, n = rng.choice(running)
            s.on_executed(t, a, n)
            batch = unflushed.setdefault(n, [])
            if any(t == bt for bt, _ in batch):  # a backup flushes alone, never with its twin
                out_seq += 1
                pending_outputs.append((f"{n}.{out_seq}", unflushed.pop(n)))
                batch = unflushed.setdefault(n, [])
            batch.append((t, a))
        elif event in ("fail", "lost") and running:
            t, a, n = rng.choice(running)
            s.on_failed(t, a, n, lost=event == "lost", error=error(a))
        elif event == "flush" and unflushed:
            n = rng.choice(sorted(unflushed))
            out_seq += 1
            pending_outputs.append((f"{n}.{out_seq}", unflushed.pop(n)))
        elif event == "deliver" and pending_outputs:
            oid, tasks = pending_outputs.pop(rng.randrange(len(pending_outputs)))
            if s.on_output(oid, tasks).commit:
                committed_outputs.append(oid)
        elif event == "remove" and len(s.credits.slots) > 1:
            n = rng.choice(sorted(s.credits.slots))
            s.remove_node(n)
            unflushed.pop(n, None)
            pending_outputs = [(o, ts) for o, ts in pending_outputs if not o.startswith(n + ".")]
            removed.append(n)
            for oid in [o for o in committed_outputs if o.startswith(n + ".")]:
                s.uncommit(oid)
                committed_outputs.remove(oid)
        elif event == "readd" and removed:
            s.add_node(removed.pop(), rng.randint(1, 3))
        elif event == "uncommit" and committed_outputs:
            oid = committed_outputs.pop(rng.randrange(len(committed_outputs)))
            s.uncommit(oid)
        elif event == "tick":
            clock.now += rng.random()
        elif event == "backups":
            s.backups()
        elif event == "backup" and s.tasks:
            t = rng.choice(s.tasks)
            if t.committed is None and t.task_id not in s.queue and (t.running or t.executed):
                s.queue.append(t.task_id)
        check(s)
    return s


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_event_scripts_keep_the_books_straight(seed: int) -> None:
    random_script(seed)


def test_random_scripts_can_finish() -> None:
    """Drain: after any script, running everything to the end commits every task once."""
    for seed in range(20):
        s = random_script(seed, steps=200)
        s.finish_input()
        for n in list(s.credits.slots):
            s.credits.slots[n] = max(s.credits.slots[n], 1)
        out = 0
        for _ in range(10_000):
            if s.all_committed():
                break
            for a in s.assign():
                s.on_executed(a.task_id, a.attempt, a.node_id)
                out += 1
                s.on_output(f"drain.{out}", [(a.task_id, a.attempt)])
                check(s)
            # attempts executed before the drain whose outputs never came: lost
            for t in s.tasks:
                for a, n in list(t.executed.items()):
                    s.on_failed(t.task_id, a, n, lost=True)
            # attempts still running from before the drain: report them executed + flushed
            for t in s.tasks:
                for a, n in list(t.running.items()):
                    s.on_executed(t.task_id, a, n)
                    out += 1
                    s.on_output(f"drain.{out}", [(t.task_id, a)])
            check(s)
        assert s.all_committed(), f"seed {seed}: the job cannot finish"
        assert s.committed_count == s.num_tasks


@pytest.mark.slow
@settings(max_examples=max(FUZZ_EXAMPLES, 2_000), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_long_random_event_scripts(seed: int) -> None:
    """The soak run (``--run-slow``): longer scripts, more of them."""
    random_script(seed, steps=3000)
