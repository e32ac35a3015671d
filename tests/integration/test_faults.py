"""Fault tolerance on loopback: every answer is compared byte for byte with the
single-process reference count.

Each test starts its own embedded-style cluster (``LocalCluster``: three node daemons on
127.0.0.1, one executor each) and runs the master in a subprocess
(``tests/faults_helpers.py``) that stops at every report of its reporter until the test
answers, so a fault is injected at an observed point of the job -- after the k-th executed
task, at the reduce phase, after the consumer took k records -- never after a sleep. Every
job is bounded (``JOB_BOUND_S``: a hung master is killed, its stacks are shown and the
test fails); SIGSTOPped processes always get SIGCONT; every process is reaped (the
``no_leaked_children`` fixture checks it).

The master's death timeout is ``DEATH_S`` (JobOptions.death_timeout_s). Several seeds of
the random-moment kill run only with ``--run-slow``.
"""

from __future__ import annotations

import glob
import os
import random
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pymr.config import HEARTBEAT_INTERVAL_S
from pymr.net.status import probe
from pymr.runtime.cluster import LocalCluster
from tests import helpers
from tests.faults_helpers import (
    Freezer,
    HeartbeatWatch,
    Hooks,
    MasterProcess,
    Outcome,
    RunDirSweeper,
    SlowNode,
    alive,
    executor_pids,
    kill_node,
    node_pids,
    run_master,
    signal_all,
    wait_gone,
)

K = 1 << 10
M = 1 << 20
NODES = 3
#: The master's death timeout in these tests.
DEATH_S = 3.0
#: Upper bound of one job's wall time, faults and recovery included (a clean job here
#: takes 1-3 s; recovery adds the death timeout and a few resend rounds).
JOB_BOUND_S = 45.0
#: How long after a node's death the master may take to act: the death timeout plus a
#: heartbeat period (the last heartbeat may have left just before the kill) and the
#: master's poll period.
DETECT_BOUND_S = DEATH_S + HEARTBEAT_INTERVAL_S + 1.0

#: The nodes' lease timeout in the master-killed test (the default is 10 s).
LEASE_S = 4.0

SEEDS = [1, 2]
SLOW_SEEDS = [3, 4, 5, 6, 7, 8]

FAILING_JOB = helpers.FAILING_JOB


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """Three nodes of one slot each on loopback; stopped and reaped after the test, and the
    run directories of the nodes a test killed removed. Parametrize indirectly with a dict
    of LocalCluster node options to tune them."""
    with LocalCluster(nodes=NODES, slots=1, **getattr(request, "param", {})) as c:
        sweeper = RunDirSweeper(c)
        yield c
    sweeper.sweep()


@pytest.fixture(scope="session")
def text_8m(text_files) -> Path:
    """8 MiB of generated text: 128 splits of 64K."""
    return text_files(8 * M, seed=11)


@pytest.fixture(scope="session")
def many_words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Text with 450,000 distinct whitespace tokens (counts 1-3): three partitions of
    150,000 records, i.e. three result chunks each, so a partition's fetch takes several
    requests."""
    path = tmp_path_factory.mktemp("many") / "many-words.txt"
    rng = random.Random("many-words")
    tokens = []
    for i in range(450_000):
        token = b"%s%d" % (rng.choice([b"k", b"w", b"z", b"Q", b"x-", b"y_"]), i)
        tokens.extend([token] * (1 + i % 3))
    rng.shuffle(tokens)
    with open(path, "wb") as f:
        for i in range(0, len(tokens), 12):
            f.write(b" ".join(tokens[i:i + 12]) + b"\n")
    return path


@pytest.fixture
def settled(cluster: LocalCluster) -> Iterator[Callable[[Hooks], None]]:
    """``settled(hooks)``: hold the job at its start until every node has published two
    more heartbeats, so the master has heard from each (its death timer runs from a node's
    first heartbeat) before a fault that is not about the start of a job."""
    with HeartbeatWatch(cluster) as watch:
        yield lambda hooks: hooks.at_start(lambda: watch.wait_beats(2, 10.0))


def options(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"split_size": 64 * K, "death_timeout_s": DEATH_S}
    base.update(kw)
    return base


# ------------------------------------------------------------------ checks


def assert_exact(outcome: Outcome, out: Path, expected: bytes) -> None:
    """The job succeeded, consumed once, and wrote exactly the reference answer."""
    assert outcome.kind == "done", why(outcome)
    assert outcome.consumed == 1
    helpers.assert_same_answer(out.read_bytes(), expected)


def why(outcome: Outcome) -> str:
    """How a job ended, for assertion messages: the error and the master's traceback."""
    err = {k: v for k, v in outcome.error.items() if k not in ("traceback", "master_traceback")}
    return (f"{outcome.kind}: {err}\n{outcome.error.get('master_traceback', '')}"
            f"\nmaster stderr:\n{outcome.stderr}")


