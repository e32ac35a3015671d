"""Scale model: the real pymr master against many simulated nodes on loopback.

    python bench/scale/run_scale.py                          # 4,16,64,256 nodes, 10,240 tasks
    python bench/scale/run_scale.py --nodes 64 --profile     # + cProfile of the master
    python bench/scale/run_scale.py --nodes 4,256 --steps    # + commit phase CPU by step
    python bench/scale/run_scale.py --nodes 16 --tasks 10240,40960   # memory vs tasks
    python bench/scale/run_scale.py --nodes 16 --split-size 1K,16K   # memory vs data

For every (nodes, tasks, split size):

1. ``--procs`` processes (default 2) of ``simnodes.py`` host the simulated nodes, each node
   with its own CURVE sockets bound through ``pymr.net.security.secure_bind`` (one
   ``Authenticator`` per process) and ``--slots`` simulated executors whose map tasks take
   ``task_fixed_us + length * cost_ns_per_byte`` of timer time (no CPU burnt).
2. ``master_proc.py`` runs ``pymr.runtime.master.Master`` on them: one word-count job over a file
   cut into ``tasks`` splits of ``split_size`` bytes (lines of 64 bytes, so the cuts are
   exact), MapTasks carrying (path, offset, length) as for the embedded cluster.
3. The master's own CPU (rusage, all its threads) and memory per phase, the messages both
   ways by type (counted by the simulated nodes), the shuffle connections a real cluster would
   open (counted: one per (executor, reducer node) pair that an output has records for), and
   the answer check (every partition's record equals the number of tasks: each task was
   committed exactly once to each reducer).

Writes ``bench/scale/RESULTS-scale.json`` and ``.md`` (or ``--results``).  Exit status 1 if
a job failed or its answer was wrong.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

import run_core  # noqa: E402  (machine info, load average)
from _public import scrub  # noqa: E402  (local folders out of committed results)

LINE = 64
TIME_BASED = {"lease", "heartbeat"}


def parse_size(text: str) -> int:
    t = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def make_input(workdir: Path, tasks: int, split: int) -> Path:
    """``tasks`` splits of exactly ``split`` bytes: 64-byte lines, so every cut is exact."""
    if split % LINE:
        raise SystemExit(f"--split-size must be a multiple of {LINE}")
    path = workdir / f"scale-{tasks}x{split}.txt"
    size = tasks * split
    if path.exists() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    words = [f"w{i:x}" for i in range(4096)]
    lines = []
    for i in range(4096):
        text = " ".join(words[(i * 7 + j) % 4096] for j in range(12))
        lines.append((text[:LINE - 1].ljust(LINE - 1) + "\n").encode())
    block = b"".join(lines)                      # 256 KiB
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    os.replace(tmp, path)
    return path


def start_sims(n_nodes: int, procs: int, cfg: dict[str, Any], env: dict[str, str]
               ) -> tuple[list[subprocess.Popen[str]], list[str]]:
    procs = max(1, min(procs, n_nodes))
    sims: list[subprocess.Popen[str]] = []
    endpoints: list[str] = []
    for k in range(procs):
        idx = list(range(k, n_nodes, procs))
        pr = subprocess.Popen([sys.executable, str(HERE / "simnodes.py")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
        assert pr.stdin is not None
        pr.stdin.write(json.dumps({**cfg, "indices": idx, "total_nodes": n_nodes}) + "\n")
        pr.stdin.flush()
        sims.append(pr)
    for pr in sims:
        assert pr.stdout is not None
        line = pr.stdout.readline()
        if not line:
            raise RuntimeError("a simulated-node process failed to start")
        endpoints.extend(json.loads(line)["nodes"])
    return sims, endpoints


def stop_sims(sims: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    reports = []
    for pr in sims:
        assert pr.stdin is not None and pr.stdout is not None
        pr.stdin.close()
    for pr in sims:
        assert pr.stdout is not None
        out = pr.stdout.read()
        pr.wait(timeout=60)
        lines = [x for x in out.splitlines() if x.startswith("{")]
        reports.append(json.loads(lines[-1]) if lines else {})
    return reports


def one_run(args: argparse.Namespace, n_nodes: int, tasks: int, split: int, key: Any,
            env: dict[str, str], profile: bool) -> dict[str, Any]:
    path = make_input(args.workdir, tasks, split)
    sim_cfg = {"public": key.public.decode(), "secret": key.secret.decode(),
               "slots": args.slots, "task_fixed_us": args.task_fixed_us,
               "cost_ns_per_byte": args.cost_ns_per_byte, "heartbeat_s": 1.0}
    sims, endpoints = start_sims(n_nodes, args.procs, sim_cfg, env)
    t0 = time.perf_counter()
    try:
        m_cfg = {"public": key.public.decode(), "secret": key.secret.decode(),
                 "endpoints": endpoints, "input": str(path), "split_size": split,
                 "death_timeout_s": args.death_timeout, "profile": profile,
                 "profile_top": 30, "ship_bytes": args.ship_bytes,
                 "steps": args.steps,
                 "job_timeout_s": args.job_timeout}
        mp = subprocess.run([sys.executable, str(HERE / "master_proc.py")],
                            input=json.dumps(m_cfg) + "\n", capture_output=True, text=True,
                            env=env, timeout=args.timeout)
    finally:
        wall = time.perf_counter() - t0
        reports = stop_sims(sims)
    lines = [x for x in mp.stdout.splitlines() if x.startswith("{")]
    if not lines:
        return {"nodes": n_nodes, "error": f"master exit {mp.returncode}: {mp.stderr[-2000:]}"}
    m = json.loads(lines[-1])
    return analyse(m, reports, n_nodes, tasks, split, wall, mp.stderr, args)


def analyse(m: dict[str, Any], reports: list[dict[str, Any]], n_nodes: int, tasks: int,
            split: int, wall: float, stderr: str, args: argparse.Namespace) -> dict[str, Any]:
    marks = m["marks"]
    if "end" not in marks or "map_start" not in marks:
        return {"nodes": n_nodes, "tasks": tasks, "split_size": split, "ok": False,
                "error": m.get("error") or "no end mark", "state": m.get("state", {}),
                "marks": marks, "events": m.get("events", []), "wall_s": wall,
                "sim_reports": reports, "stderr_tail": stderr[-3000:]}
    msgs: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    dups: dict[str, int] = {}
    for r in reports:
        for d_src, d_dst in ((r.get("msgs_in", {}), msgs), (r.get("msgs_out", {}), msgs),
                             (r.get("bytes_in", {}), nbytes), (r.get("bytes_out", {}), nbytes),
                             (r.get("duplicates", {}), dups)):
            for k, v in d_src.items():
                d_dst[k] = d_dst.get(k, 0) + v
    ntasks = m.get("tasks") or tasks

    def span(a: str, b: str) -> tuple[float | None, float | None]:
        if a in marks and b in marks:
            return marks[b]["t"] - marks[a]["t"], marks[b]["cpu"] - marks[a]["cpu"]
        return None, None

    def main_cpu(a: str, b: str) -> float | None:
        """CPU of the master's own thread (the rest is libzmq's I/O thread: CURVE, TCP)."""
        if a in marks and b in marks and "main_cpu" in marks[a]:
            return float(marks[b]["main_cpu"] - marks[a]["main_cpu"])
        return None

    map_wall, map_cpu = span("map_start", "map_executed")
    commit_wall, commit_cpu = span("map_executed", "all_committed")
    reduce_wall, reduce_cpu = span("all_committed", "all_reduced")
    fetch_wall, fetch_cpu = span("all_reduced", "consumed")
    end_wall, end_cpu = span("consumed", "end")
    start_wall = marks["map_start"]["t"] if "map_start" in marks else None
    start_cpu = marks["map_start"]["cpu"] - m["cpu0"] if "map_start" in marks else None
    total_cpu = marks["end"]["cpu"] - m["cpu0"]
    non_time = {k: v for k, v in msgs.items() if k not in TIME_BASED}
    check = m.get("check", {})
    ok = (not m.get("error") and check.get("bad_records") == 0
          and check.get("records") == check.get("partitions"))
    res: dict[str, Any] = {
        "nodes": n_nodes, "slots": args.slots, "tasks": ntasks, "split_size": split,
        "input_bytes": ntasks * split, "ok": ok, "error": m.get("error", ""),
        "check": check, "wall_s": wall,
        "connect_start_s": start_wall, "connect_start_cpu_s": start_cpu,
        "map_s": map_wall, "map_cpu_s": map_cpu,
        "tasks_per_s": ntasks / map_wall if map_wall else None,
        "map_cpu_ms_per_task": 1000 * map_cpu / ntasks if map_cpu is not None else None,
        "map_master_util": map_cpu / map_wall if map_wall else None,
        "commit_s": commit_wall, "commit_cpu_s": commit_cpu,
        "map_main_cpu_s": main_cpu("map_start", "map_executed"),
        "commit_main_cpu_s": main_cpu("map_executed", "all_committed"),
        "reduce_wait_s": reduce_wall, "reduce_cpu_s": reduce_cpu,
        "fetch_s": fetch_wall, "fetch_cpu_s": fetch_cpu, "end_s": end_wall, "end_cpu_s": end_cpu,
        "master_cpu_s": total_cpu, "master_cpu_ms_per_task": 1000 * total_cpu / ntasks,
        "rss_start_mib": marks.get("map_start", {}).get("rss_mib"),
        "rss_map_end_mib": marks.get("map_executed", {}).get("rss_mib"),
        "rss_committed_mib": marks.get("all_committed", {}).get("rss_mib"),
        "rss_peak_mib": m.get("maxrss_mib"),
        "py_blocks_start": marks.get("map_start", {}).get("py_blocks"),
        "py_blocks_committed": marks.get("all_committed", {}).get("py_blocks"),
        "pending_at_map_end": marks.get("map_executed", {}).get("pending"),
        "messages": dict(sorted(msgs.items())), "bytes": dict(sorted(nbytes.items())),
        "resent": dups,
        "control_msgs": sum(non_time.values()),
        "control_msgs_per_task": sum(non_time.values()) / ntasks,
        "non_task_msgs_per_task": sum(v for k, v in non_time.items()
                                      if k not in ("map_task", "task_executed")) / ntasks,
        "control_bytes_per_task": sum(v for k, v in nbytes.items() if k not in TIME_BASED)
        / ntasks,
        "commits": msgs.get("commit", 0), "outputs": msgs.get("output_done", 0),
        "shuffle_connections": sum(r.get("shuffle_connections", 0) for r in reports),
        "shuffle_node_pairs": sum(r.get("shuffle_node_pairs", 0) for r in reports),
        "shuffle_chunks": sum(r.get("shuffle_chunks", 0) for r in reports),
        "sim_cpu_s": sum(r.get("cpu_s", 0) for r in reports),
        "sim_late_ms_max": max((r.get("late_ms_max", 0) for r in reports), default=0),
        "sim_dropped_sends": sum(r.get("dropped_sends", 0) for r in reports),
        "events": m.get("events", []),
        "nodes_lost": sum(1 for e in m.get("events", []) if " lost (" in e),
        "job_updates": msgs.get("job_update", 0),
        "stderr_tail": stderr[-1500:],
    }
    a, b = marks.get("map_executed", {}), marks.get("all_committed", {})
    if a.get("steps") is not None and b.get("steps"):
        res["commit_steps_s"] = {k: v - a["steps"].get(k, 0.0) for k, v in b["steps"].items()}
    if "profile_tottime" in m:
        res["profile_tottime"] = m["profile_tottime"]
        res["profile_cumulative"] = m["profile_cumulative"]
    return res


def brief(r: dict[str, Any]) -> str:
    def f(key: str, fmt: str) -> str:
        v = r.get(key)
        return "-" if v is None else format(v, fmt)

    if "map_cpu_s" not in r:
        return (f"FAILED: {r.get('error')} state={r.get('state', '')} "
                f"events={r.get('events', [])[-3:]}")
    return (f"map {f('map_s', '.2f')} s, {f('tasks_per_s', '.0f')} tasks/s, master CPU "
            f"{f('map_cpu_ms_per_task', '.3f')} ms/task (map), "
            f"{f('master_cpu_ms_per_task', '.3f')} ms/task (total), commit "
            f"{f('commit_s', '.2f')} s, RSS peak {f('rss_peak_mib', '.0f')} MiB, "
            f"{f('control_msgs_per_task', '.2f')} msgs/task, nodes lost {r.get('nodes_lost')}, "
            f"ok={r['ok']}" + ("" if r["ok"] else f" error={r.get('error')}"))


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        return runs[-1]
    ok.sort(key=lambda r: r["tasks_per_s"] or 0)
    med = dict(ok[len(ok) // 2])
    med["tasks_per_s_all"] = [round(r["tasks_per_s"] or 0) for r in runs if r.get("ok")]
    med["map_cpu_ms_per_task_all"] = [round(r["map_cpu_ms_per_task"] or 0, 4)
                                      for r in runs if r.get("ok")]
    return med


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    L = [f"# pymr scale model ({meta['date']})", "",
         f"`{meta['command']}`", "",
         f"{meta['cpu_count']} CPUs ({meta['cpu_model']}), Python {meta['python']}, git "
         f"{meta['git_head']}; load average before/after {meta['loadavg_before']} / "
         f"{meta['loadavg_after']}.  Simulated nodes: {meta['slots']} slots each, in "
         f"{meta['procs']} processes; task cost {meta['task_fixed_us']} us + "
         f"{meta['cost_ns_per_byte']} ns/byte (timer); {meta['rounds']} round(s), median by "
         "tasks/s.", "",
         "map = from the job start acked to the last TaskExecuted; commit = Flush, OutputDone, "
         "Commit/Ack until every task is committed; CPU = the master process's rusage (all "
         "threads).  msgs/task: every message between master and nodes except the time-based "
         "Lease and Heartbeat; other/task: without MapTask and TaskExecuted.", "",
         "| nodes | tasks | split | map s | tasks/s | master util | map CPU ms/task "
         "| total CPU ms/task | commit s | RSS start / committed / peak MiB | msgs/task "
         "| other/task | commits | outputs | shuffle conns (node pairs) | resent | ok |",
         "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: "
         "| ---: | ---: | --- | --- | --- |"]
    for r in rows:
        if "map_s" not in r:
            L.append(f"| {r['nodes']} | {r.get('tasks', '-')} | {r.get('split_size', '-')} "
                     f"| failed: {r.get('error', '')[:200]} {r.get('state', '')} "
                     + "| " * 13 + "|")
            continue
        L.append(
            f"| {r['nodes']} | {r['tasks']} | {r['split_size']} | {f(r['map_s'], '.2f')} "
            f"| {f(r['tasks_per_s'], '.0f')} | {f(r['map_master_util'], '.2f')} "
            f"| {f(r['map_cpu_ms_per_task'], '.3f')} | {f(r['master_cpu_ms_per_task'], '.3f')} "
            f"| {f(r['commit_s'], '.2f')} | {f(r['rss_start_mib'], '.0f')} / "
            f"{f(r['rss_committed_mib'], '.0f')} / {f(r['rss_peak_mib'], '.0f')} "
            f"| {r['control_msgs_per_task']:.2f} | {r['non_task_msgs_per_task']:.2f} "
            f"| {r['commits']} | {r['outputs']} | {r['shuffle_connections']} "
            f"({r['shuffle_node_pairs']}) | {sum(r['resent'].values())} "
            f"| {'yes' if r['ok'] else 'NO: ' + (r['error'] or str(r['check']))[:100]} |")
    L += ["", "Where the master's CPU goes, by what each phase grows with: connecting and "
          "starting the job with the number of nodes (sockets, CURVE handshakes, JobStart); "
          "the map phase with the tasks; the commit phase with outputs x reducer nodes (one "
          "commit entry per output per node owning partitions of it: the manifest slice "
          "and the task list); the rest (reduce, fetch, end) with partitions and nodes.", "",
          "| nodes | tasks | connect+start CPU s | per node ms | map CPU ms/task "
          "| commit CPU s (main thread) | commit entries | per entry us | reduce+fetch+end CPU s "
          "| after connect ms/task | whole job ms/task |",
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "map_s" not in r:
            continue
        entries = r["outputs"] * r["nodes"]
        rest = r["reduce_cpu_s"] + r["fetch_cpu_s"] + r["end_cpu_s"]
        after = (r["master_cpu_s"] - r["connect_start_cpu_s"]) * 1000 / r["tasks"]
        L.append(f"| {r['nodes']} | {r['tasks']} | {r['connect_start_cpu_s']:.3f} "
                 f"| {r['connect_start_cpu_s'] * 1000 / r['nodes']:.2f} "
                 f"| {r['map_cpu_ms_per_task']:.3f} | {r['commit_cpu_s']:.3f} "
                 f"({f(r.get('commit_main_cpu_s'), '.3f')}) | {entries} "
                 f"| {r['commit_cpu_s'] * 1e6 / entries:.1f} | {rest:.3f} | {after:.3f} "
                 f"| {r['master_cpu_ms_per_task']:.3f} |")
    steps = [r for r in rows if r.get("commit_steps_s")]
    if steps:
        top = {k: max(r["commit_steps_s"].get(k, 0.0) for r in steps)
               for k in {k for r in steps for k in r["commit_steps_s"]}}
        names = sorted((k for k, v in top.items() if v >= 0.0005), key=lambda k: -top[k])
        L += ["", "The commit phase's main-thread CPU by step (s; `--steps`: thread-CPU "
              "counters around decoding per message type, the commit rule "
              "(`MapDispatch.on_output`) and the Commit batches (`_flush_commits`: every "
              "node's manifest slices, encoding, sending)):", "",
              "| nodes | commit main thread | " + " | ".join(names) + " | other |",
              "| ---: | ---: | " + " | ".join("---:" for _ in names) + " | ---: |"]
        for r in steps:
            st = r["commit_steps_s"]
            main = r.get("commit_main_cpu_s") or 0.0
            L.append(f"| {r['nodes']} | {main:.3f} | " + " | ".join(
                f"{st.get(k, 0.0):.3f}" for k in names) + f" | {main - sum(st.values()):.3f} |")
    L += ["", "Messages by type (both directions, summed over the simulated nodes):", ""]
    for r in rows:
        if "messages" in r:
            L.append(f"- {r['nodes']} nodes, {r['tasks']} tasks: " + ", ".join(
                f"{k} {v}" for k, v in r["messages"].items()))
    for r in rows:
        if "profile_tottime" in r:
            L += ["", f"## cProfile of the master, {r['nodes']} nodes, {r['tasks']} tasks "
                  "(by own time)", "", "```", _trim_profile(r["profile_tottime"]), "```"]
    return "\n".join(L) + "\n"


def _trim_profile(text: str) -> str:
    out = []
    for line in text.splitlines():
        if not line.strip() or line.strip().startswith(("Ordered by", "List reduced")):
            continue
        out.append(line.replace(str(ROOT) + "/", "").rstrip())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="4,16,64,256")
    ap.add_argument("--tasks", default="10240", help="map tasks (comma list)")
    ap.add_argument("--split-size", default="1K", help="bytes per split (comma list)")
    ap.add_argument("--slots", type=int, default=2, help="executors per simulated node")
    ap.add_argument("--procs", type=int, default=2, help="simulated-node processes")
    ap.add_argument("--task-fixed-us", type=float, default=100.0)
    ap.add_argument("--cost-ns-per-byte", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--death-timeout", type=float, default=6.0,
                    help="master's node death timeout (pymr default 6 s)")
    ap.add_argument("--profile", action="store_true", help="cProfile the master (slower)")
    ap.add_argument("--steps", action="store_true",
                    help="time the commit path's steps in the master (~1 us per message)")
    ap.add_argument("--ship-bytes", action="store_true",
                    help="the master reads and sends every split (non-local nodes)")
    ap.add_argument("--workdir", type=Path, default=BENCH / "data" / "scale")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS-scale")
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--job-timeout", type=float, default=300.0,
                    help="the master reports where it stands and gives up after this long")
    args = ap.parse_args(argv)
    args.workdir = args.workdir.resolve()
    from pymr.net.security import ClusterKey

    key = ClusterKey.generate()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    meta: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python bench/scale/run_scale.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "slots": args.slots, "procs": args.procs, "task_fixed_us": args.task_fixed_us,
        "cost_ns_per_byte": args.cost_ns_per_byte, "rounds": args.rounds,
        "loadavg_before": run_core._loadavg(), **run_core.machine_info(),
    }
    rows = []
    failed = False
    for n in [int(x) for x in args.nodes.split(",")]:
        for tasks in [int(x) for x in args.tasks.split(",")]:
            for split in [parse_size(x) for x in args.split_size.split(",")]:
                runs = []
                for rnd in range(args.rounds):
                    r = one_run(args, n, tasks, split, key, env, args.profile)
                    runs.append(r)
                    print(f"[{n} nodes, {tasks} tasks, {split} B, round {rnd + 1}] "
                          + brief(r), flush=True)
                row = median_run(runs)
                failed |= not row.get("ok")
                rows.append(row)
    meta["loadavg_after"] = run_core._loadavg()
    md = markdown(rows, meta)
    print()
    print(md)
    res = args.results.resolve()
    res.parent.mkdir(parents=True, exist_ok=True)
    res.with_name(res.name + ".json").write_text(json.dumps(scrub({"meta": meta, "rows": rows}),
                                                            indent=1) + "\n")
    res.with_name(res.name + ".md").write_text(scrub(md))
    print(f"wrote {res}.json and {res}.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
