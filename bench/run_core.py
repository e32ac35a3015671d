"""Core benchmark: pymr's embedded cluster against the plain and Pool baselines.

    python bench/run_core.py --sizes 256M,1G --rounds 3 [--tokenizers words,whitespace]
                             [--engines pymr,plain,pool] [--workdir DIR] [--quick]

1. Generates the inputs with bench/gen_text.py (cached in the work dir by size, seed and
   generator version) and reads each once, so every run finds it in the page cache.
2. Runs interleaved rounds -- round 1 of every (size, tokenizer, engine), then round 2, ...;
   the engine order rotates from round to round -- each run a fresh subprocess:
     pymr   sys.executable -m pymr job wordcount FILE -o OUT --tokenizer T
            (with PYMR_HOME set to a fresh empty directory: no cluster key, so the
            embedded local cluster runs: a cold start)
     plain  sys.executable bench/baselines.py plain FILE -o OUT --tokenizer T
     pool   sys.executable bench/baselines.py pool FILE -o OUT --tokenizer T
3. Checks that every output is byte-identical to the answer for its (size, tokenizer): the
   plain baseline's output (or, without plain, the most common one).
4. Prints a markdown table and writes it and the raw figures to bench/RESULTS-core.md and
   bench/RESULTS-core.json (with --quick: to the work dir, so a smoke run never replaces
   real results).

Figures per run: wall time; CPU seconds of the whole process tree (``getrusage
(RUSAGE_CHILDREN)`` before and after the run: it counts every descendant that was reaped, so
an engine must reap its children for their CPU to count); peak RSS of the root process
("master") and the peak of the summed RSS of all its descendants ("nodes"), sampled from
/proc every 50 ms (RSS counts shared pages in every process that maps them).

The exit status is 0 when every run succeeded and every answer matched, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import gen_text  # noqa: E402  (bench/ is not a package on sys.path when run as a script)
from _public import scrub  # noqa: E402  (local folders out of committed results)
from proctree import run_measured  # noqa: E402

ENGINES = ("pymr", "plain", "pool")
TOKENIZERS = ("words", "whitespace")
LOG_TAIL_CHARS = 2000


# --------------------------------------------------------------------------- one run

@dataclass
class Run:
    engine: str
    size: int
    tokenizer: str
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
    matches: bool | None = None
    error: str = ""
    cmd: list[str] = field(default_factory=list)


def engine_cmd(engine: str, path: Path, out: Path, tokenizer: str, processes: int,
               pymr_args: list[str]) -> list[str]:
    if engine == "pymr":
        return [sys.executable, "-m", "pymr", "job", "wordcount", str(path), "-o", str(out),
                "--tokenizer", tokenizer, *pymr_args]
    cmd = [sys.executable, str(HERE / "baselines.py"), engine, str(path), "-o", str(out),
           "--tokenizer", tokenizer]
    if engine == "pool":
        cmd += ["--processes", str(processes)]
    return cmd


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def first_difference(a: Path, b: Path) -> str:
    """A short description of where two TSV outputs first differ."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for n, (la, lb) in enumerate(itertools.zip_longest(fa, fb, fillvalue=b""), 1):
            if la != lb:
                return f"line {n}: expected {la[:120]!r}, got {lb[:120]!r}"
    return "identical"


def tail(path: Path, n: int = LOG_TAIL_CHARS) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")


# --------------------------------------------------------------------------- inputs

def input_path(workdir: Path, size: int, seed: int) -> Path:
    name = f"text-{gen_text.format_size(size)}-seed{seed}-v{gen_text.GENERATOR_VERSION}.txt"
    return workdir / "inputs" / name


