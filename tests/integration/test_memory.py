"""Data bigger than the memory budget: the same answers, processes within their share,
disk problems as one-line errors, and part files.

Every built-in job runs with a budget far below its data (a few MiB against hundreds of
thousands of distinct keys) and must give the answer it gives without a budget; the
nodes' processes are sampled from /proc while a job runs; a spill directory on a tiny tmpfs
(root only: a mount) must fail the job with the reason and leave nothing behind.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import pymr
from pymr.cli import main as cli
from pymr.config import PROCESS_OVERHEAD, MiB
from pymr.engine import partfiles
from tests import helpers

K = 1024


@pytest.fixture(scope="module")
def many_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 MiB of log lines with ~200,000 distinct ids (hex), words and numbers."""
    rng = random.Random(13)
    path = tmp_path_factory.mktemp("mem") / "log.txt"
    words = ["GET", "PUT", "error", "ok", "user", "the", "retry", "slow"]
    with open(path, "w") as f:
        size = 0
        while size < 6 << 20:
            line = (f"id-{rng.randrange(200_000):05x} {rng.choice(words)} "
                    f"{rng.choice(words)} n{rng.randrange(5000)}\n")
            f.write(line)
            size += len(line)
    return path


JOBS = [("wordcount", {}), ("grep", {"pattern": "error"}), ("bigrams", {}), ("invert", {})]


@pytest.mark.parametrize("job,params", JOBS, ids=[j for j, _ in JOBS])
def test_every_builtin_gives_the_same_answer_under_a_small_budget(
        job: str, params: dict[str, str], many_keys: Path) -> None:
    free = pymr.run(job, str(many_keys), params=params, split_size=256 * K, local=2,
                    slots=1)
    tight = pymr.run(job, str(many_keys), params=params, split_size=256 * K, local=2,
                     slots=1, memory=2 * MiB)
    assert list(tight) == list(free)
    assert tight.summary.records == free.summary.records
    if job != "grep":  # grep's matches fit: nothing to spill
        assert tight.summary.spilled, "the budget was not small enough to spill"
        assert not free.summary.spilled


