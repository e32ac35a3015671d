"""The real pymr master (``pymr.runtime.master.Master``), driven against simulated nodes.

Started by ``run_scale.py`` with a JSON config line on stdin (cluster key, the simulated
nodes' control endpoints, the input file, options).  It runs one word-count job exactly as
``pymr job`` does on a LAN (``Master(...).run(consume)``: hello, JobStart, map tasks over
PUSH, TaskExecuted, Flush, OutputDone, Commit, InputComplete, PartitionComplete,
FetchPartition/PartitionData, JobEnd), with ``local_reads=True`` so that a MapTask carries
(path, offset, length): tiny payloads.  ``ship_bytes`` makes the master read and send every
split instead (what it does for nodes that are not its own).

It prints one JSON line: per phase the wall clock and this process's CPU (``getrusage
(RUSAGE_SELF)``: every thread, libzmq's I/O thread included), RSS and Python's allocated
blocks; the answer check; with ``profile``, the top functions of a cProfile run; with
``steps``, the main thread's CPU in the commit path's steps (decoding each message type,
the commit rule, the per-node Commit batches), read at every phase mark.
"""

from __future__ import annotations

import cProfile
import io
import json
import logging
import os
import pstats
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pymr.config import JobOptions  # noqa: E402
from pymr.engine.inputs import resolve_inputs  # noqa: E402
from pymr.jobs import builtin_spec  # noqa: E402
from pymr.net.security import ClusterKey  # noqa: E402
from pymr.runtime.master import Master  # noqa: E402


def rss_kib() -> tuple[int, int]:
    rss = hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


#: main-thread CPU seconds per step of the commit path, when ``steps`` is on
STEPS: dict[str, float] = {}


def _count(step: str, since: float) -> None:
    STEPS[step] = STEPS.get(step, 0.0) + time.thread_time() - since


def _timed(name: str, fn: Any) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _count(name, t)
    return timed


