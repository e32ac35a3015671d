"""Measure one command: wall time, CPU of its whole process tree, peak RSS (Linux /proc).

CPU comes from ``getrusage(RUSAGE_CHILDREN)`` before and after the run, which counts every
descendant that was reaped (by the root or by its own parent, transitively).  RSS is sampled
from ``/proc/PID/status`` every 50 ms: the root's peak ("master") and the peak of the summed
RSS of all its descendants ("nodes"; shared pages count in every process that maps them).
The sampler also records the CPU ticks it sees in ``/proc`` so that a run whose descendants
were not reaped (their CPU then missing from rusage) or outlived it is reported.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

SAMPLE_INTERVAL_S = 0.05
LEFTOVER_GRACE_S = 2.0         # before descendants left running are killed


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all threads), or [] if it is gone."""
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return kids


def _children_by_scan(root: int) -> dict[int, list[int]]:
    """Fallback where /proc/PID/task/TID/children is missing: ppid of every process."""
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(name))
    return tree


_HAVE_CHILDREN_FILE = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def descendants(root: int) -> list[int]:
    """Every living descendant of ``root`` (not ``root`` itself)."""
    out: list[int] = []
    if _HAVE_CHILDREN_FILE:
        stack = _children(root)
        while stack:
            pid = stack.pop()
            out.append(pid)
            stack.extend(_children(pid))
        return out
    tree = _children_by_scan(root)
    stack = list(tree.get(root, []))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(tree.get(pid, []))
    return out


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` (clock ticks), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rfind(b")") + 2:].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB; 0 if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples the RSS of a process tree every ``interval_s`` until stopped."""

    def __init__(self, root: int, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(name=f"rss-sampler-{root}", daemon=True)
        self.root = root
        self.interval_s = interval_s
        self.master_peak_kib = 0
        self.nodes_peak_kib = 0
        self.max_descendants = 0
        self.samples = 0
        self.seen: set[int] = set()                 # every descendant ever sampled
        self.ticks: dict[int, int] = {}             # last CPU ticks seen per process
        self._stop_event = threading.Event()

    def sample(self) -> None:
        master = rss_kib(self.root)
        kids = descendants(self.root)
        nodes = sum(rss_kib(p) for p in kids)
        self.master_peak_kib = max(self.master_peak_kib, master)
        self.nodes_peak_kib = max(self.nodes_peak_kib, nodes)
        self.max_descendants = max(self.max_descendants, len(kids))
        self.seen.update(kids)
        for pid in (self.root, *kids):
            t = cpu_ticks(pid)
            if t is not None:
                self.ticks[pid] = max(t, self.ticks.get(pid, 0))
        self.samples += 1

    def observed_cpu_s(self) -> float:
        """CPU time seen in /proc: a lower bound (the last interval of each process is
        missed), to check that the rusage figure includes every process."""
        return sum(self.ticks.values()) / _CLK_TCK

    def survivors(self) -> list[int]:
        """Descendants still alive (orphans) after the root has exited."""
        return [p for p in self.seen if os.path.exists(f"/proc/{p}") and rss_kib(p) > 0]

    def run(self) -> None:
        while True:
            self.sample()
            if self._stop_event.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_measured(cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float | None,
                 cwd: Path) -> dict[str, Any]:
    """Run ``cmd`` to completion; wall time, tree CPU time and peak RSS.

    The command runs in a session of its own, so that on a timeout, on Ctrl-C, or when it
    leaves descendants running, exactly its process group (and the descendants seen) can be
    killed.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                cwd=cwd, start_new_session=True)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid, sampler.seen)
            rc = proc.wait()
            rc = rc if rc else -9
            log.write(f"\n[run_core] killed after {timeout_s} s\n".encode())
        except BaseException:
            _kill_tree(proc.pid, sampler.seen)
            proc.wait()
            raise
        finally:
            wall = time.perf_counter() - t0
            sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    observed = sampler.observed_cpu_s()
    warnings = []
    if user + system < observed - 0.5:
        warnings.append(f"rusage counts {user + system:.2f} s CPU but {observed:.2f} s was seen "
                        "in /proc: some descendants were not reaped by their parents")
    left = sampler.survivors()
    if left:
        warnings.append(f"{len(left)} descendant process(es) still running after the engine "
                        f"exited: {sorted(left)} (killed after {LEFTOVER_GRACE_S:.0f} s)")
        deadline = time.monotonic() + LEFTOVER_GRACE_S
        while sampler.survivors() and time.monotonic() < deadline:
            time.sleep(0.1)
        _kill_tree(proc.pid, sampler.seen)
    return {
        "returncode": rc, "wall_s": wall, "user_s": user, "sys_s": system,
        "cpu_s": user + system,
        "master_peak_mib": sampler.master_peak_kib / 1024,
        "nodes_peak_mib": sampler.nodes_peak_kib / 1024,
        "max_descendants": sampler.max_descendants, "rss_samples": sampler.samples,
        "observed_cpu_s": observed, "warnings": warnings,
    }


def _kill_tree(root: int, seen: set[int]) -> None:
    """SIGKILL the run's process group and every descendant seen that is still alive."""
    try:
        os.killpg(root, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in seen:
        if rss_kib(pid) > 0:               # alive and not a zombie (pids are rarely reused)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