def _descendants(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out.append(int(child))
                    out.extend(_descendants(int(child)))
    except OSError:
        pass
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.parametrize("job", ["wordcount", "bigrams"])
def test_node_processes_stay_within_their_share_plus_the_overhead(
        job: str, many_keys: Path, tmp_path: Path) -> None:
    # Given a job on one embedded node of 2 executors, with a 16 MiB budget (8 MiB each)
    # and the default split size (the master makes the splits fit the budget)
    budget = 16 * MiB
    out = tmp_path / "out.tsv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymr", "job", job, str(many_keys), "--memory", "16M",
         "--local", "1", "--slots", "2", "-o", str(out), "-q"],
        env=helpers.subprocess_env(PYMR_HOME=str(tmp_path / "home")),
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:  # /proc is the only view of another process's memory
        while not done.is_set():
            for pid in _descendants(proc.pid):
                peaks[pid] = max(peaks.get(pid, 0), _rss(pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        _, err = proc.communicate(timeout=180)
    finally:
        done.set()
        sampler.join()
        helpers.stop_process(proc)
    assert proc.returncode == 0, err.decode()
    # Then every node process (the daemon and its executors) stayed within its share of
    # the budget plus the documented fixed overhead of a pymr process
    assert len(peaks) >= 3, peaks
    share = budget // 2
    worst = max(peaks.values())
    assert worst <= share + PROCESS_OVERHEAD, (
        f"a node process peaked at {worst / MiB:.0f} MiB; share {share / MiB:.0f} MiB + "
        f"overhead {PROCESS_OVERHEAD / MiB:.0f} MiB")
    assert b"spilled" in err or out.stat().st_size > 0


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Any:
    """A 2 MiB tmpfs (a full disk for spills); needs root to mount."""
    with helpers.tmpfs(tmp_path / "tiny", "size=2m", "pymr-tiny") as mnt:
        yield mnt


def test_full_spill_disk_fails_the_job_in_one_line_and_leaves_nothing(
        tiny_tmpfs: Path, many_keys: Path, tmp_path: Path) -> None:
    # Given an embedded node whose run directory (and so its spill directory) is on a
    # 2 MiB tmpfs, and a job that must spill far more than that
    out = tmp_path / "out.tsv"
    proc = subprocess.run(
        [sys.executable, "-m", "pymr", "job", "invert", str(many_keys), "--memory", "4M",
         "--split-size", "256K", "--local", "1", "--slots", "1", "-o", str(out)],
        env=helpers.subprocess_env(TMPDIR=str(tiny_tmpfs), PYMR_HOME=str(tmp_path / "h")),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    # Then exit 1 with one line naming the node, the directory and the reason
    assert proc.returncode == 1, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("pymr: error:")]
    assert len(errors) == 1, proc.stderr
    assert "local0" in errors[0] and str(tiny_tmpfs) in errors[0], errors[0]
    assert "No space left on device" in errors[0]
    assert "Traceback" not in proc.stderr
    # and nothing is left: no output, no spill file on the tmpfs
    assert not out.exists()
    left = [os.path.join(d, f) for d, _, fs in os.walk(tiny_tmpfs) for f in fs]
    assert left == [], left


def test_part_files_merge_back_byte_for_byte(many_keys: Path, tmp_path: Path,
                                             capsysbinary: pytest.CaptureFixture[bytes]
                                             ) -> None:
    for job, params in JOBS:
        single = tmp_path / f"{job}.tsv"
        parts = tmp_path / f"{job}-parts"
        extra = [x for k, v in params.items() for x in ("-p", f"{k}={v}")]
        common = [str(many_keys), *extra, "--split-size", "256K", "--local", "2",
                  "--slots", "1", "--partitions", "3", "--memory", "4M", "-q"]
        assert cli.main(["job", job, *common, "-o", str(single)]) == 0
        assert cli.main(["job", job, *common, "-o", f"{parts}/"]) == 0
        capsysbinary.readouterr()
        names = sorted(os.listdir(parts))
        assert names == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]
        assert cli.main(["cat", str(parts)]) == 0
        assert capsysbinary.readouterr().out == single.read_bytes(), job
        # the concatenation holds every record once (in no global order)
        cat = b"".join((parts / n).read_bytes() for n in names if n.startswith("part-"))
        assert sorted(cat.splitlines()) == sorted(single.read_bytes().splitlines())
    # an existing directory is replaced only with --force
    code = cli.main(["job", "wordcount", str(many_keys), "-o", f"{tmp_path}/wordcount-parts/",
                     "--local", "1", "-q"])
    assert code == 2


def test_an_interrupted_job_leaves_no_part_directory(many_keys: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a job writing part files, interrupted (Ctrl-C) while it writes the second part
    written: list[int] = []
    real = partfiles.part_name

    def interrupt_at_second(index: int) -> str:
        written.append(index)
        if len(written) == 2:
            raise KeyboardInterrupt
        return real(index)

    monkeypatch.setattr(partfiles, "part_name", interrupt_at_second)
    target = tmp_path / "parts"
    code = cli.main(["job", "wordcount", str(many_keys), "--local", "1", "--partitions", "3",
                     "-o", f"{target}/", "-q"])
    # Then it exits 130 and neither the directory nor its temporary twin exists
    assert code == 130 and len(written) == 2
    assert os.listdir(tmp_path) == []
    shutil.rmtree(target, ignore_errors=True)


def test_a_budget_of_a_few_bytes_is_refused_before_anything_starts(many_keys: Path) -> None:
    from pymr.config import NodeOptions
    from pymr.errors import UsageError

    for make in (lambda: pymr.run("wordcount", str(many_keys), memory=100),
                 lambda: NodeOptions(memory=1000)):
        with pytest.raises(UsageError, match="too small: give at least 1M"):
            make()
