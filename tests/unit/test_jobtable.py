"""The node's job table decides without sockets: admission, partition owners, routing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pymr.config import NodeOptions
from pymr.engine.jobtable import PATH_REFUSED, JobTable, NodeJob
from pymr.jobs import builtin_hashes, builtin_spec, bundle_sha256
from pymr.wire import protocol as p

MASTER = b"master"
ENDPOINTS = {"me": "tcp://10.0.0.1:7371", "other": "tcp://10.0.0.2:7371"}


def a_table(executors: int = 2, builtin_only: bool = False, read_paths: bool = False,
            lease_timeout_s: float = 30.0) -> JobTable:
    opts = NodeOptions(read_paths=read_paths, lease_timeout_s=lease_timeout_s)
    table = JobTable(opts, "me", "node-a", Path("/spill"),
                     builtin_hashes() if builtin_only else set())
    table.executors = executors
    return table


def job_start(job_id: str = "j1", partition_map: dict[int, str] | None = None,
              **changes: Any) -> p.JobStart:
    spec = builtin_spec("wordcount")
    pmap = partition_map if partition_map is not None else \
        {0: "me", 1: "other", 2: "me", 3: "me"}
    msg = p.JobStart(seq=7, job_id=job_id, job_name="wordcount", source=spec.source,
                     sha256=spec.sha256, num_partitions=len(pmap), partition_map=pmap,
                     shuffle_endpoints=dict(ENDPOINTS), task_token="secret")
    return dataclasses.replace(msg, **changes)


def started(table: JobTable, **kw: Any) -> NodeJob:
    ack, job = table.admit(MASTER, job_start(**kw), now=100.0)
    assert ack.ok and job is not None, ack.error
    return job


# ------------------------------------------------------------------ admission


def test_admit_spreads_my_partitions_over_the_executors() -> None:
    table = a_table(executors=2)
    job = started(table)
    assert job.owners == {0: 0, 2: 1, 3: 0}
    assert job.master == MASTER and table.jobs == {"j1": job}


def test_start_tells_every_executor_then_acks() -> None:
    table = a_table(executors=2)
    sends = table.start(MASTER, job_start(), now=1.0)
    assert [dest for dest, _ in sends] == [0, 1, MASTER]
    first, second = (msg for _, msg in sends[:2])
    assert isinstance(first, p.ExecJob) and isinstance(second, p.ExecJob)
    assert (first.partitions, second.partitions) == ([0, 3], [2])
    assert first.spill_dir == "/spill/j1.0"
    assert first.shuffle_endpoints == {0: ENDPOINTS["me"], 1: ENDPOINTS["other"],
                                       2: ENDPOINTS["me"], 3: ENDPOINTS["me"]}
    assert sends[-1][1] == p.Ack(seq=7)


def test_a_resent_job_start_is_acked_and_changes_nothing() -> None:
    table = a_table()
    job = started(table)
    assert table.start(b"someone", job_start(), now=5.0) == [(b"someone", p.Ack(seq=7))]
    assert table.jobs["j1"] is job and job.master == MASTER


def test_malformed_jobs_are_refused() -> None:
    table = a_table()
    cases = {
        "bad partition count 0": job_start(partition_map={}),
        "the partition map does not name every partition exactly once":
            job_start(num_partitions=5),
        "bad shuffle endpoint for node other":
            job_start(shuffle_endpoints={**ENDPOINTS, "other": "udp://x"}),
        "the partition map names a node without a shuffle endpoint":
            job_start(partition_map={0: "me", 1: "stranger"}),
        "the job's program does not match its sha256": job_start(sha256="0" * 64),
    }
    for error, msg in cases.items():
        ack, job = table.admit(MASTER, msg, now=1.0)
        assert (ack.ok, ack.error, job) == (False, error, None)
    assert table.jobs == {}


def test_builtin_only_refuses_other_programs_and_helper_modules() -> None:
    table = a_table(builtin_only=True)
    source = "def map(line):\n    yield line, 1\n"
    other = job_start(source=source, sha256=bundle_sha256(source, {}))
    spec = builtin_spec("wordcount")
    modules = {"helper.py": "X = 1\n"}
    with_helper = job_start(modules=modules, sha256=bundle_sha256(spec.source, modules))
    for msg in (other, with_helper):
        ack, job = table.admit(MASTER, msg, now=1.0)
        assert not ack.ok and "--builtin-only" in ack.error and job is None
    assert started(table).job_id == "j1"


# ------------------------------------------------------------------ a master's messages


def test_only_the_master_owns_and_renews_its_job() -> None:
    table = a_table()
    job = started(table)
    assert table.owned(MASTER, "j1") is job
    assert table.owned(b"other", "j1") is None and table.owned(MASTER, "nope") is None
    table.renew(b"other", "j1", now=500.0)
    assert table.expired(now=131.0) == [job]
    table.renew(MASTER, "j1", now=500.0)
    assert table.expired(now=529.0) == []


def test_commit_goes_to_the_executors_that_reduce_its_partitions() -> None:
    table = a_table(executors=2)
    job = started(table)                                  # owners {0: 0, 2: 1, 3: 0}
    msg = p.Commit(seq=3, job_id="j1", output_ids=["a", "b", "c"], tasks=[[1], [2], [3]],
                   manifests=[{0: [1, 1, 1], 2: [1, 1, 2]}, {3: [2, 2, 2]}, {1: [1, 1, 1]}],
                   epoch=2)
    sends = dict(table.on_commit(job, msg))
    assert set(sends) == {0, 1}
    assert sends[0] == p.Commit(seq=3, job_id="j1", output_ids=["a", "b"],
                                tasks=[[1], [2]], manifests=[{0: [1, 1, 1]}, {3: [2, 2, 2]}],
                                epoch=2)
    assert sends[1] == p.Commit(seq=3, job_id="j1", output_ids=["a"], tasks=[[1]],
                                manifests=[{2: [1, 1, 2]}], epoch=2)


def test_update_gives_new_partitions_to_the_least_loaded_executor() -> None:
    table = a_table(executors=2)
    job = started(table)                                  # owners {0: 0, 2: 1, 3: 0}
    moved = p.JobUpdate(seq=4, job_id="j1", partition_map={0: "me", 1: "me", 2: "other",
                                                           3: "me"},
                        shuffle_endpoints=dict(ENDPOINTS), epoch=2, num_tasks=9)
    sends = table.on_update(job, moved)
    assert job.owners == {0: 0, 3: 0, 1: 1}
    assert (job.spec.epoch, job.num_tasks) == (2, 9)
    assert [(dest, msg.partitions, msg.num_tasks) for dest, msg in sends  # type: ignore
            ] == [(0, [0, 3], 9), (1, [1], 9)]
    stale = dataclasses.replace(moved, epoch=1, partition_map={0: "other", 1: "other",
                                                               2: "other", 3: "other"})
    assert table.on_update(job, stale) == []
    assert job.owners == {0: 0, 3: 0, 1: 1}


def test_resend_goes_to_the_retaining_executor_or_the_output_is_lost() -> None:
    table = a_table(executors=2)
    job = started(table)
    kept = p.ResendChunks(seq=1, job_id="j1", output_id=p.make_output_id("me", 1, 99, 3),
                          partition=0, endpoint=ENDPOINTS["me"])
    assert table.on_resend(job, kept) == [(1, kept)]
    gone = dataclasses.replace(kept, output_id=p.make_output_id("me", 5, 99, 3))
    assert table.on_resend(job, gone) == [(MASTER, p.OutputLost(
        job_id="j1", node_id="me", output_id=gone.output_id))]


def test_input_complete_is_kept_for_replacements_and_told_to_all() -> None:
    table = a_table(executors=3)
    job = started(table)
    msg = p.InputComplete(seq=2, job_id="j1", num_tasks=12)
    assert table.on_input_complete(job, msg) == [(0, msg), (1, msg), (2, msg)]
    assert job.num_tasks == 12


def test_end_forgets_the_job_and_its_queue_and_tells_every_executor() -> None:
    table = a_table(executors=2)
    job = started(table)
    table.enqueue(a_task(), [b"frame"])
    sends = table.on_end(job, p.JobEnd(seq=9, job_id="j1"))
    assert sends == [(0, p.ExecJobEnd(job_id="j1")), (1, p.ExecJobEnd(job_id="j1"))]
    assert table.jobs == {} and not table.has_tasks()


def test_fetch_and_shuffle_go_to_the_partitions_reducer() -> None:
    table = a_table(executors=2)
    job = started(table)
    fetch = p.FetchPartition(job_id="j1", partition=2, start=0, count=10)
    assert table.fetch_route(job, fetch) == [(1, fetch)]
    assert table.fetch_route(job, dataclasses.replace(fetch, partition=1)) == []
    assert table.owner("j1", 3) == 0
    assert table.owner("j1", 1) is None and table.owner("nope", 0) is None


def test_a_replacement_is_given_every_job_to_map_only() -> None:
    table = a_table(executors=2)
    started(table)
    started(table, job_id="j2")
    sends = table.replay(1)
    assert [(dest, msg.job_id, msg.partitions) for dest, msg in sends  # type: ignore
            ] == [(1, "j1", []), (1, "j2", [])]


# ------------------------------------------------------------------ map tasks


def a_task(job_id: str = "j1", task_id: int = 1, attempt: int = 1, **kw: Any) -> p.MapTask:
    return p.MapTask(job_id=job_id, task_id=task_id, attempt=attempt, token="secret", **kw)


def test_tasks_are_refused_without_their_job_or_token() -> None:
    table = a_table()
    started(table)
    assert table.take_task(a_task(job_id="nope"), []) == ("map task for an unknown job", [])
    why, sends = table.take_task(dataclasses.replace(a_task(), token="guess"), [])
    assert why == "map task without this job's token (not its master)" and sends == []
    assert not table.has_tasks()


def test_a_task_naming_a_file_is_refused_to_its_master_unless_the_node_reads_paths() -> None:
    table = a_table()
    started(table)
    why, sends = table.take_task(a_task(path="/etc/passwd", length=10), [])
    assert why == PATH_REFUSED
    assert [(dest, type(msg), msg.exc_type) for dest, msg in sends  # type: ignore
            ] == [(MASTER, p.TaskFailedReport, "Refused")]
    reader = a_table(read_paths=True)
    started(reader)
    assert reader.take_task(a_task(path="/data/in.txt", length=10), []) == ("", [])
    assert reader.has_tasks()


def test_tasks_are_handed_out_round_robin_across_jobs() -> None:
    table = a_table()
    started(table)
    started(table, job_id="j2")
    for task in (a_task("j1", 1), a_task("j1", 2), a_task("j1", 3), a_task("j2", 1)):
        assert table.take_task(task, [task.task_id]) == ("", [])
    order = []
    while table.has_tasks():
        item = table.next_task()
        if item is not None:
            order.append((item[0].job_id, item[0].task_id))
    assert order == [("j1", 1), ("j2", 1), ("j1", 2), ("j1", 3)]


def test_a_cancelled_attempt_leaves_the_queue() -> None:
    table = a_table()
    job = started(table)
    table.enqueue(a_task(task_id=1, attempt=1), [])
    table.enqueue(a_task(task_id=1, attempt=2), [])
    assert table.unqueue(job, 1, 1)
    assert not table.unqueue(job, 1, 1)
    assert [t.attempt for t, _ in job.queue] == [2]
    job.queue.clear()
    assert table.next_task() is None and not table.has_tasks()


# ------------------------------------------------------------------ executor deaths


def test_a_dead_executors_partitions_and_tasks_are_reported_lost() -> None:
    table = a_table(executors=2)
    started(table)                                        # owners {0: 0, 2: 1, 3: 0}
    sends = table.lost_reports(0, [("j1", 5, 1), ("gone", 1, 1)], {("j1", 4, 2)}, "boom")
    assert [(dest, msg) for dest, msg in sends] == [
        (MASTER, p.PartitionLost(job_id="j1", node_id="me", partition=0, reason="boom")),
        (MASTER, p.PartitionLost(job_id="j1", node_id="me", partition=3, reason="boom")),
        (MASTER, p.TaskFailedReport(job_id="j1", node_id="me", task_id=5, attempt=1,
                                    exc_type="ExecutorCrashed", message="boom")),
        (MASTER, p.TaskFailedReport(job_id="j1", node_id="me", task_id=4, attempt=2,
                                    exc_type=p.LOST, message="boom")),
    ]