def ensure_input(workdir: Path, size: int, seed: int) -> Path:
    path = input_path(workdir, size, seed)
    if path.exists() and path.stat().st_size == size:
        print(f"input {path.name}: cached", flush=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gen_text.generate(path, size, seed)
    dt = time.perf_counter() - t0
    print(f"input {path.name}: generated in {dt:.1f} s ({size / dt / 1e6:.0f} MB/s)", flush=True)
    return path


def warm(path: Path) -> None:
    """Read the file once so that it is in the page cache for every engine."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 << 20)
        while f.readinto(buf):
            pass


# --------------------------------------------------------------------------- report

def summarise(runs: list[Run], engines: list[str], sizes: list[int],
              tokenizers: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    medians: dict[tuple[str, int, str], float] = {}
    for size in sizes:
        for tok in tokenizers:
            for engine in engines:
                ok = [r for r in runs if (r.engine, r.size, r.tokenizer) == (engine, size, tok)
                      and r.returncode == 0]
                all_runs = [r for r in runs
                            if (r.engine, r.size, r.tokenizer) == (engine, size, tok)]
                row: dict[str, Any] = {
                    "engine": engine, "size": size, "size_label": gen_text.format_size(size),
                    "tokenizer": tok, "runs": len(all_runs), "ok_runs": len(ok),
                    "all_match": all(r.matches for r in all_runs) if all_runs else None,
                    "warnings": sum(len(r.warnings) for r in all_runs),
                }
                if ok:
                    walls = [r.wall_s for r in ok]
                    med = statistics.median(walls)
                    medians[(engine, size, tok)] = med
                    row.update({
                        "wall_median_s": med, "wall_min_s": min(walls), "wall_max_s": max(walls),
                        "throughput_mb_s": size / 1e6 / med,
                        "cpu_median_s": statistics.median(r.cpu_s for r in ok),
                        "master_peak_mib": max(r.master_peak_mib for r in ok),
                        "nodes_peak_mib": max(r.nodes_peak_mib for r in ok),
                    })
                rows.append(row)
    for row in rows:
        own = medians.get((row["engine"], row["size"], row["tokenizer"]))
        for base in ("plain", "pool"):
            ref = medians.get((base, row["size"], row["tokenizer"]))
            row[f"speedup_vs_{base}"] = ref / own if own and ref else None
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        f"Core benchmark, {meta['date']}: {meta['rounds']} interleaved round(s), "
        f"{meta['cpu_count']} CPUs ({meta['cpu_model']}), Python {meta['python']}, "
        f"load average before/after {meta['loadavg_before']} / {meta['loadavg_after']}.",
        "Wall: median (min-max) over rounds; MB/s = 10^6 bytes/s at the median; CPU: median "
        "user+sys seconds of the whole process tree; RSS: peak over rounds, MiB, master = the "
        "engine's root process, nodes = summed descendants; speed-up = baseline median / "
        "engine median.",
        "",
        "| engine | size | tokenizer | wall s | MB/s | CPU s | master RSS | nodes RSS "
        "| vs plain | vs pool | output |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if "wall_median_s" in r:
            wall = (f"{r['wall_median_s']:.2f} ({r['wall_min_s']:.2f}-{r['wall_max_s']:.2f})")
        else:
            wall = "failed"
        check = {True: "identical", False: "DIFFERS", None: "-"}[r["all_match"]]
        if r["ok_runs"] < r["runs"]:
            check += f", {r['runs'] - r['ok_runs']} failed"
        if r["warnings"]:
            check += f", {r['warnings']} warning(s)"
        lines.append(
            f"| {r['engine']} | {r['size_label']} | {r['tokenizer']} | {wall} "
            f"| {num(r.get('throughput_mb_s'), '.1f')} | {num(r.get('cpu_median_s'), '.1f')} "
            f"| {num(r.get('master_peak_mib'), '.0f')} | {num(r.get('nodes_peak_mib'), '.0f')} "
            f"| {num(r.get('speedup_vs_plain'), '.2f')}x | {num(r.get('speedup_vs_pool'), '.2f')}x "
            f"| {check} |")
    return "\n".join(lines).replace("| -x |", "| - |") + "\n"


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    return {
        "cpu_count": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
        "platform": platform.platform(), "git_head": head or None,
        "mem_total_kib": _meminfo_total(),
    }


def _meminfo_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# --------------------------------------------------------------------------- main

def _label(run: Run) -> str:
    return f"{run.engine}-{gen_text.format_size(run.size)}-{run.tokenizer}-r{run.round}"


def _csv(text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if allowed is not None:
        bad = [x for x in items if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; expected some of {allowed}")
    if not items:
        raise argparse.ArgumentTypeError("empty list")
    return items


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="pymr core benchmark: pymr vs plain vs Pool",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--sizes", default=None,
                    help="input sizes (binary units; default 256M,1G; --quick: 16M)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    ap.add_argument("--tokenizers", type=lambda s: _csv(s, TOKENIZERS), default=["words"],
                    help="words,whitespace (default words)")
    ap.add_argument("--engines", type=lambda s: _csv(s, ENGINES), default=list(ENGINES),
                    help="pymr,plain,pool (default all)")
    ap.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    ap.add_argument("--workdir", type=Path, default=HERE / "data",
                    help="inputs, outputs and logs (default bench/data, git-ignored)")
    ap.add_argument("--processes", type=int, default=2, help="pool workers (default 2)")
    ap.add_argument("--pymr-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for `pymr job` (repeatable; use --pymr-arg=--x)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per run, seconds")
    ap.add_argument("--quick", action="store_true",
                    help="smoke mode: 16M, 1 round, results in the work dir")
    ap.add_argument("--results", type=Path, default=None,
                    help="results path without suffix (default bench/RESULTS-core; "
                         "with --quick WORKDIR/RESULTS-core-quick)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep every run's TSV output")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes_text = args.sizes or ("16M" if args.quick else "256M,1G")
    rounds = args.rounds or (1 if args.quick else 3)
    try:
        sizes = [gen_text.parse_size(s) for s in _csv(sizes_text)]
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"run_core: {exc}", file=sys.stderr)
        return 2
    if rounds < 1:
        print("run_core: --rounds must be >= 1", file=sys.stderr)
        return 2
    engines: list[str] = args.engines
    tokenizers: list[str] = args.tokenizers
    workdir: Path = args.workdir.resolve()
    results = args.results or (workdir / "RESULTS-core-quick" if args.quick
                               else HERE / "RESULTS-core")
    outdir = workdir / "out"
    logdir = workdir / "logs"
    for d in (outdir, logdir):
        d.mkdir(parents=True, exist_ok=True)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("PYMR_HOME", None)

    inputs = {size: ensure_input(workdir, size, args.seed) for size in sizes}
    for path in inputs.values():
        warm(path)

    meta: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "rounds": rounds,
        "sizes": sizes, "tokenizers": tokenizers, "engines": engines, "seed": args.seed,
        "generator_version": gen_text.GENERATOR_VERSION, "processes": args.processes,
        "pymr_args": args.pymr_arg, "loadavg_before": _loadavg(), **machine_info(),
    }
    runs: list[Run] = []
    outputs: dict[str, Path] = {}
    seen: dict[tuple[int, str], tuple[str, str]] = {}
    for rnd in range(1, rounds + 1):
        order = engines[(rnd - 1) % len(engines):] + engines[:(rnd - 1) % len(engines)]
        for size in sizes:
            for tok in tokenizers:
                for engine in order:
                    run = Run(engine=engine, size=size, tokenizer=tok, round=rnd)
                    label = _label(run)
                    out = outdir / f"{label}.tsv"
                    out.unlink(missing_ok=True)
                    log_path = logdir / f"{label}.log"
                    run.cmd = engine_cmd(engine, inputs[size], out, tok, args.processes,
                                         args.pymr_arg)
                    run_env = env
                    home = None
                    if engine == "pymr":
                        home = Path(tempfile.mkdtemp(prefix="pymr-home-", dir=workdir))
                        run_env = dict(env, PYMR_HOME=str(home))
                    try:
                        m = run_measured(run.cmd, run_env, log_path, args.timeout, cwd=workdir)
                    finally:
                        if home is not None:
                            shutil.rmtree(home, ignore_errors=True)
                    for k, v in m.items():
                        setattr(run, k, v)
                    for w in run.warnings:
                        print(f"[{label}] WARNING: {w}", flush=True)
                    if run.returncode != 0 or not out.exists():
                        run.error = (f"exit {run.returncode}" if run.returncode
                                     else "no output file") + ": " + tail(log_path, 500)
                        run.matches = False
                        print(f"[{label}] FAILED ({run.error.splitlines()[0]}); "
                              f"log: {log_path}\n{tail(log_path)}", flush=True)
                    else:
                        run.output_sha256 = sha256_file(out)
                        outputs[label] = out
                        first = seen.setdefault((size, tok), (run.output_sha256, label))
                        same = first[0] == run.output_sha256
                        print(f"[{label}] {run.wall_s:7.2f} s wall, {run.cpu_s:7.2f} s CPU, "
                              f"RSS master {run.master_peak_mib:6.0f} MiB, nodes "
                              f"{run.nodes_peak_mib:6.0f} MiB ({run.max_descendants} procs)"
                              f"{'' if same else ', DIFFERS from ' + first[1]}", flush=True)
                    runs.append(run)

    # The answer: the plain baseline's when it ran (and agreed with itself), else the most
    # common output.  Every other output must be byte-identical to it.
    failed = any(r.returncode != 0 or not r.output_sha256 for r in runs)
    references: dict[tuple[int, str], Path] = {}
    for size in sizes:
        for tok in tokenizers:
            group = [r for r in runs if (r.size, r.tokenizer) == (size, tok) and r.output_sha256]
            if not group:
                continue
            plain = {r.output_sha256 for r in group if r.engine == "plain"}
            if len(plain) == 1:
                ref_hash = plain.pop()
            else:
                hashes = [r.output_sha256 for r in group]
                ref_hash = max(hashes, key=hashes.count)
            ref_run = next(r for r in sorted(group, key=lambda r: r.engine != "plain")
                           if r.output_sha256 == ref_hash)
            ref_path = outputs[_label(ref_run)]
            references[(size, tok)] = ref_path
            for r in group:
                r.matches = r.output_sha256 == ref_hash
                if not r.matches:
                    failed = True
                    r.error = "output differs: " + first_difference(ref_path,
                                                                      outputs[_label(r)])
                    print(f"[{_label(r)}] OUTPUT DIFFERS from {ref_path.name}: {r.error}",
                          flush=True)
            if not args.keep_outputs and all(r.matches for r in group):
                for r in group:
                    if outputs[_label(r)] != ref_path:
                        outputs[_label(r)].unlink(missing_ok=True)

    meta["loadavg_after"] = _loadavg()
    ref_stats = {}
    for (size, tok), path in references.items():
        distinct = total = 0
        with open(path, "rb") as f:
            for line in f:
                distinct += 1
                total += int(line.rsplit(b"\t", 1)[1])
        ref_stats[f"{gen_text.format_size(size)}/{tok}"] = {
            "distinct_words": distinct, "total_words": total, "reference": path.name}
    meta["answers"] = ref_stats
    rows = summarise(runs, engines, sizes, tokenizers)
    table = markdown(rows, meta)
    print()
    print(table)
    results.parent.mkdir(parents=True, exist_ok=True)
    json_path = results.with_name(results.name + ".json")
    md_path = results.with_name(results.name + ".md")
    json_path.write_text(json.dumps(scrub({"meta": meta, "summary": rows,
                                           "runs": [asdict(r) for r in runs]}), indent=2) + "\n")
    md_path.write_text(scrub(table))
    print(f"wrote {json_path} and {md_path}")
    if not args.keep_outputs and not failed:
        for path in references.values():
            path.unlink(missing_ok=True)
    if failed:
        print("run_core: some runs failed or gave a different answer (see above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