def time_steps(master: Master) -> None:
    """Wrap the commit path's steps with thread-CPU counters (~1 us per call: opt-in).

    Decoding is counted per message type (an OutputDone carries a manifest of every
    partition); ``MapDispatch.on_output`` is the commit rule and the queueing of the output;
    ``_flush_commits`` cuts every node's manifest slices, encodes and sends the Commits."""
    from pymr.wire import protocol

    decode = protocol.decode

    def decode_timed(frames: list[Any]) -> Any:
        t = time.thread_time()
        name = "?"
        try:
            out = decode(frames)
            name = type(out[0]).__name__
            return out
        finally:
            _count(f"decode {name}", t)

    protocol.decode = decode_timed  # the master calls it as p.decode: this process only
    master.dispatch.on_output = _timed(  # type: ignore[method-assign]
        "commit rule", master.dispatch.on_output)
    master._flush_commits = _timed(  # type: ignore[method-assign]
        "flush commits", master._flush_commits)


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class PhaseReporter:
    """The master's Reporter: marks the phases with wall, CPU and memory."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.total = 0
        self.done = 0
        self.advances = 0
        self.marks: dict[str, dict[str, Any]] = {}
        self.events: list[str] = []
        self.master: Master | None = None

    def mark(self, name: str) -> None:
        rss, hwm = rss_kib()
        m = self.master
        self.marks[name] = {
            "t": time.perf_counter() - self.t0, "cpu": cpu_s(), "main_cpu": time.thread_time(),
            "rss_mib": rss / 1024,
            "hwm_mib": hwm / 1024, "py_blocks": sys.getallocatedblocks(),
            "pending": len(m.control.pending) if m else 0,
            "outputs": len(m.commits.outputs) if m else 0,
            "steps": dict(STEPS),
        }

    def start(self, total_bytes: int, nodes: list[str]) -> None:
        self.total = total_bytes
        self.mark("map_start")

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        self.advances += 1
        if self.done >= self.total and "map_executed" not in self.marks:
            self.mark("map_executed")

    def phase(self, name: str) -> None:
        self.mark({"reduce": "all_committed", "merge": "all_reduced"}.get(name, name))

    def event(self, text: str) -> None:
        line = f"{time.perf_counter() - self.t0:8.3f} s: {text}"
        print("master event: " + line, file=sys.stderr, flush=True)
        if len(self.events) < 50:
            self.events.append(line)

    def state(self) -> dict[str, Any]:
        """What the master is waiting for (read from another thread: approximate)."""
        m = self.master
        s = m.dispatch.sched if m else None
        if m is None:
            return {}
        out: dict[str, Any] = {
            "pending": len(m.control.pending), "outputs": len(m.commits.outputs),
            "partitions_done": len(m.book.done), "partitions": len(m.book.partition_map),
            "nodes_live": sum(1 for x in m.links.values() if x.alive), "epoch": m.book.epoch,
            "updating": m.book.updating,
        }
        if s is not None:
            tasks = list(s.tasks)
            out.update({"tasks": len(tasks), "queue": len(s.queue), "input_done": s.input_done,
                        "running": sum(1 for t in tasks if t.running),
                        "executed_unflushed": sum(1 for t in tasks if t.executed),
                        "committed": s.committed_count})
        return out


def main() -> int:
    cfg = json.loads(sys.stdin.readline())
    logging.basicConfig(level=logging.WARNING, format="master: %(levelname)s: %(message)s")
    key = ClusterKey(cfg["public"].encode(), cfg["secret"].encode())
    inputs = resolve_inputs([cfg["input"]])
    opts = JobOptions(split_size=cfg["split_size"], death_timeout_s=cfg["death_timeout_s"],
                      num_partitions=cfg.get("partitions", 0))
    t0 = time.perf_counter()
    cpu0 = cpu_s()
    rep = PhaseReporter(t0)
    master = Master(key, cfg["endpoints"], builtin_spec("wordcount"), inputs, opts,
                    local_reads=not cfg.get("ship_bytes", False), reporter=rep)
    rep.master = master
    if cfg.get("steps"):
        time_steps(master)
    check: dict[str, Any] = {}

    def consume(records: Any, summary: Any) -> None:
        n = bad = 0
        expected = None
        for _word, count in records:
            n += 1
            expected = summary.tasks
            if count != expected:
                bad += 1
        rep.mark("consumed")
        check.update({"records": n, "bad_records": bad, "tasks": summary.tasks,
                      "partitions": len(master.book.partition_map)})

    def watchdog() -> None:
        """A job that does not end in time: report where it stands and exit."""
        time.sleep(cfg.get("job_timeout_s", 600))
        rep.mark("watchdog")
        print(json.dumps({"error": f"job did not finish in {cfg.get('job_timeout_s', 600)} s",
                          "state": rep.state(), "marks": rep.marks, "events": rep.events,
                          "tasks": 0, "cpu0": cpu0, "check": {}}), flush=True)
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    # This thread's CPU time, not wall: waiting in poll is not work, and libzmq's I/O
    # thread (CURVE, TCP) is not this code's.
    prof = cProfile.Profile(time.thread_time) if cfg.get("profile") else None
    if prof:
        prof.enable()
    error = ""
    try:
        summary = master.run(consume)
        tasks = summary.tasks
    except Exception as exc:  # report, do not hide
        error = f"{type(exc).__name__}: {exc}"
        tasks = master.dispatch.sched.num_tasks if master.dispatch.sched else 0
    if prof:
        prof.disable()
    rep.mark("end")
    out: dict[str, Any] = {
        "error": error, "tasks": tasks, "marks": rep.marks, "events": rep.events,
        "check": check, "cpu0": cpu0, "advances": rep.advances,
        "nodes": len(master.links), "maxrss_mib": resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if prof:
        s = io.StringIO()
        st = pstats.Stats(prof, stream=s)
        st.sort_stats("tottime").print_stats(cfg.get("profile_top", 25))
        out["profile_tottime"] = s.getvalue()
        s = io.StringIO()
        st = pstats.Stats(prof, stream=s)
        st.sort_stats("cumulative").print_stats(cfg.get("profile_top", 25))
        out["profile_cumulative"] = s.getvalue()
    print(json.dumps(out), flush=True)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