def tasks_of(path: Path, split: int = 64 * K) -> int:
    return max(1, path.stat().st_size // split)


def lost_events(hooks: Hooks) -> list[str]:
    return [x for x in hooks.event_texts() if " lost (" in x]


# ------------------------------------------------------------------ node loss while mapping


def _kill_while_mapping(seed: int, cluster: LocalCluster, settled: Callable[[Hooks], None],
                        text: Path, text_files, tmp_path: Path) -> None:
    # Given three nodes, 8 MiB of text in 64K splits, and a victim and a moment drawn
    # from the seed (the k-th executed task, anywhere in the map phase); even seeds first
    # let the master hear every node's heartbeat, odd ones start at once (the map phase
    # may then end before the first heartbeat)
    rng = random.Random(f"kill-while-mapping-{seed}")
    victim = rng.randrange(NODES)
    k = rng.randint(1, tasks_of(text) * 3 // 4)
    daemon_only = rng.random() < 0.25   # sometimes the executors survive their daemon
    hooks = Hooks()
    if seed % 2 == 0:
        settled(hooks)
    killed: list[int] = []

    def kill() -> None:
        killed.extend(node_pids(cluster, victim))  # the executors too, if they survive
        kill_node(cluster, victim, daemon_only=daemon_only)

    hooks.at_advance(k, kill)
    out = tmp_path / "out.tsv"
    # When the victim is killed with SIGKILL at that moment
    outcome = run_master(cluster, [text], out, hooks, timeout_s=JOB_BOUND_S,
                         options=options())
    # Then the job still gives exactly the reference answer, one node was lost, and the
    # loss did not count against any task's attempts
    assert killed, f"the job ended before the {k}-th task was executed"
    assert_exact(outcome, out, text_files.expected(text))
    assert outcome.summary["nodes_lost"] == [f"local{victim}"]
    assert outcome.summary["retries"] == 0
    assert lost_events(hooks), hooks.event_texts()
    # ... and executors orphaned by their daemon's death exit by themselves
    assert not wait_gone(killed, 10.0), "processes of the killed node still run"


@pytest.mark.parametrize("seed", SEEDS)
def test_node_killed_while_mapping(seed: int, cluster: LocalCluster, settled, text_8m: Path,
                                   text_files, tmp_path: Path) -> None:
    _kill_while_mapping(seed, cluster, settled, text_8m, text_files, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_node_killed_while_mapping_more_seeds(seed: int, cluster: LocalCluster, settled,
                                              text_8m: Path, text_files, tmp_path: Path) -> None:
    _kill_while_mapping(seed, cluster, settled, text_8m, text_files, tmp_path)


#: Jobs of a user's own (not built in): the smallest job (no combine: values travel as
#: lists) and an inverted index (map(line, pos), list values, a sorting reduce).
USER_JOBS = {
    "bigrams": '''
from pymr.api import count

def map(line):
    count("lines")
    words = line.split()
    for a, b in zip(words, words[1:]):
        yield a + " " + b, 1

def reduce(key, values):
    return sum(values)
''',
    "index": '''
def map(line, pos):
    for word in set(line.split()):
        yield word, pos.line

def reduce(word, lines):
    return sorted(lines)
''',
}


def user_job_reference(job: str, text: Path) -> bytes:
    """The job's answer from a plain loop over the lines, as TSV."""
    import io

    from pymr.engine.output import write_tsv

    lines = [x.decode("utf-8", "replace") for x in text.read_bytes().split(b"\n")]
    if lines and lines[-1] == "":
        lines.pop()
    acc: dict[str, Any] = {}
    for number, line in enumerate(lines, 1):
        words = line.split()
        if job == "bigrams":
            for a, b in zip(words, words[1:], strict=False):
                acc[a + " " + b] = acc.get(a + " " + b, 0) + 1
        else:
            for w in set(words):
                acc.setdefault(w, []).append(number)
    out = io.BytesIO()
    write_tsv(sorted((k, sorted(v) if isinstance(v, list) else v) for k, v in acc.items()),
              out)
    return out.getvalue()


@pytest.mark.parametrize("job", sorted(USER_JOBS))
def test_node_killed_mid_job_with_a_user_job(job: str, cluster: LocalCluster, settled,
                                             text_8m: Path, tmp_path: Path) -> None:
    # Given a job file of a user's own on three nodes, and a node killed halfway through
    # the map phase
    hooks = Hooks()
    settled(hooks)
    killed: list[int] = []
    hooks.at_advance(tasks_of(text_8m) // 2, lambda: killed.extend(kill_node(cluster, 2)))
    out = tmp_path / "out.tsv"
    outcome = run_master(cluster, [text_8m], out, hooks, timeout_s=JOB_BOUND_S,
                         options=options(), job_source=USER_JOBS[job], job_name=job)
    # Then the user job's answer is exact, as word count's is
    assert killed, f"the map phase ended before the fault ({hooks.advances} tasks)"
    assert_exact(outcome, out, user_job_reference(job, text_8m))
    assert outcome.summary["nodes_lost"] == ["local2"]
    if job == "bigrams":  # counters of lost outputs are taken back: every line counts once
        assert outcome.summary["counters"]["lines"] == text_8m.read_bytes().count(b"\n")


def test_reducer_killed_during_the_shuffle(cluster: LocalCluster, settled, many_words: Path,
                                           tmp_path: Path) -> None:
    # Given 450,000 distinct words, executors that flush an output every 20,000 distinct
    # words (so map outputs shuffle to the reducers during the whole map phase)
    expected = helpers.expected_tsv(helpers.reference_for_files([many_words], "whitespace"))
    hooks = Hooks()
    settled(hooks)
    killed: list[int] = []
    k = tasks_of(many_words, 256 * K) // 2
    hooks.at_advance(k, lambda: killed.extend(kill_node(cluster, 1)))
    out = tmp_path / "out.tsv"
    # When a node (a reducer of one partition, and a mapper) is killed halfway
    outcome = run_master(cluster, [many_words], out, hooks, timeout_s=JOB_BOUND_S,
                         options=options(split_size=256 * K, params={"tokenizer": "whitespace"},
                                         flush_key_limit=20_000))
    # Then its partition is rebuilt elsewhere from the retained outputs and the answer is
    # exact
    assert killed, f"the map phase ended before the fault ({hooks.advances} tasks)"
    assert_exact(outcome, out, expected)
    assert outcome.summary["nodes_lost"] == ["local1"]


def test_node_killed_while_it_holds_spilled_runs(cluster: LocalCluster, settled,
                                                many_words: Path, tmp_path: Path) -> None:
    # Given 450,000 distinct words and a memory budget of 3 MiB per node (1 MiB per
    # executor): every reducer spills sorted runs to its disk during the map phase
    expected = helpers.expected_tsv(helpers.reference_for_files([many_words], "whitespace"))
    hooks = Hooks()
    settled(hooks)
    killed: list[int] = []
    hooks.at_advance(tasks_of(many_words, 256 * K) * 2 // 3,
                     lambda: killed.extend(kill_node(cluster, 1)))
    out = tmp_path / "out.tsv"
    # When a node that holds spilled runs is killed
    outcome = run_master(cluster, [many_words], out, hooks, timeout_s=JOB_BOUND_S,
                         options=options(split_size=256 * K, params={"tokenizer": "whitespace"},
                                         memory=3 << 20))
    # Then its partitions are rebuilt elsewhere and the answer is exact
    assert killed, f"the map phase ended before the fault ({hooks.advances} tasks)"
    assert_exact(outcome, out, expected)
    assert outcome.summary["nodes_lost"] == ["local1"]
    assert outcome.summary["spilled"], "the budget did not make the reducers spill"


def spilled_files(cluster: LocalCluster, node_ids: list[str]) -> list[str]:
    """Retained map outputs the embedded nodes spilled (in their run dirs)."""
    return [f for n in node_ids for f in glob.glob(os.path.join(
        tempfile.gettempdir(), f"pymr-node-{n}-*", "spill", "*", "*"))]


@pytest.mark.parametrize("cluster", [{"retain_memory": 0}], indirect=True)
def test_reducer_killed_and_rebuilt_from_spilled_outputs(cluster: LocalCluster, settled,
                                                         many_words: Path,
                                                         tmp_path: Path) -> None:
    # Given nodes that keep no retained map output in memory (every output is spilled to
    # disk as soon as it is sent), and outputs flushed every 20,000 distinct words
    expected = helpers.expected_tsv(helpers.reference_for_files([many_words], "whitespace"))
    node_ids = RunDirSweeper(cluster).node_ids
    hooks = Hooks()
    settled(hooks)
    killed: list[int] = []
    spilled_then: list[str] = []

    def kill() -> None:
        spilled_then.extend(spilled_files(cluster, node_ids))
        killed.extend(kill_node(cluster, 1))

    hooks.at_advance(tasks_of(many_words, 256 * K) // 2, kill)
    out = tmp_path / "out.tsv"
    # When a reducer is killed halfway
    outcome = run_master(cluster, [many_words], out, hooks, timeout_s=JOB_BOUND_S,
                         options=options(split_size=256 * K, params={"tokenizer": "whitespace"},
                                         flush_key_limit=20_000))
    # Then outputs were on disk, its partition was rebuilt from them, the answer is exact
    assert killed and spilled_then, "no output was spilled before the fault"
    assert_exact(outcome, out, expected)
    assert outcome.summary["nodes_lost"] == ["local1"]
    # ... and the live nodes removed their spilled files when the job ended
    live = [n for i, n in enumerate(node_ids) if i != 1]
    assert helpers.wait_until(lambda: not spilled_files(cluster, live), 5.0), \
        spilled_files(cluster, live)


def test_mapper_killed_after_its_output_was_committed(cluster: LocalCluster, settled,
                                                      many_words: Path, tmp_path: Path) -> None:
    # Given executors that batch their whole map phase into one output each (flushed
    # when the master has seen every task executed), and 450,000 distinct words
    expected = helpers.expected_tsv(helpers.reference_for_files([many_words], "whitespace"))
    hooks = Hooks()
    settled(hooks)
    killed: list[int] = []
    # When the master has just committed the last output (the reduce phase starts), the
    # reducers are still receiving and merging: a node is killed then, so its committed
    # outputs are gone before every reducer has all of them
    hooks.at_phase("reduce", lambda: killed.extend(kill_node(cluster, 2)))
    out = tmp_path / "out.tsv"
    outcome = run_master(cluster, [many_words], out, hooks, timeout_s=JOB_BOUND_S,
                         options=options(split_size=256 * K, params={"tokenizer": "whitespace"}))
    # Then its tasks run again where reducers miss them, its partition moves, and every
    # word still counts exactly once
    assert killed
    assert_exact(outcome, out, expected)
    assert outcome.summary["nodes_lost"] == ["local2"]
    assert "merge" in hooks.phases


#: Word count ordered by key: the master merges the reducers' formatted TSV lines.
BY_KEY_COUNT = """
ORDER = "key"

def map(line):
    for word in line.split():
        yield word, 1

def reduce(key, values):
    return sum(values)

combine = reduce
"""


@pytest.mark.parametrize("lines", [False, True], ids=["records", "lines"])
def test_reducer_killed_while_the_master_fetches(cluster: LocalCluster, settled, many_words: Path,
                                                 tmp_path: Path, lines: bool) -> None:
    # Given three partitions of three result chunks each, fetched one chunk at a time: as
    # records (word count, ordered by count) or as TSV lines formatted by the reducers (a
    # count ordered by key)
    counts = helpers.reference_for_files([many_words], "whitespace")
    expected = b"".join(b"%s\t%d\n" % kv for kv in sorted(counts.items())) if lines \
        else helpers.expected_tsv(counts)
    records = expected.count(b"\n")
    at = records // 6
    hooks = Hooks()
    settled(hooks)
    killed: list[int] = []
    # When the consumer has taken a sixth of the records (every partition is partly
    # fetched), the reducer of partition 0's node is killed
    hooks.at_records(at, lambda: killed.extend(kill_node(cluster, 0)))
    out = tmp_path / "out.tsv"
    outcome = run_master(cluster, [many_words], out, hooks, timeout_s=JOB_BOUND_S,
                         options=options(split_size=256 * K, fetch_credit=1,
                                         params={} if lines else {"tokenizer": "whitespace"}),
                         pause_records=[at], lines=lines,
                         job_source=BY_KEY_COUNT if lines else None)
    # Then its partition is rebuilt on another node and the fetch resumes where it stopped:
    # no record is missing or repeated
    assert killed, "the fetch ended before the fault"
    assert_exact(outcome, out, expected)
    assert outcome.summary["nodes_lost"] == ["local0"]


@pytest.mark.parametrize("lines", [False, True], ids=["records", "lines"])
def test_lost_partition_replies_are_fetched_again(cluster: LocalCluster, settled,
                                                  many_words: Path, tmp_path: Path,
                                                  lines: bool) -> None:
    # Given a master that loses the first three partition chunks it is sent (as a
    # connection reset loses what a socket still queued), fetching one chunk at a time
    counts = helpers.reference_for_files([many_words], "whitespace")
    expected = b"".join(b"%s\t%d\n" % kv for kv in sorted(counts.items())) if lines \
        else helpers.expected_tsv(counts)
    hooks = Hooks()
    settled(hooks)
    out = tmp_path / "out.tsv"
    # When the job runs,
    outcome = run_master(cluster, [many_words], out, hooks, timeout_s=JOB_BOUND_S,
                         options=options(split_size=256 * K, fetch_credit=1,
                                         params={} if lines else {"tokenizer": "whitespace"}),
                         lines=lines, job_source=BY_KEY_COUNT if lines else None,
                         lose_partition_data=3, fetch_retry_s=0.5)
    # then the master asked for the lost windows again after the silence (one ask may
    # cover several lost chunks of a partition), and the answer is exact: no record
    # missing or repeated.
    assert_exact(outcome, out, expected)
    assert outcome.summary["fetches_asked_again"] >= 1, outcome.summary
    assert outcome.summary["nodes_lost"] == []


# ------------------------------------------------------------------ zombie


def test_frozen_node_comes_back_as_a_zombie(cluster: LocalCluster, settled, text_8m: Path,
                                            text_files, tmp_path: Path) -> None:
    # Given a job whose executors flush small outputs (so a thawed node has output to send)
    expected = text_files.expected(text_8m)
    hooks = Hooks()
    settled(hooks)
    victim = 1
    seen: set[str] = set()
    thawed: list[float] = []
    with Freezer() as freezer:

        def saw(what: str) -> None:
            seen.add(what)
            if seen == {"lost", "reduce"} and not thawed:
                freezer.thaw()
                thawed.append(time.monotonic())

        # When a node is frozen (SIGSTOP, daemon and executors) a quarter into the map
        # phase, declared dead, and thawed (SIGCONT) once it was declared dead and its
        # tasks ran elsewhere (every task committed: the reduce phase)
        hooks.at_advance(tasks_of(text_8m) // 4,
                         lambda: freezer.freeze(node_pids(cluster, victim)))
        hooks.at_event(" lost (", lambda: saw("lost"))
        hooks.at_phase("reduce", lambda: saw("reduce"))
        out = tmp_path / "out.tsv"
        outcome = run_master(cluster, [text_8m], out, hooks, timeout_s=JOB_BOUND_S,
                             options=options(flush_key_limit=5_000))
    # Then its stale attempts and old-epoch data change nothing: the answer is exact
    assert freezer.stopped == [] and thawed, f"the node was not frozen and thawed: {seen}"
    assert_exact(outcome, out, expected)
    assert outcome.summary["nodes_lost"] == [f"local{victim}"]
    lost_at = hooks.first_event(" lost (")
    assert lost_at is not None and thawed and lost_at < thawed[0]
    # ... and the zombie, back to life, serves the next job with the others
    out2 = tmp_path / "out2.tsv"
    again = run_master(cluster, [text_8m], out2, timeout_s=JOB_BOUND_S, options=options())
    assert_exact(again, out2, expected)
    assert again.summary["nodes_lost"] == []
    assert len(again.summary["nodes"]) == NODES


# ------------------------------------------------------------------ executors and task errors


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_executor_killed_or_stopped_is_replaced_and_its_work_redone(
        cluster: LocalCluster, settled, text_8m: Path, text_files, tmp_path: Path,
        sig: int) -> None:
    # Given a node's executor (which maps, and reduces the node's partition; the node
    # heartbeats for it, so the master cannot see it stop)
    victim = 0 if sig == signal.SIGKILL else 1
    (executor,) = executor_pids(cluster, victim)
    hooks = Hooks()
    settled(hooks)
    hooks.at_advance(tasks_of(text_8m) // 3, lambda: signal_all([executor], sig))
    out = tmp_path / "out.tsv"
    try:
        # When it is killed, or stopped and never continued, a third into the map phase
        outcome = run_master(cluster, [text_8m], out, hooks, timeout_s=JOB_BOUND_S,
                             options=options())
    finally:
        if alive(executor):
            signal_all([executor], signal.SIGKILL)  # the node's teardown must not wait on it
    # Then the node stays in the job, replaces the executor (killing a stopped one after
    # 4 s), its tasks and partition are redone, and the answer is exact
    assert_exact(outcome, out, text_files.expected(text_8m))
    assert outcome.summary["nodes_lost"] == []
    word = "executor" if sig == signal.SIGKILL else "stopped"
    assert any(word in x.lower() for x in hooks.event_texts()), hooks.event_texts()
    replacements = executor_pids(cluster, victim)
    assert len(replacements) == 1 and replacements[0] != executor
    assert not alive(executor)


def test_task_failing_on_every_attempt_fails_the_job_cleanly(cluster: LocalCluster, write_text,
                                                             text_files, tmp_path: Path) -> None:
    # Given a job whose map raises on every split, at most 3 attempts per task
    path = write_text("in.txt", "some words here\n" * 32768)
    hooks = Hooks()
    out = tmp_path / "out.tsv"
    # When it runs on the three nodes
    outcome = run_master(cluster, [path], out, hooks, timeout_s=JOB_BOUND_S,
                         options=options(split_size=16 * K, max_attempts=3),
                         job_source=FAILING_JOB, job_name="boom")
    # Then the job fails with the remote error (node, task, attempt, traceback), the
    # failures were reported as they happened, and nothing was output
    assert outcome.kind == "error", why(outcome)
    err = outcome.error
    assert err["type"] == "TaskFailed", why(outcome)
    assert err["exc_type"] == "ValueError"
    assert "boom: this job always fails" in err["message"]
    assert "Traceback" in err["traceback"] and "in map" in err["traceback"]
    assert err["attempt"] >= 3
    assert err["node"].startswith("local")
    assert outcome.consumed == 0 and not out.exists()
    failures = [x for x in hooks.event_texts() if "failed on" in x]
    assert len(failures) >= 3, hooks.event_texts()
    assert any("ValueError: boom" in x for x in failures)
    # ... and a task that failed was retried on another node (three were available)
    nodes_of: dict[str, set[str]] = {}
    for text in failures:
        match = re.match(r"task (\d+) attempt \d+ failed on (\S+):", text)
        assert match, text
        nodes_of.setdefault(match[1], set()).add(match[2])
    retried = [t for t in nodes_of if sum(f"task {t} attempt" in x for x in failures) >= 2]
    assert retried and all(len(nodes_of[t]) >= 2 for t in retried), \
        f"failed tasks were retried on the same node: {failures}"
    # ... and the nodes dropped the failed job: the next job on them is exact
    good = text_files(512 * K, seed=31)
    out2 = tmp_path / "out2.tsv"
    again = run_master(cluster, [good], out2, timeout_s=JOB_BOUND_S, options=options())
    assert_exact(again, out2, text_files.expected(good))


# ------------------------------------------------------------------ the master


def node_jobs(cluster: LocalCluster) -> list[list[str]] | None:
    """The job ids each node holds, or None if a node did not answer."""
    found = probe([(ep, None) for ep in cluster.control_endpoints], cluster.key, timeout_s=2.0)
    if any(st.status is None for st in found):
        return None
    return [list(st.status.jobs) + (["busy"] if st.status.busy else [])
            for st in found if st.status is not None]


@pytest.mark.parametrize("cluster", [{"lease_timeout_s": LEASE_S}], indirect=True)
def test_master_killed_mid_job_then_the_nodes_serve_the_next(cluster: LocalCluster, text_8m: Path,
                                                             text_files, tmp_path: Path) -> None:
    # Given a job well into its map phase
    hooks = Hooks()
    victim = MasterProcess(cluster, [text_8m], tmp_path / "never.tsv", options=options())
    with victim:
        hooks.at_advance(tasks_of(text_8m) // 3, victim.kill)
        # When its master is killed with SIGKILL (it never sends JobEnd)
        first = victim.run(hooks, timeout_s=JOB_BOUND_S)
        killed_at = time.monotonic()
    assert first.kind == "killed" and first.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.tsv").exists()
    # Then another job on the same nodes succeeds with the exact answer
    other = text_files(2 * M, seed=32)
    out = tmp_path / "out.tsv"
    outcome = run_master(cluster, [other], out, timeout_s=JOB_BOUND_S, options=options())
    assert_exact(outcome, out, text_files.expected(other))
    assert outcome.summary["nodes_lost"] == []
    # ... and every node drops the orphaned job by itself when its lease expires, and its
    # slots are free again
    bound = LEASE_S + 2 * HEARTBEAT_INTERVAL_S + 3.0
    left = helpers.wait_until(lambda: node_jobs(cluster) == [[]] * NODES,
                              max(0.0, killed_at + bound - time.monotonic()), interval_s=0.5)
    assert left, f"nodes still hold a job {bound:.0f} s after its master died: " \
                 f"{node_jobs(cluster)}"


def test_two_jobs_at_once_share_the_nodes(cluster: LocalCluster, text_8m: Path, text_files,
                                          tmp_path: Path) -> None:
    # Given two inputs and two masters started together on the same three nodes
    second = text_files(6 * M, seed=33)
    jobs = [(text_8m, "words"), (second, "whitespace")]
    masters = [MasterProcess(cluster, [path], tmp_path / f"out{i}.tsv", pause_on=(),
                             options=options(params={"tokenizer": tok}))
               for i, (path, tok) in enumerate(jobs)]
    hooks = [Hooks(), Hooks()]
    outcomes: list[Outcome | BaseException | None] = [None, None]

    def drive(i: int) -> None:
        try:
            outcomes[i] = masters[i].run(hooks[i], JOB_BOUND_S)
        except BaseException as exc:  # reported by the test thread
            outcomes[i] = exc

    threads = [threading.Thread(target=drive, args=(i,), name=f"master-{i}") for i in (0, 1)]
    try:
        for m in masters:
            m.start()
        # When both run at once
        for t in threads:
            t.start()
        for t in threads:
            t.join(JOB_BOUND_S + 15)
    finally:
        for m in masters:
            m.close()
        for t in threads:
            t.join(15)
    # Then both answers are exact and the jobs overlapped in time
    for i, (path, tok) in enumerate(jobs):
        result = outcomes[i]
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        assert_exact(result, tmp_path / f"out{i}.tsv", text_files.expected(path, tok))
    # ... and they ran at the same time, both making progress while the other ran (the
    # nodes' slots are shared between the jobs, not given to the first one until it ends)
    assert all(h.started_at is not None for h in hooks)
    both_from = max(h.started_at or 0.0 for h in hooks)
    both_until = min(h.lines[-1]["at"] for h in hooks)
    assert both_from < both_until, "the two jobs did not overlap"
    for h in hooks:
        moved = [x for x in h.lines
                 if x["t"] == "advance" and both_from <= x["at"] <= both_until]
        assert moved, "a job made no progress while the other one ran"


# ------------------------------------------------------------------ no node left


@pytest.mark.parametrize("moment", ["at-start", "mid-map"])
def test_no_live_node_left_fails_within_the_detection_time(moment: str, cluster: LocalCluster,
                                                           settled, text_8m: Path,
                                                           tmp_path: Path) -> None:
    # Given a job on three nodes
    hooks = Hooks()
    if moment == "mid-map":
        settled(hooks)
    killed_at: list[float] = []

    def kill_all() -> None:
        for i in range(NODES):
            kill_node(cluster, i)
        killed_at.append(time.monotonic())

    # When every node is killed, right when the job starts (before any heartbeat reached
    # the master) or in the middle of the map phase
    if moment == "at-start":
        hooks.at_start(kill_all)
    else:
        hooks.at_advance(tasks_of(text_8m) // 2, kill_all)
    out = tmp_path / "out.tsv"
    outcome = run_master(cluster, [text_8m], out, hooks, timeout_s=JOB_BOUND_S,
                         options=options())
    # Then the job fails with ClusterLost, saying why, within the detection time, and
    # writes nothing
    assert killed_at, f"the map phase ended before the fault ({hooks.advances} tasks)"
    assert outcome.kind == "error", why(outcome)
    assert outcome.error["type"] == "ClusterLost", why(outcome)
    assert "no live node" in outcome.error["message"]
    took = outcome.error["at"] - killed_at[0]
    assert took <= DETECT_BOUND_S, f"ClusterLost {took:.1f} s after the last node died"
    assert outcome.consumed == 0 and not out.exists()


# ------------------------------------------------------------------ slow node


def test_slow_node_is_overtaken_by_backups(cluster: LocalCluster, settled, text_8m: Path,
                                           text_files, tmp_path: Path) -> None:
    # Given one node ten times slower than its share of the CPU (a cgroup CPU quota, or
    # SIGSTOP/SIGCONT duty cycling where cgroup v1 is not available)
    share = min(1.0, (os.cpu_count() or 1) / NODES)
    hooks = Hooks()
    settled(hooks)
    out = tmp_path / "out.tsv"
    with SlowNode(cluster, 2, factor=10, share_cpus=share, max_duration_s=JOB_BOUND_S):
        # When a job runs on the three nodes
        # (1 MiB splits: a task takes well over the backup threshold on the slow node)
        outcome = run_master(cluster, [text_8m], out, hooks, timeout_s=JOB_BOUND_S,
                             options=options(split_size=1 * M))
    # Then idle slots ran backup attempts of its slow tasks, the answer is exact, and no
    # node was declared dead
    assert_exact(outcome, out, text_files.expected(text_8m))
    assert outcome.summary["backups"] >= 1, hooks.event_texts()
    assert any("backup attempt" in x for x in hooks.event_texts())
    assert outcome.summary["nodes_lost"] == []
    # ... and the attempts that lost the race were cancelled, not left to run
    assert outcome.summary["cancelled"] >= 1, hooks.event_texts()
    assert any("cancelled" in x for x in hooks.event_texts())
