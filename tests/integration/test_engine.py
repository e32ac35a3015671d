"""The engine end to end on loopback: cluster shapes, the library API, failures, Ctrl-C.

Answers are compared byte for byte with the reference rule over generated multilingual
text (Greek final sigma, Turkish dotted I, NFD accents, CJK, CRLF lines ...), across split
sizes, node counts, slots, partition counts and both tokenizers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymr.cli import main as cli
from pymr.config import JobOptions
from pymr.engine.inputs import resolve_inputs
from pymr.engine.summary import JobSummary
from pymr.errors import JobError, TaskFailed
from pymr.jobs import JobSpec, builtin_spec
from pymr.runtime.runner import run_job
from tests import helpers

K = 1 << 10

# (nodes, slots, partitions or None for the default, split size, tokenizer)
MATRIX = [
    (1, 1, 1, "64K", "words"),
    (1, 2, 3, "256K", "whitespace"),
    (2, 1, 7, "64K", "words"),
    (2, 2, 1, "1M", "whitespace"),
    (2, 1, None, "100K", "words"),
    (3, 1, 3, "128K", "words"),
    (3, 1, 7, "64K", "whitespace"),
    (1, 1, 3, "64M", "words"),          # one split holds the whole file
]


@pytest.mark.parametrize(
    "nodes,slots,partitions,split,tokenizer", MATRIX,
    ids=[f"n{n}-s{s}-r{r or 'default'}-{sp}-{t}" for n, s, r, sp, t in MATRIX])
def test_cli_answer_is_byte_identical_to_the_reference(
        nodes: int, slots: int, partitions: int | None, split: str, tokenizer: str,
        text_4m: Path, text_files, tmp_path: Path, capsysbinary) -> None:
    # Given 4 MiB of generated text and an embedded cluster of this shape
    target = tmp_path / "counts.tsv"
    argv = ["job", "wordcount", str(text_4m), "--local", str(nodes), "--slots", str(slots),
            "--split-size", split, "--tokenizer", tokenizer, "-o", str(target)]
    if partitions is not None:
        argv += ["--partitions", str(partitions)]
    # When the job runs
    code = cli.main(argv)
    _, err = capsysbinary.readouterr()
    # Then the file holds exactly the reference answer
    assert code == 0, err.decode(errors="replace")
    assert target.read_bytes() == text_files.expected(text_4m, tokenizer)
    assert b"Traceback" not in err


def test_library_api_streams_the_sorted_records_once(text_files) -> None:
    # Given 1 MiB of text cut into 64K splits
    text = text_files(1 << 20, seed=21)
    counts = text_files.counts(text)
    calls: list[tuple[list[tuple[bytes, int]], JobSummary]] = []

    def consume(records: Iterator[tuple[bytes, int]], summary: JobSummary) -> None:
        calls.append((list(records), summary))

    # When run_job runs it on two local nodes with 5 partitions
    summary = run_job(builtin_spec("wordcount"), resolve_inputs([str(text)]),
                      JobOptions(split_size=64 * K, num_partitions=5), consume,
                      local_nodes=2, slots=1)
    # Then consume was called once with the records in order, and the summary adds up
    assert len(calls) == 1
    records, seen_summary = calls[0]
    assert records == sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert seen_summary is summary
    assert summary.counters["words"] == sum(counts.values())
    assert summary.records == len(counts)
    assert summary.input_bytes == text.stat().st_size
    assert summary.tasks >= (1 << 20) // (64 * K)
    assert len(summary.nodes) == 2
    assert "invalid_utf8" not in summary.counters


def test_persistent_cluster_runs_jobs_with_bytes_shipped(text_files) -> None:
    """Nodes that did not start with this job receive the split bytes (no offset reads)."""
    from pymr.runtime.cluster import LocalCluster

    text = text_files(512 * K, seed=22)
    got: list[bytes] = []

    def consume(records: Iterator[tuple[bytes, int]], summary: JobSummary) -> None:
        got.append(helpers.expected_tsv(dict(records)))

    with LocalCluster(nodes=2, slots=1) as cluster:
        for tokenizer in ("words", "whitespace"):
            got.clear()
            run_job(builtin_spec("wordcount"), resolve_inputs([str(text)]),
                    JobOptions(split_size=64 * K, params={"tokenizer": tokenizer},
                               num_partitions=3),
                    consume, endpoints=cluster.control_endpoints, key=cluster.key)
            assert got == [text_files.expected(text, tokenizer)]


# ------------------------------------------------------------------ a failing job

FAILING_JOB = helpers.FAILING_JOB


def test_failing_task_fails_the_job_with_the_remote_error(write_text) -> None:
    # Given a job whose map raises on every attempt, and at most 2 attempts per task
    # (1 MiB in 4K splits: the master is still reading the input when the job fails)
    path = write_text("in.txt", "some words here\n" * 65536)
    spec = JobSpec.from_source("boom", FAILING_JOB)
    consumed: list[object] = []
    # When it runs
    with pytest.raises(TaskFailed) as info:
        run_job(spec, resolve_inputs([str(path)]),
                JobOptions(split_size=4 * K, max_attempts=2),
                lambda records, summary: consumed.append(summary), local_nodes=1, slots=1)
    # Then the error names the remote exception, with its traceback, and nothing was output
    err = info.value
    assert isinstance(err, JobError) and err.exit_code == 1
    assert err.exc_type == "ValueError"
    assert "boom: this job always fails" in err.message
    assert "boom: this job always fails" in str(err)
    assert "Traceback" in err.traceback and "in map" in err.traceback
    # the one line names the input file and line of the record, the node and the task
    assert f"map failed at {path}:" in str(err) and "task" in str(err)
    assert "boom.py" in err.user_traceback and "pymr/" not in err.user_traceback
    assert err.attempt >= 2
    assert consumed == []
    # and once the error is dropped, nothing of the job keeps the input open (``info`` holds a
    # traceback -> this frame -> ``info`` cycle, so it is dropped explicitly)
    del err, info
    still_open = [fd for fd, target in helpers.open_fds(os.getpid()).items()
                  if target == str(path)]
    assert not still_open, "the failed job left its input file open"


def test_failing_job_through_the_cli_exits_1_and_writes_nothing(
        write_text, tmp_path: Path, capsysbinary, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the failing job as a job file
    path = write_text("in.txt", "some words here\n" * 1000)
    job = write_text("boom_job.py", FAILING_JOB)
    target = tmp_path / "out" / "counts.tsv"
    target.parent.mkdir()
    # When it runs with -o
    code = cli.main(["job", str(job), str(path), "--local", "1", "--slots", "1",
                     "--split-size", "4K", "--max-attempts", "2", "-o", str(target)])
    out, err = capsysbinary.readouterr()
    # Then exit 1, one error line naming the remote error, and no output file (nor temp file)
    assert code == 1
    assert out == b""
    errors = [x for x in err.decode().splitlines() if x.startswith("pymr: error:")]
    assert len(errors) == 1 and "ValueError" in errors[0] and "boom" in errors[0], err
    # the first line of the split whose attempts ran out (4K splits of 16-byte lines)
    where = re.search(rb"map failed at " + re.escape(str(path).encode()) + rb":(\d+) ", err)
    assert where and (int(where.group(1)) - 1) % 256 == 0, err
    # below it the job's own traceback, with its source line, and nothing of pymr's code
    assert b"boom_job.py" in err and b'raise ValueError("boom' in err
    assert b"pymr/" not in err
    assert list(target.parent.iterdir()) == []


def test_failing_job_in_a_real_process_reports_cleanly(write_text, tmp_path: Path) -> None:
    # Given `pymr job` (a real process) whose wordcount is replaced by the failing job
    path = write_text("in.txt", "some words here\n" * 65536)
    target = tmp_path / "counts.tsv"
    script = helpers.CLI_WITH_JOB
    job = write_text("boom_job.py", FAILING_JOB)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(job), "job", "wordcount", str(path), "--local", "2",
         "--slots", "2", "--split-size", "4K", "--max-attempts", "2", "-o", str(target)],
        stdin=subprocess.DEVNULL, capture_output=True, env=helpers.subprocess_env(),
        timeout=120)
    err = proc.stderr.decode("utf-8", "replace")
    # Then exit 1 with one error line; the retries are reported, and nothing else is
    assert proc.returncode == 1, err
    assert proc.stdout == b"" and not target.exists()
    lines = err.strip().splitlines()
    errors = [x for x in lines if x.startswith("pymr: error:")]
    assert len(errors) == 1 and "boom" in errors[0], err
    assert "pymr/" not in err  # the job's traceback only
    retries = [x for x in lines if "attempt" in x and "boom: this job always fails" in x]
    assert retries, "the failed attempts are reported as they happen"


def test_task_reports_arriving_while_the_job_ends_are_not_warnings(
        caplog: pytest.LogCaptureFixture) -> None:
    """Executors still report attempts that were running when the job failed; the master
    handles those while it waits for the JobEnd acks (``_end_job`` has stopped the map
    dispatch by then). They are expected: the user must not see "dropped a message ...
    unexpected task_failed" warnings under the job's real error."""
    import logging

    from pymr.net.security import ClusterKey
    from pymr.runtime.links import NodeLink
    from pymr.runtime.master import Master
    from pymr.wire import protocol as p

    master = Master(ClusterKey.generate(), [], builtin_spec("wordcount"), [], JobOptions(),
                    local_reads=True)
    link = NodeLink(endpoint="tcp://127.0.0.1:9", control=None, node_id="n1",  # type: ignore[arg-type]
                    name="n1")
    master.nodes.links["n1"] = link
    master.dispatch.stop()  # what _end_job does before it pumps for the acks
    late = [
        p.TaskFailedReport(job_id=master.job_id, node_id="n1", task_id=3, attempt=1,
                           exc_type="ValueError", message="boom"),
        p.TaskFailedReport(job_id=master.job_id, node_id="n1", task_id=4, attempt=1,
                           exc_type="Lost", message="batch discarded"),
        p.TaskExecuted(job_id=master.job_id, node_id="n1", task_id=5, attempt=1, nbytes=10),
        p.OutputDone(job_id=master.job_id, node_id="n1", output_id="o", tasks=[[5, 1]],
                     manifest={0: [1, 1, 0]}),
    ]
    with caplog.at_level(logging.WARNING):
        for msg in late:
            master._handle(link, msg, [])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


