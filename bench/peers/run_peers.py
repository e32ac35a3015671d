"""pymr against the engines a user would pick instead: Dask, PySpark, Ray, mrjob, baselines.

    python bench/peers/run_peers.py --sizes 1M,100M,1G --rounds 3
    python bench/peers/run_peers.py --sizes 1M,100M,1G --rounds 3 --tokenizer whitespace
    python bench/peers/run_peers.py --sizes 1M --rounds 1 --engines pymr,dask-bag,ray-tasks

Every run is a fresh process started as a user would start it (its cluster start included):

| engine        | algorithm | how                                                              |
| ------------- | --------- | ---------------------------------------------------------------- |
| pymr          | pymr      | ``python -m pymr job wordcount FILE -o OUT`` (embedded cluster,  |
|               |           | CURVE on, fresh empty ``PYMR_HOME``: a cold start, no key)        |
| plain         | idiomatic | ``bench/baselines.py plain`` (one process)                        |
| pool          | pymr      | ``bench/baselines.py pool`` (``multiprocessing.Pool`` + Combiner) |
| dask-bag      | idiomatic | ``read_text .map(lower).map(findall).flatten().frequencies()``    |
| dask-fast     | idiomatic | ``read_bytes`` blocks, one Counter task per block                 |
| dask-pymr     | pymr      | futures running ``pymr.wordtokens.Combiner`` over block groups      |
| spark-rdd     | idiomatic | ``textFile.flatMap(findall(lower)).map((w,1)).reduceByKey``       |
| spark-df      | idiomatic | ``read.text`` + ``explode(regexp_extract_all(lower))`` + groupBy   |
| spark-pymr    | pymr      | ``parallelize(blocks).mapPartitions(Combiner)``                   |
| ray-tasks     | idiomatic | one task per block returning a ``Counter``                        |
| ray-pymr      | pymr      | tasks running ``Combiner`` over block groups                      |
| mrjob-words   | idiomatic | mrjob local runner, mapper/combiner/reducer (small files only)    |
| mrjob-pymr    | pymr      | mrjob local runner, Combiner in the mapper (small files only)     |

Peer engines run under ``bench/.venv-peers/bin/python`` (``bench/peers/setup_venv.sh``
creates it from ``bench/requirements-peers.txt``); an engine whose packages (or Java, for
Spark) are missing is reported as skipped.  pymr and the baselines run under this Python.

``--tokenizer`` (``words``, the default, or ``whitespace``) is given to every engine: pymr's
``--tokenizer``, the baselines', and each engine script's own implementation of the rule
(``bench/peers/common.py`` says how each engine spells it).

Rounds are interleaved: round 1 of every (size, engine), then round 2, ...; the engine order
rotates from round to round.  Every answer (TSV ``word<TAB>count``, count desc then word asc
bytewise) must equal pymr's for the same input, word by word; a differing answer is kept and
summarised (words missing, extra, with another count).

Figures per run (``bench/peers/measure.py``): wall time; CPU of every process the run started
(a cgroup v1 ``cpuacct`` group per run: JVMs, Ray and Dask daemons included, even detached
ones; rusage as a fallback); peak summed PSS over those processes; the phases the engine
script reports (imports, cluster up, counted, written).  The smallest size doubles as the
start-up measurement (1 MiB from cold to answer).

Writes ``bench/PEERS.json`` (every run) and ``bench/PEERS.md`` (the tables), for the
whitespace tokenizer ``bench/PEERS-whitespace.*``, or ``--results PATH`` (without suffix).
Exit status 1 when a run failed or an answer differed.
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
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path[:0] = [str(HERE), str(BENCH)]

import gen_text  # noqa: E402
import run_core  # noqa: E402  (inputs, warm-up, machine info, first difference)
from _public import scrub  # noqa: E402  (local folders out of committed results)
from measure import run_measured  # noqa: E402

TOKENIZERS = ("words", "whitespace")
VENV = BENCH / ".venv-peers"
VENV_PY = VENV / "bin" / "python"
MIB = 1 << 20


@dataclass(frozen=True)
class Engine:
    name: str
    family: str            # pymr, baseline, dask, spark, ray, mrjob
    algorithm: str         # idiomatic | pymr
    script: str            # "" for pymr/baselines
    variant: str
    max_size: int = 0      # 0: any size


ENGINES: tuple[Engine, ...] = (
    Engine("pymr", "pymr", "pymr", "", ""),
    Engine("plain", "baseline", "idiomatic", "", "plain"),
    Engine("pool", "baseline", "pymr", "", "pool"),
    Engine("dask-bag", "dask", "idiomatic", "engine_dask.py", "bag"),
    Engine("dask-fast", "dask", "idiomatic", "engine_dask.py", "fast"),
    Engine("dask-pymr", "dask", "pymr", "engine_dask.py", "pymr"),
    Engine("spark-rdd", "spark", "idiomatic", "engine_spark.py", "rdd"),
    Engine("spark-df", "spark", "idiomatic", "engine_spark.py", "df"),
    Engine("spark-pymr", "spark", "pymr", "engine_spark.py", "pymr"),
    Engine("ray-tasks", "ray", "idiomatic", "engine_ray.py", "tasks"),
    Engine("ray-pymr", "ray", "pymr", "engine_ray.py", "pymr"),
    Engine("mrjob-words", "mrjob", "idiomatic", "engine_mrjob.py", "words", 16 * MIB),
    Engine("mrjob-pymr", "mrjob", "pymr", "engine_mrjob.py", "pymr", 16 * MIB),
)
BY_NAME = {e.name: e for e in ENGINES}

#: What each family needs to be importable in the venv (checked once, before any run).
PROBES = {
    "dask": "import dask, dask.bag, distributed; print('dask', dask.__version__, "
            "'distributed', distributed.__version__)",
    "spark": "import pyspark; print('pyspark', pyspark.__version__)",
    "ray": "import ray; print('ray', ray.__version__)",
    "mrjob": "import mrjob; print('mrjob', mrjob.__version__)",
}


@dataclass
class Run:
    engine: str
    size: int
    round: int
    returncode: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    cpu_source: str = ""
    rusage_cpu_s: float = 0.0
    observed_cpu_s: float = 0.0
    pss_peak_mib: float = 0.0
    rss_peak_mib: float = 0.0
    root_pss_peak_mib: float = 0.0
    max_procs: int = 0
    samples: int = 0
    timing: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    output_sha256: str = ""
    matches: bool | None = None
    diff: str = ""
    error: str = ""
    cmd: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- set-up

def java_home() -> str | None:
    java = shutil.which("java")
    if not java:
        return None
    real = Path(os.path.realpath(java))
    return str(real.parent.parent)


def probe_engines(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(family -> versions line, family -> why skipped)."""
    versions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    if not VENV_PY.exists():
        for fam in PROBES:
            skipped[fam] = f"no venv at {VENV} (run bench/peers/setup_venv.sh)"
        return versions, skipped
    for fam, code in PROBES.items():
        try:
            r = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True,
                               env=env, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            skipped[fam] = f"probe failed: {exc}"
            continue
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            skipped[fam] = f"not installed in {VENV.name}: {last}"
        else:
            versions[fam] = r.stdout.strip()
    if "spark" in versions:
        try:
            r = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=60)
            versions["java"] = (r.stderr.strip().splitlines() or ["?"])[0]
        except (OSError, subprocess.SubprocessError):
            skipped["spark"] = "no java on PATH"
            versions.pop("spark")
    return versions, skipped


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    path = os.pathsep.join([str(ROOT), str(BENCH), str(HERE)])
    env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PEERS_PATH"] = path
    env.pop("PYMR_HOME", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYSPARK_PYTHON"] = str(VENV_PY)
    env["PYSPARK_DRIVER_PYTHON"] = str(VENV_PY)
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    jh = java_home()
    if jh and "JAVA_HOME" not in env:
        env["JAVA_HOME"] = jh
    return env


def engine_cmd(e: Engine, path: Path, out: Path, workers: int,
               tokenizer: str = "words") -> list[str]:
    tok = ["--tokenizer", tokenizer]
    if e.family == "pymr":
        return [sys.executable, "-m", "pymr", "job", "wordcount", str(path), "-o", str(out),
                *tok]
    if e.family == "baseline":
        cmd = [sys.executable, str(BENCH / "baselines.py"), e.variant, str(path), "-o", str(out),
               *tok]
        return cmd + (["--processes", str(workers)] if e.variant == "pool" else [])
    return [str(VENV_PY), str(HERE / e.script), e.variant, str(path), "-o", str(out),
            "--workers", str(workers), *tok]


def stray_pymr() -> list[int]:
    """pids of pymr processes running now (a cold start means none)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a in (b"pymr", b"pymr.runtime._embedded_node") or a.endswith(b"/pymr")
               for a in argv):
            out.append(int(name))
    return out


# --------------------------------------------------------------------------- answers

def read_tsv(path: Path) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line in f:
            w, _, n = line.rstrip(b"\n").rpartition(b"\t")
            out[w] = int(n)
    return out


def word_diff(ref: Path, other: Path) -> str:
    """Word-by-word comparison summary of two answers."""
    a, b = read_tsv(ref), read_tsv(other)
    missing = [w for w in a if w not in b]
    extra = [w for w in b if w not in a]
    changed = [w for w in a if w in b and a[w] != b[w]]
    if not (missing or extra or changed):
        return "same words and counts, different order/format: " + \
            run_core.first_difference(ref, other)

    def show(ws: list[bytes], d: dict[bytes, int]) -> str:
        ws = sorted(ws, key=lambda w: -d[w])[:5]
        return ", ".join(f"{w.decode('utf-8', 'replace')!r}={d[w]}" for w in ws)

    parts = [f"{len(a)} words expected, {len(b)} given"]
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {show(missing, a)})")
    if extra:
        parts.append(f"{len(extra)} extra (e.g. {show(extra, b)})")
    if changed:
        ex = ", ".join(f"{w.decode('utf-8', 'replace')!r}: {a[w]} vs {b[w]}"
                       for w in sorted(changed, key=lambda w: -a[w])[:5])
        parts.append(f"{len(changed)} with another count (e.g. {ex})")
    return "; ".join(parts)


def parse_timing(log_path: Path) -> dict[str, Any]:
    try:
        text = log_path.read_text("utf-8", "replace")
    except OSError:
        return {}
    for line in reversed(text.splitlines()):
        if line.startswith("PEERS-TIMING "):
            try:
                return json.loads(line[len("PEERS-TIMING "):])
            except ValueError:
                return {}
    return {}


# --------------------------------------------------------------------------- report

def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def summarise(runs: list[Run], engines: list[Engine], sizes: list[int],
              skipped: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        pool_cpu = None
        pymr_wall = None
        for e in engines:
            ok = [r for r in runs if r.engine == e.name and r.size == size and r.returncode == 0]
            if e.name == "pool" and ok:
                pool_cpu = _med([r.cpu_s for r in ok])
            if e.name == "pymr" and ok:
                pymr_wall = _med([r.wall_s for r in ok])
        for e in engines:
            every = [r for r in runs if r.engine == e.name and r.size == size]
            ok = [r for r in every if r.returncode == 0]
            row: dict[str, Any] = {
                "engine": e.name, "family": e.family, "algorithm": e.algorithm, "size": size,
                "size_label": gen_text.format_size(size), "runs": len(every), "ok_runs": len(ok),
                "all_match": (all(r.matches for r in every) if every else None),
                "warnings": sum(len(r.warnings) for r in every),
            }
            if e.family in skipped:
                row["skipped"] = skipped[e.family]
            elif e.max_size and size > e.max_size:
                row["skipped"] = f"small files only (<= {gen_text.format_size(e.max_size)})"
            if ok:
                walls = [r.wall_s for r in ok]
                cpus = [r.cpu_s for r in ok]
                pss = [r.pss_peak_mib for r in ok]
                med = _med(walls)
                row.update({
                    "wall_median_s": med, "wall_min_s": min(walls), "wall_max_s": max(walls),
                    "throughput_mb_s": size / 1e6 / med,
                    "cpu_median_s": _med(cpus), "cpu_min_s": min(cpus), "cpu_max_s": max(cpus),
                    "cpu_s_per_gib": _med(cpus) * (1 << 30) / size,
                    "pss_median_mib": _med(pss), "pss_min_mib": min(pss),
                    "pss_max_mib": max(pss),
                    "procs": max(r.max_procs for r in ok),
                    "cpu_vs_pool": _med(cpus) / pool_cpu if pool_cpu else None,
                    "pymr_speedup": med / pymr_wall if pymr_wall else None,
                })
                for phase in ("imported", "cluster", "counted", "written"):
                    vals = [r.timing[phase] for r in ok if phase in r.timing]
                    if vals:
                        row[f"t_{phase}_s"] = _med(vals)
            rows.append(row)
    return rows


def verdicts(rows: list[dict[str, Any]], sizes: list[int]) -> list[str]:
    out = []
    for size in sizes:
        group = [r for r in rows if r["size"] == size and "wall_median_s" in r]
        pymr = next((r for r in group if r["engine"] == "pymr"), None)
        if pymr is None:
            continue
        label = gen_text.format_size(size)
        peers = [r for r in group if r["family"] not in ("pymr", "baseline")]
        idiom = [r for r in peers if r["algorithm"] == "idiomatic"]
        algo = [r for r in peers if r["algorithm"] == "pymr"]
        if idiom:
            best = min(idiom, key=lambda r: r["wall_median_s"])
            out.append(f"{label}: pymr {pymr['wall_median_s']:.2f} s vs the fastest idiomatic "
                       f"engine {best['engine']} {best['wall_median_s']:.2f} s: "
                       f"{best['wall_median_s'] / pymr['wall_median_s']:.2f}x (target >= 1.5x)")
        if algo:
            best = min(algo, key=lambda r: r["wall_median_s"])
            out.append(f"{label}: fastest engine running pymr's algorithm {best['engine']} "
                       f"{best['wall_median_s']:.2f} s: pymr is "
                       f"{best['wall_median_s'] / pymr['wall_median_s']:.2f}x (target >= 1.0x)")
        if pymr.get("cpu_vs_pool") is not None:
            out.append(f"{label}: pymr CPU {pymr['cpu_median_s']:.2f} s = "
                       f"{pymr['cpu_vs_pool']:.2f}x the pool baseline's (target <= 1.15x)")
        mem_peers = [r for r in peers if "pss_median_mib" in r]
        if mem_peers:
            low = min(mem_peers, key=lambda r: r["pss_median_mib"])
            out.append(f"{label}: pymr peak PSS {pymr['pss_median_mib']:.0f} MiB; lowest engine "
                       f"{low['engine']} {low['pss_median_mib']:.0f} MiB"
                       + (" (pymr below every engine)" if pymr["pss_median_mib"]
                          < low["pss_median_mib"] else " (pymr NOT below every engine)"))
    small = min(sizes) if sizes else None
    for r in rows:
        if small is not None and small <= 16 * MIB and r["size"] == small \
                and r["engine"] == "pymr" and "wall_median_s" in r:
            out.append(f"start-up ({gen_text.format_size(small)} from cold to answer): pymr "
                       f"{r['wall_median_s']:.2f} s (target < 0.7 s)")
    return out


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any], sizes: list[int]) -> str:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    L = [
        f"# pymr against peer engines, {meta.get('tokenizer', 'words')} tokenizer "
        f"({meta['date']})",
        "",
        f"{meta['rounds']} interleaved round(s); {meta['cpu_count']} CPUs ({meta['cpu_model']}), "
        f"Python {meta['python']}, {meta['workers']} workers per engine; load average "
        f"before/after {meta['loadavg_before']} / {meta['loadavg_after']}; git {meta['git_head']}.",
        "",
        *([f"**Partial: {meta['partial']}** (the run was still going when this was written).", ""]
          if meta.get("partial") else []),
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in sorted(meta["versions"].items())),
        "",
        "Command: `" + meta["command"] + "`",
        "",
        "Wall and CPU: median (min-max) over rounds.  CPU: user+sys of every process of the run "
        f"({meta['cpu_source']}).  PSS: peak of the summed PSS of every process of the run, "
        "median over rounds, MiB.  MB/s = 10^6 bytes / median wall.  CPU/GiB = median CPU "
        "scaled to 1 GiB; vs pool = CPU / the pool baseline's.  vs pymr = engine wall / pymr wall "
        "(> 1: pymr is faster).  algorithm: idiomatic = what the engine's users write; pymr = "
        "`pymr.wordtokens.Combiner` inside the engine.",
        "",
    ]
    for size in sizes:
        L += [f"## {gen_text.format_size(size)}", "",
              "| engine | algorithm | wall s | MB/s | CPU s | CPU/GiB | vs pool | PSS MiB "
              "| procs | vs pymr | answer |",
              "| --- | --- | --- | ---: | --- | ---: | ---: | --- | ---: | ---: | --- |"]
        for r in (x for x in rows if x["size"] == size):
            if "skipped" in r and not r["runs"]:
                L.append(f"| {r['engine']} | {r['algorithm']} | skipped: {r['skipped']} "
                         "| | | | | | | | |")
                continue
            if "wall_median_s" in r:
                wall = f"{r['wall_median_s']:.2f} ({r['wall_min_s']:.2f}-{r['wall_max_s']:.2f})"
                cpu = f"{r['cpu_median_s']:.2f} ({r['cpu_min_s']:.2f}-{r['cpu_max_s']:.2f})"
                pss = f"{r['pss_median_mib']:.0f} ({r['pss_min_mib']:.0f}-{r['pss_max_mib']:.0f})"
            else:
                wall = cpu = pss = "failed"
            check = {True: "= pymr", False: "DIFFERS", None: "-"}[r["all_match"]]
            if r["ok_runs"] < r["runs"]:
                check += f", {r['runs'] - r['ok_runs']} failed"
            if r["warnings"]:
                check += f", {r['warnings']} warning(s)"
            L.append(f"| {r['engine']} | {r['algorithm']} | {wall} "
                     f"| {num(r.get('throughput_mb_s'), '.1f')} | {cpu} "
                     f"| {num(r.get('cpu_s_per_gib'), '.1f')} | {num(r.get('cpu_vs_pool'), '.2f')} "
                     f"| {pss} | {r.get('procs', '-')} | {num(r.get('pymr_speedup'), '.2f')} "
                     f"| {check} |")
        L.append("")
    small = min(sizes)
    L += [f"## Start-up: {gen_text.format_size(small)} from cold to answer", "",
          "Each run starts its engine as a user would (cluster start included), counts the "
          "file and writes the answer.  Phases are the engine script's own clock from its "
          "interpreter start (imports; cluster/session up; answer in the driver; file written); "
          "pymr reports none (one process, its embedded cluster inside).", "",
          "| engine | wall s | imports s | cluster up s | counted s | written s |",
          "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in (x for x in rows if x["size"] == small and "wall_median_s" in x):
        L.append(f"| {r['engine']} | {r['wall_median_s']:.2f} ({r['wall_min_s']:.2f}-"
                 f"{r['wall_max_s']:.2f}) | {num(r.get('t_imported_s'), '.2f')} "
                 f"| {num(r.get('t_cluster_s'), '.2f')} | {num(r.get('t_counted_s'), '.2f')} "
                 f"| {num(r.get('t_written_s'), '.2f')} |")
    L += ["", "## Against the targets", ""] + [f"- {v}" for v in meta["verdicts"]]
    diffs = meta.get("differences") or []
    if diffs:
        L += ["", "## Answers that differ from pymr's", ""] + [f"- {d}" for d in diffs]
    if meta.get("skipped"):
        L += ["", "## Skipped", ""] + [f"- {k}: {v}" for k, v in meta["skipped"].items()]
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="pymr against Dask, Spark, Ray, mrjob",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--sizes", default="1M,100M,1G", help="input sizes (default 1M,100M,1G)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--engines", default=",".join(e.name for e in ENGINES),
                    help="comma-separated subset of: " + ",".join(e.name for e in ENGINES))
    ap.add_argument("--workers", type=int, default=2, help="worker processes/cores (default 2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokenizer", choices=TOKENIZERS, default="words",
                    help="words (default) or whitespace, for every engine")
    ap.add_argument("--workdir", type=Path, default=BENCH / "data",
                    help="inputs, outputs, logs (default bench/data, git-ignored)")
    ap.add_argument("--results", type=Path, default=None,
                    help="results path without suffix (default bench/PEERS, "
                         "bench/PEERS-whitespace for that tokenizer)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per run, seconds")
    ap.add_argument("--mrjob-max", default="16M",
                    help="largest input mrjob runs on (default 16M)")
    ap.add_argument("--no-cgroup", action="store_true",
                    help="count CPU with rusage only (no cpuacct group per run)")
    ap.add_argument("--keep-outputs", action="store_true")
    return ap


def report(runs: list[Run], outputs: dict[tuple[str, int, int], Path], sizes: list[int],
           engines: list[Engine], skipped: dict[str, str], meta: dict[str, Any],
           cpu_sources: set[str], args: argparse.Namespace, final: bool
           ) -> tuple[bool, dict[int, Path]]:
    """Check answers and write the tables; called after every round so a long run that is
    stopped early still leaves its finished rounds on disk (answers are kept until final)."""
    # Answers: pymr's (its first successful run) is the reference for each size.
    failed = any(r.returncode != 0 or not r.output_sha256 for r in runs)
    differences: list[str] = []
    refs: dict[int, Path] = {}
    for size in sizes:
        group = [r for r in runs if r.size == size and r.output_sha256]
        ref_run = next((r for r in group if r.engine == "pymr"), None) or \
            next((r for r in group if r.engine == "plain"), None)
        if ref_run is None:
            continue
        ref_path = outputs[(ref_run.engine, size, ref_run.round)]
        refs[size] = ref_path
        for r in group:
            r.matches = r.output_sha256 == ref_run.output_sha256
            if not r.matches:
                failed = True
                r.diff = word_diff(ref_path, outputs[(r.engine, size, r.round)])
                msg = (f"{r.engine} {gen_text.format_size(size)} round {r.round}: {r.diff} "
                       f"(answer kept: {outputs[(r.engine, size, r.round)]})")
                differences.append(msg)
                print("DIFFERS: " + msg, flush=True)
        if final and not args.keep_outputs:
            for r in group:
                p = outputs[(r.engine, size, r.round)]
                if r.matches and p != ref_path:
                    p.unlink(missing_ok=True)
    meta["loadavg_after"] = run_core._loadavg()
    meta["cpu_source"] = ("cgroup v1 cpuacct per run" if cpu_sources == {"cgroup"}
                          else "getrusage of reaped children" if cpu_sources == {"rusage"}
                          else "mixed: " + ",".join(sorted(cpu_sources)))
    meta["differences"] = differences
    meta["answers"] = {}
    for size, path in refs.items():
        d = read_tsv(path)
        meta["answers"][gen_text.format_size(size)] = {
            "distinct_words": len(d), "total_words": sum(d.values()), "reference": path.name}
    rows = summarise(runs, engines, sizes, skipped)
    meta["verdicts"] = verdicts(rows, sizes)
    table = markdown(rows, meta, sizes)
    if final:
        print()
        print(table)
    res = args.results.resolve()
    res.parent.mkdir(parents=True, exist_ok=True)
    res.with_name(res.name + ".json").write_text(json.dumps(scrub(
        {"meta": meta, "summary": rows, "runs": [asdict(r) for r in runs]}), indent=1) + "\n")
    res.with_name(res.name + ".md").write_text(scrub(table))
    print(f"wrote {res}.json and {res}.md" + ("" if final else " (partial)"), flush=True)
    return failed, refs


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.results is None:
        args.results = BENCH / ("PEERS" if args.tokenizer == "words"
                                else f"PEERS-{args.tokenizer}")
    try:
        sizes = [gen_text.parse_size(s) for s in args.sizes.split(",") if s.strip()]
        mrjob_max = gen_text.parse_size(args.mrjob_max)
    except ValueError as exc:
        print(f"run_peers: {exc}", file=sys.stderr)
        return 2
    names = [x.strip() for x in args.engines.split(",") if x.strip()]
    bad = [n for n in names if n not in BY_NAME]
    if bad or args.rounds < 1 or not sizes:
        print(f"run_peers: unknown engine(s) {bad}" if bad else "run_peers: bad rounds/sizes",
              file=sys.stderr)
        return 2
    engines = [BY_NAME[n] if BY_NAME[n].family != "mrjob"
               else Engine(**{**asdict(BY_NAME[n]), "max_size": mrjob_max}) for n in names]
    if "pymr" not in names:
        print("run_peers: note: without pymr the answers are checked against plain's",
              file=sys.stderr)
    workdir = args.workdir.resolve()
    outdir, logdir = workdir / "peers-out", workdir / "peers-logs"
    for d in (outdir, logdir):
        d.mkdir(parents=True, exist_ok=True)
    env = engine_env()
    versions, skipped = probe_engines(env)
    for fam, why in skipped.items():
        if any(e.family == fam for e in engines):
            print(f"skipping {fam}: {why}", flush=True)
    inputs = {s: run_core.ensure_input(workdir, s, args.seed) for s in sizes}
    for p in inputs.values():
        run_core.warm(p)
    meta: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "rounds": args.rounds,
        "sizes": sizes, "engines": names, "workers": args.workers, "seed": args.seed,
        "tokenizer": args.tokenizer,
        "generator_version": gen_text.GENERATOR_VERSION, "versions": versions,
        "skipped": {f: w for f, w in skipped.items() if any(e.family == f for e in engines)},
        "command": "python bench/peers/run_peers.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "loadavg_before": run_core._loadavg(), **run_core.machine_info(),
    }
    meta["versions"]["python"] = meta["python"]
    runs: list[Run] = []
    outputs: dict[tuple[str, int, int], Path] = {}
    cpu_sources: set[str] = set()
    for rnd in range(1, args.rounds + 1):
        k = (rnd - 1) % len(engines)
        order = engines[k:] + engines[:k]
        for size in sizes:
            for e in order:
                if e.family in skipped or (e.max_size and size > e.max_size):
                    continue
                label = f"{e.name}-{gen_text.format_size(size)}-{args.tokenizer}-r{rnd}"
                out = outdir / f"{label}.tsv"
                out.unlink(missing_ok=True)
                log_path = logdir / f"{label}.log"
                run = Run(engine=e.name, size=size, round=rnd,
                          cmd=engine_cmd(e, inputs[size], out, args.workers, args.tokenizer))
                run_env = env
                home = None
                if e.family == "pymr":
                    strays = stray_pymr()
                    if strays:
                        run.warnings.append(f"not cold: pymr processes running {strays[:5]}")
                    home = Path(tempfile.mkdtemp(prefix="pymr-home-", dir=workdir))
                    run_env = dict(env, PYMR_HOME=str(home))
                try:
                    m = run_measured(run.cmd, run_env, log_path, args.timeout, cwd=workdir,
                                     use_cgroup=not args.no_cgroup)
                finally:
                    if home is not None:
                        shutil.rmtree(home, ignore_errors=True)
                w = run.warnings
                for key, v in m.items():
                    setattr(run, key, v)
                run.warnings = w + run.warnings
                cpu_sources.add(run.cpu_source)
                run.timing = parse_timing(log_path)
                for msg in run.warnings:
                    print(f"[{label}] WARNING: {msg}", flush=True)
                if run.returncode != 0 or not out.exists():
                    run.error = (f"exit {run.returncode}" if run.returncode
                                 else "no output file") + ": " + run_core.tail(log_path, 800)
                    run.matches = False
                    print(f"[{label}] FAILED ({run.error.splitlines()[0]}); log {log_path}\n"
                          f"{run_core.tail(log_path, 1500)}", flush=True)
                else:
                    run.output_sha256 = run_core.sha256_file(out)
                    outputs[(e.name, size, rnd)] = out
                    print(f"[{label}] {run.wall_s:7.2f} s wall, {run.cpu_s:7.2f} s CPU "
                          f"({run.cpu_source}), PSS {run.pss_peak_mib:6.0f} MiB, "
                          f"{run.max_procs} procs", flush=True)
                runs.append(run)

        if rnd < args.rounds:
            meta["partial"] = f"after round {rnd} of {args.rounds}"
            report(runs, outputs, sizes, engines, skipped, meta, cpu_sources, args, final=False)
    meta.pop("partial", None)
    failed, refs = report(runs, outputs, sizes, engines, skipped, meta, cpu_sources, args,
                          final=True)
    if not args.keep_outputs and not failed:
        for p in refs.values():
            p.unlink(missing_ok=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
