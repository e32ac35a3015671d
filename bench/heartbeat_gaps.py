"""How late can a live node's heartbeat be? The measurement behind the default death timeout.

    python bench/heartbeat_gaps.py [--size 256M] [--rounds 3] [--hogs N] [--out bench/HEARTBEAT.md]

A node publishes a heartbeat every second from its daemon (never from an executor); the
master declares a node dead after ``--death-timeout`` seconds of silence (default
``pymr.config.DEATH_TIMEOUT_S``). That default has to exceed the longest gap a *live* node
shows on a busy consumer machine, with margin. For each scenario this script starts a
three-node ``LocalCluster`` (one executor each, loopback), follows every node's heartbeats
from a separate observer (this process, as the master would), and records the gaps:

  idle        no job
  job         a word count over ``--size`` of generated text (the executors take both cores)
  job+hogs    the same job plus ``--hogs`` busy-looping processes at nice 0 (default: one per
              core: a machine running something else at full speed)

It also records whether the job's master (death timeout as configured) declared a node
lost: on live nodes that would be a false death. Medians and maxima go to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import gen_text  # noqa: E402
import run_core  # noqa: E402
from _public import scrub  # noqa: E402  (local folders out of committed results)

from pymr.config import DEATH_TIMEOUT_S, HEARTBEAT_INTERVAL_S  # noqa: E402
from pymr.net.status import EventStream  # noqa: E402
from pymr.runtime.cluster import LocalCluster  # noqa: E402
from pymr.wire import protocol as p  # noqa: E402
from tests.faults_helpers import HeartbeatWatch, Outcome, RunDirSweeper, run_master  # noqa: E402

SCENARIOS = ("idle", "job", "job+hogs")
IDLE_S = 20.0


def _hogs(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def measure(scenario: str, text: Path, hogs: int, workdir: Path, death_s: float
            ) -> dict[str, object]:
    """Gaps between consecutive heartbeats of each node while the scenario runs."""
    arrivals: dict[str, list[float]] = {}
    outcome: list[Outcome | BaseException] = []
    procs: list[subprocess.Popen[bytes]] = []
    with LocalCluster(nodes=3, slots=1) as cluster:
        sweeper = RunDirSweeper(cluster)
        watch = HeartbeatWatch(cluster)
        watch.wait_beats(2, 15.0)
        stream = EventStream(cluster.key, topics=(p.TOPIC_HEARTBEAT,))
        try:
            for name, endpoint in watch.events.items():
                stream.add(name, endpoint)
            done = threading.Event()
            if scenario == "idle":
                threading.Timer(IDLE_S, done.set).start()
            else:
                if scenario == "job+hogs":
                    procs = _hogs(hogs)

                def job() -> None:
                    try:
                        outcome.append(run_master(
                            cluster, [text], workdir / "out.tsv", timeout_s=600,
                            pause_on=(), options={"death_timeout_s": death_s}))
                    except BaseException as exc:  # reported below
                        outcome.append(exc)
                    finally:
                        done.set()

                threading.Thread(target=job, daemon=True).start()
            started = time.monotonic()
            while not done.is_set():
                for event in stream.events(0.5):
                    arrivals.setdefault(event.node, []).append(time.monotonic())
            elapsed = time.monotonic() - started
        finally:
            stream.close()
            for h in procs:
                h.kill()
                h.wait()
        sweeper.sweep()
    gaps = [b - a for times in arrivals.values() for a, b in itertools.pairwise(times)]
    result: dict[str, object] = {
        "scenario": scenario, "seconds": round(elapsed, 1), "heartbeats": len(gaps) + 3,
        "median_gap": statistics.median(gaps) if gaps else None,
        "p99_gap": sorted(gaps)[int(0.99 * (len(gaps) - 1))] if gaps else None,
        "max_gap": max(gaps) if gaps else None, "nodes_lost": [], "error": ""}
    if outcome:
        o = outcome[0]
        if isinstance(o, BaseException):
            result["error"] = f"{type(o).__name__}: {o}"
        else:
            result["nodes_lost"] = o.summary.get("nodes_lost", [])
            if o.kind != "done":
                result["error"] = f"job {o.kind}: {o.error.get('message', '')}"[:200]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--death-timeout", type=float, default=DEATH_TIMEOUT_S)
    ap.add_argument("--workdir", type=Path, default=HERE / "data")
    ap.add_argument("--out", type=Path, default=HERE / "HEARTBEAT.md")
    args = ap.parse_args(argv)
    size = gen_text.parse_size(args.size)
    text = run_core.ensure_input(args.workdir.resolve(), size, 1)
    run_core.warm(text)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(1, args.rounds + 1):
            for scenario in SCENARIOS:
                r = measure(scenario, text, args.hogs, Path(tmp), args.death_timeout)
                r["round"] = rnd
                print(f"[{scenario} r{rnd}] {r['heartbeats']} beats, gap median "
                      f"{r['median_gap']:.3f} s, p99 {r['p99_gap']:.3f} s, max "
                      f"{r['max_gap']:.3f} s, nodes lost {r['nodes_lost']} {r['error']}",
                      flush=True)
                rows.append(r)
    worst = max(float(r["max_gap"] or 0) for r in rows)  # type: ignore[arg-type]
    false_deaths = [r for r in rows if r["nodes_lost"]]
    lines = [
        f"# Heartbeat gaps of live nodes ({_dt.datetime.now().isoformat(timespec='seconds')})",
        "",
        f"Command: `python bench/heartbeat_gaps.py --size {args.size} --rounds {args.rounds} "
        f"--hogs {args.hogs} --death-timeout {args.death_timeout:g}`; "
        f"{os.cpu_count()} CPUs; 3 embedded nodes x 1 executor; heartbeat every "
        f"{HEARTBEAT_INTERVAL_S:g} s; the job's master ran with a death timeout of "
        f"{args.death_timeout:g} s.",
        "",
        "| scenario | round | s | heartbeats | median gap s | p99 gap s | max gap s | "
        "nodes declared lost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lost = ", ".join(r["nodes_lost"]) or "none"  # type: ignore[arg-type]
        lines.append(f"| {r['scenario']} | {r['round']} | {r['seconds']} | {r['heartbeats']} | "
                     f"{r['median_gap']:.3f} | {r['p99_gap']:.3f} | {r['max_gap']:.3f} | "
                     f"{lost}{' ' + str(r['error']) if r['error'] else ''} |")
    lines += ["", f"Longest gap of a live node: {worst:.3f} s; the death timeout "
              f"{args.death_timeout:g} s leaves {args.death_timeout / max(worst, 1e-9):.1f}x "
              f"margin; false deaths: {len(false_deaths)}.", ""]
    args.out.write_text(scrub("\n".join(lines)))
    print("\n".join(lines))
    return 1 if false_deaths or any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
