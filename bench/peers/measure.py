"""Measure one engine run: wall time, CPU of every process it started, peak summed PSS.

Builds on ``bench/proctree.py`` (its process-tree walk, CPU ticks and kill helpers) and adds
what the peer engines need:

* **A cgroup per run** (cgroup v1 ``cpuacct``, when ``/sys/fs/cgroup/cpuacct`` is writable):
  the command is started inside a fresh group, so ``cpuacct.usage`` counts the CPU of every
  process it ever started -- JVMs, Ray's GCS/raylet/workers, Dask's nanny and workers --
  including daemons that detach, are re-parented to init or are never reaped (rusage misses
  those).  Only the ``cpuacct`` hierarchy is touched; memory accounting stays where it is.
  Without a writable cgroup the figure falls back to ``getrusage(RUSAGE_CHILDREN)`` and the
  /proc tree walk, as in ``proctree.py``, and the run says so (``cpu_source``).
* **PSS** rather than RSS: ``/proc/PID/smaps_rollup`` ``Pss`` summed over every process of the
  run, sampled every 100 ms; shared pages (the Python interpreter, JVM class data, Ray's
  plasma store mapped by many workers) count once in total, not once per process.  The peak
  RSS sum is kept too, for comparison with ``run_core.py``.
* Processes still alive in the group after the engine's root exits are reported and killed
  (by pid, only those of this run's group).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import proctree  # noqa: E402  (bench/proctree.py)

SAMPLE_INTERVAL_S = 0.1
CGROUP_ROOT = Path("/sys/fs/cgroup/cpuacct")
LEFTOVER_GRACE_S = 3.0


def pss_kib(pid: int) -> tuple[int, int]:
    """(Pss, Rss) of ``pid`` in KiB from smaps_rollup; (0, 0) if it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith(b"Rss:"):
                    rss = int(line.split()[1])
                    if pss:
                        break
    except (OSError, ValueError):
        pass
    return pss, rss


class CpuGroup:
    """A cgroup v1 cpuacct group for one run (None-safe: ``usable`` says if it works)."""

    def __init__(self, name: str) -> None:
        self.path = CGROUP_ROOT / name
        self.usable = False
        try:
            self.path.mkdir()
            (self.path / "cpuacct.usage").read_text()
            self.usable = True
        except OSError:
            self.usable = False

    def usage_s(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def procs(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


class PssSampler(proctree.TreeSampler):
    """proctree's sampler, over the cgroup's processes (or the tree) and with PSS."""

    def __init__(self, root: int, group: CpuGroup | None,
                 interval_s: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(root, interval_s)
        self.group = group
        self.pss_peak_kib = 0
        self.rss_peak_kib = 0
        self.root_pss_peak_kib = 0
        self.max_procs = 0

    def members(self) -> list[int]:
        if self.group is not None and self.group.usable:
            return self.group.procs()
        return [self.root, *proctree.descendants(self.root)]

    def sample(self) -> None:
        pids = self.members()
        pss_total = rss_total = 0
        for pid in pids:
            pss, rss = pss_kib(pid)
            pss_total += pss
            rss_total += rss
            if pid == self.root:
                self.root_pss_peak_kib = max(self.root_pss_peak_kib, pss)
            t = proctree.cpu_ticks(pid)
            if t is not None:
                self.ticks[pid] = max(t, self.ticks.get(pid, 0))
        self.seen.update(p for p in pids if p != self.root)
        self.pss_peak_kib = max(self.pss_peak_kib, pss_total)
        self.rss_peak_kib = max(self.rss_peak_kib, rss_total)
        self.max_procs = max(self.max_procs, len(pids))
        self.samples += 1


def run_measured(cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float | None,
                 cwd: Path, use_cgroup: bool = True) -> dict[str, Any]:
    """Run ``cmd`` to completion in its own session (and cgroup); return the figures."""
    group = CpuGroup(f"pymr-peers-{os.getpid()}-{time.monotonic_ns()}") if use_cgroup else None
    if group is not None and not group.usable:
        group = None
    if group is not None:
        # The shell joins the group, then execs the engine: nothing escapes the accounting.
        cmd = ["/bin/sh", "-c", f'echo $$ > "{group.path}/cgroup.procs" && exec "$@"',
               "peers-run", *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cg_before = group.usage_s() if group is not None else 0.0
    warnings: list[str] = []
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                cwd=cwd, start_new_session=True)
        sampler = PssSampler(proc.pid, group)
        sampler.start()
        # A blocking wait, with the timeout on a timer: Popen.wait(timeout) polls with
        # sleeps of up to 50 ms, which rounded every wall time up to a 50 ms step.
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            _kill(proc.pid, sampler, group)

        timer = threading.Timer(timeout_s, expire) if timeout_s else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            rc = proc.wait()
            if timed_out.is_set():
                rc = rc if rc else -9
                log.write(f"\n[run_peers] killed after {timeout_s} s\n".encode())
        except BaseException:
            _kill(proc.pid, sampler, group)
            proc.wait()
            raise
        finally:
            wall = time.perf_counter() - t0
            if timer is not None:
                timer.cancel()
            sampler.stop()
    # Leftovers: daemons of the engine still alive after its root exited.
    left = [p for p in sampler.members() if p != proc.pid and proctree.rss_kib(p) > 0]
    if left:
        deadline = time.monotonic() + LEFTOVER_GRACE_S
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [p for p in sampler.members() if p != proc.pid and proctree.rss_kib(p) > 0]
        if left:
            warnings.append(f"{len(left)} process(es) still running {LEFTOVER_GRACE_S:.0f} s "
                            f"after the engine exited (killed): {sorted(left)[:10]}")
            _kill(proc.pid, sampler, group)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    cpu_source = "rusage"
    cpu = user + system
    if group is not None:
        time.sleep(0.05)
        cpu = group.usage_s() - cg_before
        cpu_source = "cgroup"
        group.remove()
    observed = sampler.observed_cpu_s()
    if cpu_source == "rusage" and cpu < observed - 0.5:
        warnings.append(f"rusage counts {cpu:.2f} s CPU but {observed:.2f} s was seen in /proc: "
                        "some processes were not reaped (no cgroup to count them)")
    return {
        "returncode": rc, "wall_s": wall, "cpu_s": cpu, "cpu_source": cpu_source,
        "rusage_cpu_s": user + system, "observed_cpu_s": observed,
        "pss_peak_mib": sampler.pss_peak_kib / 1024, "rss_peak_mib": sampler.rss_peak_kib / 1024,
        "root_pss_peak_mib": sampler.root_pss_peak_kib / 1024,
        "max_procs": sampler.max_procs, "samples": sampler.samples, "warnings": warnings,
    }


def _kill(root: int, sampler: PssSampler, group: CpuGroup | None) -> None:
    proctree._kill_tree(root, sampler.seen)
    if group is not None:
        for pid in group.procs():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 5
        while group.procs() and time.monotonic() < deadline:
            time.sleep(0.05)


def _selftest() -> None:  # pragma: no cover - manual check
    import json
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        r = run_measured([sys.executable, "-c",
                          "import subprocess,sys; subprocess.Popen([sys.executable,'-c',"
                          "'sum(range(3*10**7))']).wait(); sum(range(10**7))"],
                         dict(os.environ), Path(d) / "log", 60, Path(d))
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    threading.current_thread().name = "main"
    _selftest()