# ------------------------------------------------------------------ Ctrl-C


#: What a node logs (at INFO, shown with --debug) when it accepts a job: the map phase starts.
JOB_STARTED_LOG = "started by a master"


class StderrWatcher:
    """Reads a child's stderr in a thread; ``wait_for(text)`` blocks until it is seen."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace"))
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_for(self, text: str, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed or any(text in x for x in self.lines), timeout_s) \
                and any(text in x for x in self.lines)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    @property
    def text(self) -> str:
        with self._cond:
            return "".join(self.lines)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_ctrl_c_cancels_the_job_and_leaves_nothing(text_files, tmp_path: Path,
                                                   sig: signal.Signals) -> None:
    # Given `python -m pymr job` on 8 MiB in small splits, in its own process group, of a
    # job slow enough (a pause per line is the scenario) to be running when signalled
    text = text_files(8 << 20, seed=23)
    target = tmp_path / "counts.tsv"
    jobs = tmp_path / "job"
    jobs.mkdir()
    slow = jobs / "slow_count.py"
    slow.write_text("import time\n\ndef map(line):\n    time.sleep(0.002)\n"
                    "    yield from ((w, 1) for w in line.split())\n\n"
                    "def reduce(word, counts):\n    return sum(counts)\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymr", "--debug", "job", str(slow), str(text),
         "--local", "2", "--slots", "1", "--split-size", "64K", "-o", str(target)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=helpers.subprocess_env(), start_new_session=True,
        # as in a terminal, even when this run inherited SIGHUP ignored (nohup): pymr
        # keeps an ignored SIGHUP ignored, on purpose
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    pgid = proc.pid
    watcher = StderrWatcher(proc.stderr)
    try:
        # When the job has started on the nodes and their executors are running
        started = watcher.wait_for(JOB_STARTED_LOG, timeout_s=90)
        assert started, f"the job never started:\n{watcher.text[-3000:]}"
        assert proc.poll() is None, "the job finished before it could be interrupted"
        executors = helpers.wait_until(
            lambda: [p for p in helpers.descendants_of(proc.pid)
                     if p not in helpers.children_of(proc.pid)], 30)
        assert executors, "no executor processes under the nodes"
        # what the terminal does on Ctrl-C, or when it is closed: signal the whole group
        os.killpg(pgid, sig)
        code = proc.wait(timeout=60)
        watcher.join(10)
        # Then exit 130, no output file, no temp file, and no process of the group is left
        assert code == 130, watcher.text[-3000:]
        assert "interrupted" in watcher.text
        assert not target.exists()
        assert list(tmp_path.iterdir()) == [jobs], "temporary output left behind"
        left = helpers.wait_until(lambda: not helpers.group_members(pgid), 5)
        assert left, f"processes of the job left: {helpers.describe(helpers.group_members(pgid))}"
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in helpers.group_members(pgid):
            os.kill(pid, signal.SIGKILL)
        watcher.join(10)  # EOF once every holder of the pipe is gone
        proc.stdout.close()
        proc.stderr.close()
