"""Twenty jobs in a row on one persistent cluster leave its nodes as they were.

A node that stays up must not leak between jobs: file descriptors, child processes and
data-dir files exactly back; RSS within a small tolerance of its value after the first job.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pymr.config import JobOptions
from pymr.engine.inputs import resolve_inputs
from pymr.engine.summary import JobSummary
from pymr.jobs import builtin_spec
from pymr.runtime.cluster import LocalCluster
from pymr.runtime.runner import run_job
from tests import helpers

JOBS = 20
#: RSS a node daemon may differ by from its value after the first job (allocator noise).
DAEMON_RSS_TOLERANCE_KIB = 4 * 1024
#: Executors hold a job's counts while it runs; after it they may keep freed arenas, but a
#: per-job leak of counts or retained outputs (megabytes per job here) shows above this.
EXECUTOR_RSS_TOLERANCE_KIB = 16 * 1024
#: How long connections of a finished job may take to be closed by zmq's I/O threads.
SETTLE_S = 10.0


@dataclass(frozen=True)
class NodeState:
    pid: int
    fds: dict[int, str]
    children: tuple[int, ...]
    child_fds: dict[int, dict[int, str]]
    rss_kib: int
    child_rss_kib: dict[int, int]


def node_state(pid: int) -> NodeState:
    children = tuple(sorted(helpers.children_of(pid)))
    return NodeState(pid=pid, fds=helpers.open_fds(pid), children=children,
                     child_fds={c: helpers.open_fds(c) for c in children},
                     rss_kib=helpers.rss_kib(pid),
                     child_rss_kib={c: helpers.rss_kib(c) for c in children})


def run_dir_files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def is_zmq_internal(target: str) -> bool:
    """eventfd / epoll descriptors: zmq context and socket mailboxes.

    pyzmq starts a process-wide context of its own (its zero-copy garbage collector) the
    first time a process sends a large frame with ``copy=False``, and keeps it until exit.
    Those descriptors cannot be told apart from others of their kind, so they are checked
    for growth between later jobs instead of against the state before the first job.
    """
    return target.startswith("anon_inode:")


def real_fds(fds: dict[int, str]) -> dict[int, str]:
    """Connections, files and pipes: each must be exactly as before the first job."""
    return {fd: t for fd, t in fds.items() if not is_zmq_internal(t)}


def internal_count(fds: dict[int, str]) -> int:
    return sum(1 for t in fds.values() if is_zmq_internal(t))


def fd_diff(before: dict[int, str], after: dict[int, str]) -> str:
    added = {fd: t for fd, t in after.items() if before.get(fd) != t}
    removed = {fd: t for fd, t in before.items() if after.get(fd) != t}
    return f"{len(before)} -> {len(after)}; added {added}; removed {removed}"


def processes(state: NodeState) -> dict[int, dict[int, str]]:
    return {state.pid: state.fds, **state.child_fds}


def differences(base: dict[int, NodeState], now: dict[int, NodeState], files0: list[str],
                files: list[str]) -> list[str]:
    """Everything that must be exactly back to the state before the first job."""
    problems = []
    for pid, b in base.items():
        n = now[pid]
        if n.children != b.children:
            problems.append(f"node {pid}: children {b.children} -> {n.children}")
        now_fds = processes(n)
        for proc, fds in processes(b).items():
            if proc not in now_fds:
                continue
            before, after = real_fds(fds), real_fds(now_fds[proc])
            if sorted(before.values()) != sorted(after.values()):
                what = "daemon" if proc == pid else f"child {proc}"
                problems.append(f"node {pid} {what}: connections/files {fd_diff(before, after)}")
    if files != files0:
        problems.append(f"run directories: {files0} -> {files}")
    return problems


def growth(mid: dict[int, NodeState], now: dict[int, NodeState], jobs: int) -> list[str]:
    """zmq-internal descriptors must not grow from job to job."""
    problems = []
    for pid, m in mid.items():
        now_fds = processes(now[pid])
        for proc, fds in processes(m).items():
            if proc in now_fds and internal_count(now_fds[proc]) > internal_count(fds):
                problems.append(f"node {pid} process {proc}: eventfd/epoll descriptors grew "
                                f"from {internal_count(fds)} to {internal_count(now_fds[proc])} "
                                f"between job {jobs // 2} and job {jobs}")
    return problems


@pytest.mark.parametrize("jobs", [JOBS, pytest.param(200, marks=pytest.mark.slow)])
def test_jobs_in_a_row_leave_the_nodes_at_baseline(jobs: int, text_files,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a persistent 2-node cluster whose run directories live in a private $TMPDIR
    # (a short one: the nodes' ipc socket paths live there, see test_cli's long-TMPDIR test)
    runs = Path(tempfile.mkdtemp(prefix="pymr-bl-"))
    monkeypatch.setenv("TMPDIR", str(runs))
    try:
        _run_jobs(jobs, runs, text_files)
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def _run_jobs(jobs: int, runs: Path, text_files) -> None:
    text = text_files(1 << 20, seed=31)
    expected = text_files.expected(text)
    spec = builtin_spec("wordcount")
    opts = JobOptions(split_size=128 << 10, num_partitions=3)

    def one_job() -> None:
        got: list[bytes] = []

        def consume(records: Iterator[tuple[bytes, int]], summary: JobSummary) -> None:
            got.append(helpers.expected_tsv(dict(records)))

        run_job(spec, resolve_inputs([str(text)]), opts, consume,
                endpoints=cluster.control_endpoints, key=cluster.key)
        assert got == [expected]

    with LocalCluster(nodes=2, slots=1) as cluster:
        cluster.wait_ready()  # nodes answer before their executors have connected
        pids = [n.process.pid for n in cluster.nodes]
        files0 = run_dir_files(runs)
        assert len([f for f in files0 if os.sep not in f]) == 2, files0
        base = {pid: node_state(pid) for pid in pids}
        assert all(s.children for s in base.values()), "nodes without executors"

        # When the first job runs: the RSS reference
        one_job()
        helpers.wait_until(lambda: not differences(
            base, {pid: node_state(pid) for pid in pids}, files0, run_dir_files(runs)), 3.0)
        after_first = {pid: node_state(pid) for pid in pids}

        # and nineteen more
        for i in range(2, jobs + 1):
            one_job()
            if i == jobs // 2:
                helpers.wait_until(lambda: not differences(
                    base, {pid: node_state(pid) for pid in pids}, files0, run_dir_files(runs)),
                    3.0)
                middle = {pid: node_state(pid) for pid in pids}

        # Then connections, files, children and run-directory files are exactly as before the
        # first job (given time for zmq to close the last job's connections) ...
        helpers.wait_until(lambda: not differences(
            base, {pid: node_state(pid) for pid in pids}, files0, run_dir_files(runs)),
            SETTLE_S)
        final = {pid: node_state(pid) for pid in pids}
        problems = differences(base, final, files0, run_dir_files(runs))
        problems += growth(middle, final, jobs)
        # ... and RSS is within a small tolerance of its value after the first job
        for pid in pids:
            first, last = after_first[pid], final[pid]
            if last.rss_kib > first.rss_kib + DAEMON_RSS_TOLERANCE_KIB:
                problems.append(f"node {pid}: RSS {first.rss_kib} -> {last.rss_kib} KiB")
            for child, rss in first.child_rss_kib.items():
                now = last.child_rss_kib.get(child)
                if now is not None and now > rss + EXECUTOR_RSS_TOLERANCE_KIB:
                    problems.append(f"node {pid} child {child}: RSS {rss} -> {now} KiB")
        assert not problems, f"after {jobs} jobs:\n  " + "\n  ".join(problems)
