"""Job-API benchmark: line jobs against their baselines, word count against the previous pymr.

    python bench/run_jobs.py --sizes 1G --rounds 3 [--jobs bigrams,invert,wordcount]
                             [--wordcount-sizes 1G] [--tokenizers words,whitespace]
                             [--prev-tree DIR] [--workdir DIR] [--quick]

Cases and their engines, each run a fresh subprocess (cwd = the inputs folder, the input
named by its bare file name, so that ``Position.file`` -- and ``invert``'s output -- is the
same short name for every engine):

* ``bigrams``, ``invert`` (any line job of ``--jobs``; sizes ``--sizes``):
    pymr    sys.executable -m pymr job JOB FILE -o OUT   (fresh empty PYMR_HOME: the
            embedded local cluster, a cold start)
    single  sys.executable bench/job_baselines.py single JOB FILE -o OUT
    pool    sys.executable bench/job_baselines.py pool JOB FILE -o OUT --processes 2
* ``wordcount`` (one case per tokenizer; sizes ``--wordcount-sizes``, default ``--sizes``):
    pymr       sys.executable -m pymr job wordcount FILE -o OUT --tokenizer T, this tree
    pymr-prev  the same command with PYTHONPATH = ``--prev-tree`` (a worktree of the commit
               before the job API: ``git worktree add /tmp/pymr-prev e039821``)

Rounds are interleaved (round 1 of every case and engine, then round 2, ...), the engine
order rotating from round to round. Every output must be byte-identical to the case's
answer (the single baseline's, or for word count the most common one). Inputs, warming and
the measurement (wall, CPU of the process tree, peak RSS of master and nodes) are
``run_core``'s. Writes bench/RESULTS-jobs.md and .json (``--quick``: WORKDIR/RESULTS-jobs-quick).
Ratios: speed-up = baseline median wall / engine median wall; for word count, current/prev
of the median wall and CPU, and the median of the per-round ratios (runs of one round are
adjacent, so they share the machine's load).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import gen_text  # noqa: E402
from _public import scrub  # noqa: E402  (local folders out of committed results)
from proctree import run_measured  # noqa: E402
from run_core import (  # noqa: E402
    TOKENIZERS,
    _csv,
    _loadavg,
    ensure_input,
    first_difference,
    machine_info,
    sha256_file,
    tail,
    warm,
)

LINE_ENGINES = ("pymr", "single", "pool")
WC_ENGINES = ("pymr", "pymr-prev")
JOBS = ("bigrams", "invert", "wordcount")


@dataclass
class JobRun:
    case: str                 # "bigrams", "invert", "wordcount/words", ...
    engine: str
    size: int
    round: int
    returncode: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    master_peak_mib: float = 0.0
    nodes_peak_mib: float = 0.0
    max_descendants: int = 0
    rss_samples: int = 0
    observed_cpu_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    output_sha256: str = ""
    output_bytes: int = 0
    matches: bool | None = None
    error: str = ""
    cmd: list[str] = field(default_factory=list)


def label(run: JobRun) -> str:
    return (f"{run.case.replace('/', '-')}-{run.engine}-{gen_text.format_size(run.size)}"
            f"-r{run.round}")


def engine_cmd(case: str, engine: str, name: str, out: Path, processes: int) -> list[str]:
    job, _, tok = case.partition("/")
    if engine in ("pymr", "pymr-prev"):
        cmd = [sys.executable, "-m", "pymr", "job", job, name, "-o", str(out)]
        return cmd + (["--tokenizer", tok] if tok else [])
    cmd = [sys.executable, str(HERE / "job_baselines.py"), engine, job, name, "-o", str(out)]
    return cmd + (["--processes", str(processes)] if engine == "pool" else [])


def _pythonpath(tree: Path) -> str:
    rest = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(tree)] + ([rest] if rest else []))


def _head(tree: Path) -> str | None:
    """The commit checked out in ``tree`` (short), with "+dirty" when it has changes."""
    try:
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=7", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain",
                                "--untracked-files=no", "--", "pymr"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


# --------------------------------------------------------------------------- report

def summarise(runs: list[JobRun], plan: list[tuple[str, int, list[str]]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    med: dict[tuple[str, int, str], tuple[float, float]] = {}
    for case, size, engines in plan:
        for engine in engines:
            group = [r for r in runs if (r.case, r.size, r.engine) == (case, size, engine)]
            ok = [r for r in group if r.returncode == 0]
            row: dict[str, Any] = {
                "case": case, "engine": engine, "size": size,
                "size_label": gen_text.format_size(size), "runs": len(group),
                "ok_runs": len(ok), "all_match": all(r.matches for r in group) if group else None,
                "warnings": sum(len(r.warnings) for r in group),
            }
            if ok:
                walls = [r.wall_s for r in ok]
                row.update({
                    "wall_median_s": statistics.median(walls), "wall_min_s": min(walls),
                    "wall_max_s": max(walls),
                    "throughput_mb_s": size / 1e6 / statistics.median(walls),
                    "cpu_median_s": statistics.median(r.cpu_s for r in ok),
                    "master_peak_mib": max(r.master_peak_mib for r in ok),
                    "nodes_peak_mib": max(r.nodes_peak_mib for r in ok),
                    "output_mib": max(r.output_bytes for r in ok) / (1 << 20),
                })
                med[(case, size, engine)] = (row["wall_median_s"], row["cpu_median_s"])
            rows.append(row)
    for row in rows:
        own = med.get((row["case"], row["size"], row["engine"]))
        for base in ("single", "pool", "pymr-prev"):
            ref = med.get((row["case"], row["size"], base))
            key = base.replace("-", "_")
            row[f"speedup_vs_{key}"] = ref[0] / own[0] if own and ref else None
        prev = med.get((row["case"], row["size"], "pymr-prev"))
        if row["engine"] == "pymr" and own and prev:
            row["wall_ratio_vs_prev"] = own[0] / prev[0]
            row["cpu_ratio_vs_prev"] = own[1] / prev[1]
            paired = []
            for rnd in sorted({r.round for r in runs}):
                pair = {r.engine: r for r in runs if (r.case, r.size, r.round)
                        == (row["case"], row["size"], rnd) and r.returncode == 0}
                if "pymr" in pair and "pymr-prev" in pair:
                    paired.append((pair["pymr"].wall_s / pair["pymr-prev"].wall_s,
                                   pair["pymr"].cpu_s / pair["pymr-prev"].cpu_s))
            if paired:
                row["wall_ratio_per_round"] = [round(w, 4) for w, _ in paired]
                row["cpu_ratio_per_round"] = [round(c, 4) for _, c in paired]
                row["wall_ratio_paired_median"] = statistics.median(w for w, _ in paired)
                row["cpu_ratio_paired_median"] = statistics.median(c for _, c in paired)
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def num(v: Any, fmt: str, suffix: str = "") -> str:
        return "-" if v is None else format(v, fmt) + suffix

    def check(r: dict[str, Any]) -> str:
        text = {True: "identical", False: "DIFFERS", None: "-"}[r["all_match"]]
        if r["ok_runs"] < r["runs"]:
            text += f", {r['runs'] - r['ok_runs']} failed"
        if r["warnings"]:
            text += f", {r['warnings']} warning(s)"
        return text

    def wall(r: dict[str, Any]) -> str:
        if "wall_median_s" not in r:
            return "failed"
        return f"{r['wall_median_s']:.2f} ({r['wall_min_s']:.2f}-{r['wall_max_s']:.2f})"

    lines = [
        f"Job-API benchmark, {meta['date']}: {meta['rounds']} interleaved round(s), "
        f"{meta['cpu_count']} CPUs ({meta['cpu_model']}), Python {meta['python']}, pymr "
        f"{meta.get('tree_head') or meta.get('tree') or '?'}, load average before/after "
        f"{meta['loadavg_before']} / {meta['loadavg_after']}.",
        "Wall: median (min-max) over rounds; MB/s = 10^6 input bytes/s at the median; CPU: "
        "median user+sys seconds of the whole process tree; RSS: peak over rounds, MiB, "
        "master = the engine's root process, nodes = summed descendants; speed-up = "
        "baseline median / engine median.",
    ]
    line_rows = [r for r in rows if not r["case"].startswith("wordcount")]
    if line_rows:
        lines += [
            "", "### Line jobs: pymr vs single process vs Pool (2 workers)", "",
            "| job | engine | size | wall s | MB/s | CPU s | master RSS | nodes RSS "
            "| vs single | vs pool | output |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in line_rows:
            lines.append(
                f"| {r['case']} | {r['engine']} | {r['size_label']} | {wall(r)} "
                f"| {num(r.get('throughput_mb_s'), '.1f')} | {num(r.get('cpu_median_s'), '.1f')} "
                f"| {num(r.get('master_peak_mib'), '.0f')} "
                f"| {num(r.get('nodes_peak_mib'), '.0f')} "
                f"| {num(r.get('speedup_vs_single'), '.2f', 'x')} "
                f"| {num(r.get('speedup_vs_pool'), '.2f', 'x')} | {check(r)} |")
    wc_rows = [r for r in rows if r["case"].startswith("wordcount")]
    if wc_rows:
        lines += [
            "", "### Word count: this tree (pymr) vs the commit before the job API "
            f"(pymr-prev, {meta.get('prev_head') or meta.get('prev_tree')})", "",
            "| tokenizer | engine | size | wall s | MB/s | CPU s | master RSS | nodes RSS "
            "| output |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in wc_rows:
            lines.append(
                f"| {r['case'].partition('/')[2]} | {r['engine']} | {r['size_label']} "
                f"| {wall(r)} | {num(r.get('throughput_mb_s'), '.1f')} "
                f"| {num(r.get('cpu_median_s'), '.1f')} | {num(r.get('master_peak_mib'), '.0f')} "
                f"| {num(r.get('nodes_peak_mib'), '.0f')} | {check(r)} |")
        ratio_rows = [r for r in wc_rows if "wall_ratio_vs_prev" in r]
        if ratio_rows:
            lines += [
                "", "pymr / pymr-prev (< 1: the current tree is faster; target within 3 %):",
                "",
                "| tokenizer | size | wall ratio (of medians) | CPU ratio (of medians) "
                "| wall ratio per round | CPU ratio per round |",
                "| --- | --- | ---: | ---: | --- | --- |",
            ]
            for r in ratio_rows:
                lines.append(
                    f"| {r['case'].partition('/')[2]} | {r['size_label']} "
                    f"| {r['wall_ratio_vs_prev']:.3f} | {r['cpu_ratio_vs_prev']:.3f} "
                    f"| {', '.join(f'{x:.3f}' for x in r.get('wall_ratio_per_round', []))} "
                    f"| {', '.join(f'{x:.3f}' for x in r.get('cpu_ratio_per_round', []))} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main

def _jobs(text: str) -> list[str]:
    items = _csv(text)
    bad = [x for x in items if x.partition("@")[0] not in JOBS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {bad}; expected some of {JOBS}")
    return items


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="pymr job-API benchmark",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--jobs", type=_jobs, default=None,
                    help="bigrams,invert,wordcount (default bigrams,invert, plus wordcount "
                         "when --prev-tree is given); JOB@SIZE+SIZE gives a job its own "
                         "sizes (invert@64M)")
    ap.add_argument("--sizes", default=None,
                    help="input sizes (binary units; default 1G; --quick: 16M)")
    ap.add_argument("--wordcount-sizes", default=None,
                    help="sizes of the word count cases (default: --sizes)")
    ap.add_argument("--tokenizers", type=lambda s: _csv(s, TOKENIZERS),
                    default=list(TOKENIZERS), help="word count tokenizers (default both)")
    ap.add_argument("--engines", type=lambda s: _csv(s, LINE_ENGINES),
                    default=list(LINE_ENGINES), help="line-job engines (default all)")
    ap.add_argument("--tree", type=Path, default=None,
                    help="the checkout whose pymr is measured, baselines' helpers included "
                         "(default this one; a pinned worktree keeps edits out of a run)")
    ap.add_argument("--prev-tree", type=Path, default=None,
                    help="a checkout of the previous pymr (word count's pymr-prev)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    ap.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    ap.add_argument("--workdir", type=Path, default=HERE / "data",
                    help="inputs, outputs and logs (default bench/data, git-ignored)")
    ap.add_argument("--processes", type=int, default=2, help="pool workers (default 2)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per run, seconds")
    ap.add_argument("--quick", action="store_true",
                    help="smoke mode: 16M, 1 round, results in the work dir")
    ap.add_argument("--results", type=Path, default=None,
                    help="results path without suffix (default bench/RESULTS-jobs; "
                         "with --quick WORKDIR/RESULTS-jobs-quick)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep every run's output")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    jobs = args.jobs or (["bigrams", "invert"] + (["wordcount"] if args.prev_tree else []))
    rounds = args.rounds or (1 if args.quick else 3)
    try:
        sizes = [gen_text.parse_size(s)
                 for s in _csv(args.sizes or ("16M" if args.quick else "1G"))]
        wc_sizes = ([gen_text.parse_size(s) for s in _csv(args.wordcount_sizes)]
                    if args.wordcount_sizes else sizes)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"run_jobs: {exc}", file=sys.stderr)
        return 2
    try:
        own_sizes = {job.partition("@")[0]: [gen_text.parse_size(x) for x in
                                             job.partition("@")[2].split("+")]
                     for job in jobs if "@" in job}
    except ValueError as exc:
        print(f"run_jobs: {exc}", file=sys.stderr)
        return 2
    jobs = [job.partition("@")[0] for job in jobs]
    if "wordcount" in jobs and (args.prev_tree is None
                                or not (args.prev_tree / "pymr" / "__main__.py").exists()):
        print("run_jobs: wordcount needs --prev-tree DIR (a checkout with pymr/ in it)",
              file=sys.stderr)
        return 2
    if rounds < 1:
        print("run_jobs: --rounds must be >= 1", file=sys.stderr)
        return 2
    workdir: Path = args.workdir.resolve()
    results = args.results or (workdir / "RESULTS-jobs-quick" if args.quick
                               else HERE / "RESULTS-jobs")
    outdir, logdir = workdir / "out", workdir / "logs"
    for d in (outdir, logdir):
        d.mkdir(parents=True, exist_ok=True)

    # (case, size, engines), in the order the rounds visit them
    plan: list[tuple[str, int, list[str]]] = []
    for job in jobs:
        if job == "wordcount":
            plan += [(f"wordcount/{tok}", size, list(WC_ENGINES))
                     for size in own_sizes.get(job, wc_sizes) for tok in args.tokenizers]
        else:
            plan += [(job, size, list(args.engines)) for size in own_sizes.get(job, sizes)]
    inputs = {size: ensure_input(workdir, size, args.seed)
              for size in sorted({size for _, size, _ in plan})}
    for path in inputs.values():
        warm(path)

    env = dict(os.environ)
    env.pop("PYMR_HOME", None)
    tree = (args.tree or ROOT).resolve()
    env_by_engine = {"pymr": dict(env, PYTHONPATH=_pythonpath(tree))}
    for engine in ("single", "pool"):
        env_by_engine[engine] = env_by_engine["pymr"]
    prev_head = None
    tree_head = _head(tree)
    # Results name a worktree by its commit, never by its folder.
    trees = {} if tree == ROOT.resolve() else {str(tree): tree_head or "<tree>"}
    if args.prev_tree is not None:
        prev = args.prev_tree.resolve()
        env_by_engine["pymr-prev"] = dict(env, PYTHONPATH=_pythonpath(prev))
        prev_head = _head(prev)
        trees[str(prev)] = prev_head or "<prev-tree>"

    meta: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "rounds": rounds,
        "jobs": jobs, "sizes": sizes, "job_sizes": own_sizes,
        "wordcount_sizes": wc_sizes if "wordcount" in jobs else [],
        "tokenizers": args.tokenizers, "seed": args.seed,
        "generator_version": gen_text.GENERATOR_VERSION, "processes": args.processes,
        "tree": scrub(str(tree), trees), "tree_head": tree_head,
        "prev_tree": scrub(str(prev), trees) if args.prev_tree else None,
        "prev_head": prev_head,
        "loadavg_before": _loadavg(), **machine_info(),
    }
    runs: list[JobRun] = []
    outputs: dict[str, Path] = {}
    for rnd in range(1, rounds + 1):
        for case, size, engines in plan:
            shift = (rnd - 1) % len(engines)
            for engine in engines[shift:] + engines[:shift]:
                run = JobRun(case=case, engine=engine, size=size, round=rnd)
                name = label(run)
                out = outdir / f"{name}.tsv"
                out.unlink(missing_ok=True)
                log_path = logdir / f"{name}.log"
                run.cmd = engine_cmd(case, engine, inputs[size].name, out, args.processes)
                run_env = env_by_engine[engine]
                home = None
                if engine.startswith("pymr"):
                    home = Path(tempfile.mkdtemp(prefix="pymr-home-", dir=workdir))
                    run_env = dict(run_env, PYMR_HOME=str(home))
                try:
                    m = run_measured(run.cmd, run_env, log_path, args.timeout,
                                     cwd=inputs[size].parent)
                finally:
                    if home is not None:
                        shutil.rmtree(home, ignore_errors=True)
                for k, v in m.items():
                    setattr(run, k, v)
                for w in run.warnings:
                    print(f"[{name}] WARNING: {w}", flush=True)
                if run.returncode != 0 or not out.exists():
                    run.error = (f"exit {run.returncode}" if run.returncode
                                 else "no output file") + ": " + tail(log_path, 500)
                    run.matches = False
                    print(f"[{name}] FAILED; log: {log_path}\n{tail(log_path)}", flush=True)
                else:
                    run.output_sha256 = sha256_file(out)
                    run.output_bytes = out.stat().st_size
                    outputs[name] = out
                    print(f"[{name}] {run.wall_s:7.2f} s wall, {run.cpu_s:7.2f} s CPU, RSS "
                          f"master {run.master_peak_mib:6.0f} MiB, nodes "
                          f"{run.nodes_peak_mib:6.0f} MiB ({run.max_descendants} procs)",
                          flush=True)
                runs.append(run)

    # The answer of each case: the single baseline's when it agreed with itself, else the
    # most common output. Every output must be byte-identical to it.
    failed = any(r.returncode != 0 or not r.output_sha256 for r in runs)
    for case, size, _ in plan:
        group = [r for r in runs if (r.case, r.size) == (case, size) and r.output_sha256]
        if not group:
            continue
        single = {r.output_sha256 for r in group if r.engine == "single"}
        hashes = [r.output_sha256 for r in group]
        ref_hash = single.pop() if len(single) == 1 else max(hashes, key=hashes.count)
        ref_run = next(r for r in sorted(group, key=lambda r: r.engine != "single")
                       if r.output_sha256 == ref_hash)
        ref_path = outputs[label(ref_run)]
        for r in group:
            r.matches = r.output_sha256 == ref_hash
            if not r.matches:
                failed = True
                r.error = "output differs: " + first_difference(ref_path, outputs[label(r)])
                print(f"[{label(r)}] OUTPUT DIFFERS from {ref_path.name}: {r.error}",
                      flush=True)
        if not args.keep_outputs and all(r.matches for r in group):
            for r in group:
                outputs[label(r)].unlink(missing_ok=True)

    meta["loadavg_after"] = _loadavg()
    rows = summarise(runs, plan)
    table = markdown(rows, meta)
    print()
    print(table)
    results.parent.mkdir(parents=True, exist_ok=True)
    json_path = results.with_name(results.name + ".json")
    md_path = results.with_name(results.name + ".md")
    json_path.write_text(json.dumps(scrub({"meta": meta, "summary": rows,
                                           "runs": [asdict(r) for r in runs]}, trees),
                                    indent=2) + "\n")
    md_path.write_text(scrub(table, trees))
    print(f"wrote {json_path} and {md_path}")
    if failed:
        print("run_jobs: some runs failed or gave a different answer (see above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
