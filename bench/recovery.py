"""Recovery figures: how long the master takes to declare a killed node dead, and the extra
wall time of a job that loses one of three nodes halfway, and of one with a 10x slow node,
against the same job without faults.

    python bench/recovery.py [--size 128M] [--split 1M] [--rounds 3] [--death-timeout S]
                             [--slow-factor 10] [--workdir DIR] [--out bench/RECOVERY.md]
                             [--quick]

Every run is a fresh three-node ``LocalCluster`` (one executor per node, loopback) and a
master in a subprocess (tests/faults_helpers.py), the input a generated text file read from
the page cache. Scenarios, interleaved (round 1 of each, then round 2, ...; the order
rotates from round to round):

  clean     no fault
  lose-one  node local1 is killed with SIGKILL (daemon and executors) when the executed
            tasks cover half of the input bytes
  slow      node local2 runs in a cgroup v1 CPU quota of 1/factor of the CPU share a node
            gets on this machine (min(1, cores / 3) CPUs), or, without cgroup v1, is
            SIGSTOPped for 1 - 1/factor of every 100 ms

Wall time of a run: from the moment the master, having started the job on every node and
heard every node's heartbeat, dispatches its first task, to the end of the job (answer
written, nodes told). Detection time: from the SIGKILL to the master's "node ... lost"
event. Medians over the rounds; every answer is checked against the single-process count.
The result goes to ``--out`` (a markdown page with every run); exit status 1 if a run
failed, hung or gave a wrong answer.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import gen_text  # noqa: E402  (bench/ is not a package on sys.path when run as a script)
from _public import scrub  # noqa: E402  (local folders out of committed results)

from pymr.config import DEATH_TIMEOUT_S  # noqa: E402
from pymr.runtime.cluster import LocalCluster  # noqa: E402
from tests.faults_helpers import (  # noqa: E402
    HeartbeatWatch,
    Hooks,
    MasterHung,
    RunDirSweeper,
    SlowNode,
    cgroup_cpu_available,
    kill_node,
    run_master,
)
from tests.helpers import expected_tsv, reference_for_files  # noqa: E402

SCENARIOS = ("clean", "lose-one", "slow")
NODES = 3
VICTIM = 1        # lose-one kills local1
SLOW = 2          # slow slows local2


@dataclass
class Run:
    scenario: str
    round: int
    ok: bool = False
    wall_s: float = 0.0
    detection_s: float | None = None
    nodes_lost: list[str] = field(default_factory=list)
    retries: int = 0
    backups: int = 0
    killed_at_s: float | None = None   # these four: seconds after the first dispatch
    lost_at_s: float | None = None
    reduce_at_s: float | None = None
    merge_at_s: float | None = None
    other_cpu_s: float = 0.0  # CPU time used on the machine by processes not of this run
    problem: str = ""


def ensure_input(workdir: Path, size: int, seed: int) -> Path:
    name = f"text-{gen_text.format_size(size)}-seed{seed}-v{gen_text.GENERATOR_VERSION}.txt"
    path = workdir / "inputs" / name
    if not (path.exists() and path.stat().st_size == size):
        path.parent.mkdir(parents=True, exist_ok=True)
        gen_text.generate(str(path), size, seed)
    return path


def one_run(scenario: str, rnd: int, path: Path, want_sha: str, args: argparse.Namespace,
            share: float, outdir: Path) -> Run:
    run = Run(scenario, rnd)
    cpu_before = cpu_accounts()
    out = outdir / f"{scenario}-{rnd}.tsv"
    hooks = Hooks()
    go: list[float] = []
    killed: list[float] = []
    options = {"split_size": args.split, "death_timeout_s": args.death_timeout}
    with LocalCluster(nodes=NODES, slots=1) as cluster, HeartbeatWatch(cluster) as watch:
        sweeper = RunDirSweeper(cluster)

        def settle() -> None:
            watch.wait_beats(2, 10.0)
            go.append(time.monotonic())

        hooks.at_start(settle)
        if scenario == "lose-one":
            hooks.at_fraction(0.5, lambda: (kill_node(cluster, VICTIM),
                                            killed.append(time.monotonic())))
        try:
            if scenario == "slow":
                with SlowNode(cluster, SLOW, factor=args.slow_factor, share_cpus=share,
                              max_duration_s=args.timeout):
                    outcome = run_master(cluster, [path], out, hooks, timeout_s=args.timeout,
                                         options=options)
            else:
                outcome = run_master(cluster, [path], out, hooks, timeout_s=args.timeout,
                                     options=options)
        except MasterHung as exc:
            run.problem = "hung: " + str(exc).splitlines()[0]
            outcome = None
    sweeper.sweep()
    if outcome is None:
        return run
    run.other_cpu_s = other_cpu(cpu_before, cpu_accounts())
    if outcome.kind != "done":
        run.problem = f"{outcome.kind}: {outcome.error.get('message', '')}"
        return run
    done_at = next(x["at"] for x in reversed(hooks.lines) if x["t"] == "done")
    run.wall_s = done_at - go[0]
    lost = hooks.first_event(" lost (")
    run.killed_at_s = killed[0] - go[0] if killed else None
    run.lost_at_s = lost - go[0] if lost is not None else None
    phases = {x["name"]: x["at"] for x in hooks.lines if x["t"] == "phase"}
    run.reduce_at_s = phases["reduce"] - go[0] if "reduce" in phases else None
    run.merge_at_s = phases["merge"] - go[0] if "merge" in phases else None
    run.nodes_lost = outcome.summary.get("nodes_lost", [])
    run.retries = outcome.summary.get("retries", 0)
    run.backups = outcome.summary.get("backups", 0)
    if killed and lost is not None:
        run.detection_s = lost - killed[0]
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    if sha != want_sha:
        run.problem = "wrong answer"
    elif scenario == "lose-one" and (not killed or run.nodes_lost != [f"local{VICTIM}"]):
        run.problem = f"fault not as planned (killed: {bool(killed)}, lost {run.nodes_lost})"
    else:
        run.ok = True
    return run


def cpu_accounts() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its reaped
    descendants)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    mine = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        mine += ru.ru_utime + ru.ru_stime
    return busy, mine


def other_cpu(before: tuple[float, float], after: tuple[float, float]) -> float:
    """CPU seconds used meanwhile by processes that are not this run's (other work on the
    machine; also the executors of a killed node, which nobody reaps here)."""
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1]))


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def source_state() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "pymr"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"commit {commit or '?'}" + (" with local changes in pymr/" if dirty else "")


def markdown(runs: list[Run], args: argparse.Namespace, share: float, method: str,
             elapsed_s: float) -> str:
    clean = median([r.wall_s for r in runs if r.scenario == "clean" and r.ok])
    lines = [
        "# Recovery figures",
        "",
        "Written by `bench/recovery.py` (run by hand, never by CI); rerun it to update this "
        "page.",
        "",
        f"- date: {_dt.datetime.now().isoformat(timespec='seconds')}; machine: "
        f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
        f"- source: {source_state()}",
        f"- job: word count of {gen_text.format_size(args.size)} of generated text "
        f"(seed {args.seed}) in {gen_text.format_size(args.split)} splits, on "
        f"{NODES} local nodes of one executor each; master death timeout "
        f"{args.death_timeout:g} s; {args.rounds} interleaved rounds; bench took "
        f"{elapsed_s / 60:.1f} min",
        f"- lose-one: local{VICTIM} killed (SIGKILL, daemon and executors) when executed "
        f"tasks covered half the input bytes",
        f"- slow: local{SLOW} {args.slow_factor:g}x slower than a node's CPU share "
        f"({share:.2f} CPU): " + (
            f"cgroup v1 cpu.cfs_quota_us = {share / args.slow_factor:.3f} CPU"
            if method == "cgroup" else "SIGSTOP/SIGCONT duty cycle (no cgroup v1 here)"),
        "",
        "| scenario | runs ok | median wall (s) | extra vs clean (s) | extra (%) | "
        "min–max (s) | backups (median) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scenario in SCENARIOS:
        mine = [r for r in runs if r.scenario == scenario]
        good = [r for r in mine if r.ok]
        walls = [r.wall_s for r in good]
        med = median(walls)
        extra = None if med is None or clean is None else med - clean
        pct = None if extra is None or not clean else 100 * extra / clean
        lines.append(
            f"| {scenario} | {len(good)}/{len(mine)} | {fmt(med)} | "
            f"{'–' if scenario == 'clean' else fmt(extra, '+.2f')} | "
            f"{'–' if scenario == 'clean' else fmt(pct, '+.0f')} | "
            f"{fmt(min(walls) if walls else None)}–{fmt(max(walls) if walls else None)} | "
            f"{fmt(median([float(r.backups) for r in good]), '.0f')} |")
    detections = [r.detection_s for r in runs if r.detection_s is not None]
    lines += [
        "",
        "## Where the time goes",
        "",
        "Medians over the successful runs, in seconds. map: first dispatch to the last commit "
        "(the reduce phase); reduce: until every partition is complete; merge: fetching and "
        "merging the partitions, writing the answer, ending the job. For lose-one, the kill "
        "and the master's detection happen inside the map phase.",
        "",
        "| scenario | map | reduce | merge | kill at | lost at | lost to end of map |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scenario in SCENARIOS:
        good = [r for r in runs if r.scenario == scenario and r.ok
                and r.reduce_at_s is not None and r.merge_at_s is not None]
        maps = [r.reduce_at_s for r in good if r.reduce_at_s is not None]
        reduces = [r.merge_at_s - r.reduce_at_s for r in good
                   if r.merge_at_s is not None and r.reduce_at_s is not None]
        merges = [r.wall_s - r.merge_at_s for r in good if r.merge_at_s is not None]
        kills = [r.killed_at_s for r in good if r.killed_at_s is not None]
        losts = [r.lost_at_s for r in good if r.lost_at_s is not None]
        after = [r.reduce_at_s - r.lost_at_s for r in good
                 if r.reduce_at_s is not None and r.lost_at_s is not None]
        lines.append(f"| {scenario} | {fmt(median(maps))} | {fmt(median(reduces))} | "
                     f"{fmt(median(merges))} | {fmt(median(kills))} | {fmt(median(losts))} | "
                     f"{fmt(median(after))} |")
    # A killed node's executors are reaped by init, so their CPU shows as "other" too.
    noisy = [r for r in runs if r.scenario != "lose-one"
             and r.other_cpu_s > 0.1 * max(r.wall_s, 1.0)]
    if noisy:
        lines += ["", f"**Warning:** other work used the CPU during {len(noisy)} run(s) "
                      "(\"other CPU\" below: CPU seconds of processes that were not the run's; "
                      "for lose-one it includes the killed node's executors): their wall times "
                      "are noisy."]
    lines += [
        "",
        f"**Detection time** (SIGKILL to the master's \"node lost\" event, death timeout "
        f"{args.death_timeout:g} s): median {fmt(median(detections))} s, "
        f"min {fmt(min(detections) if detections else None)} s, "
        f"max {fmt(max(detections) if detections else None)} s over {len(detections)} "
        f"kill(s).",
        "",
        "## Every run",
        "",
        "Times in seconds; kill, lost, reduce and merge are counted from the first dispatch "
        "(the reduce phase starts when every task is committed, the merge when every "
        "partition is complete).",
        "",
        "| round | scenario | ok | wall | kill | lost | reduce | merge | detection | "
        "nodes lost | retries | backups | other CPU | problem |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(f"| {r.round} | {r.scenario} | {'yes' if r.ok else 'NO'} | "
                     f"{fmt(r.wall_s if r.ok else None)} | {fmt(r.killed_at_s)} | "
                     f"{fmt(r.lost_at_s)} | {fmt(r.reduce_at_s)} | {fmt(r.merge_at_s)} | "
                     f"{fmt(r.detection_s)} | {', '.join(r.nodes_lost) or '–'} | {r.retries} | "
                     f"{r.backups} | {r.other_cpu_s:.1f} | {r.problem.replace('|', '/') or '–'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=gen_text.parse_size, default=gen_text.parse_size("128M"))
    ap.add_argument("--split", type=gen_text.parse_size, default=gen_text.parse_size("1M"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--death-timeout", type=float, default=DEATH_TIMEOUT_S,
                    help="the master's death timeout (default: pymr's, %(default)s s)")
    ap.add_argument("--slow-factor", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=300.0, help="bound of one run (s)")
    ap.add_argument("--workdir", type=Path, default=HERE / "data")
    ap.add_argument("--out", type=Path, default=HERE / "RECOVERY.md")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 16M, 1 round, written to the work dir")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.rounds = gen_text.parse_size("16M"), 1
        args.out = args.workdir / "RECOVERY-quick.md"
    started = time.monotonic()
    path = ensure_input(args.workdir, args.size, args.seed)
    want = expected_tsv(reference_for_files([path], "words"))
    want_sha = hashlib.sha256(want).hexdigest()
    del want
    share = min(1.0, (os.cpu_count() or 1) / NODES)
    method = "cgroup" if cgroup_cpu_available() else "sigstop"
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="pymr-recovery-") as tmp:
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(SCENARIOS)
            for scenario in SCENARIOS[shift:] + SCENARIOS[:shift]:
                run = one_run(scenario, rnd, path, want_sha, args, share, Path(tmp))
                runs.append(run)
                print(f"round {rnd} {scenario:<9} "
                      + (f"{run.wall_s:7.2f} s" if run.ok else f"FAILED: {run.problem}")
                      + (f"  detection {run.detection_s:.2f} s"
                         if run.detection_s is not None else ""), flush=True)
    text = markdown(runs, args, share, method, time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(scrub(text))
    print(text)
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
