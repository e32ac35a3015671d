"""Data bigger than memory: counting millions of distinct keys under a memory budget.

    python bench/run_memory.py --size 1G --distinct 6500000 --memory 128M --rounds 3
                               [--workdir DIR] [--quick]

The input is one hex id per line (``%016x``), ``--distinct`` different ids drawn at
random, so the answer is the count of each id: what ``sort | uniq -c`` computes. Engines,
each a fresh process, interleaved round by round (the order rotates):

  pymr-budget   python -m pymr job wordcount FILE --tokenizer whitespace --memory M -o OUT
  pymr          the same without --memory (the node's default budget, which does not bind)
  sort-uniq     LC_ALL=C sort -S M --parallel=2 FILE | uniq -c   (GNU sort, same memory)
  dict          a single-process Python dict (collections.Counter over the lines)

Figures: wall time, the peak RSS of every process of the run (sampled from /proc every
20 ms; the largest is reported, with the largest pymr node process on its own), and the
bytes pymr spilled (from its summary). Every answer is checked: pymr's outputs against each
other byte for byte, and the set of (id, count) pairs against the dict's.

Targets: pymr-budget at most 1.5x pymr's wall time; every pymr node process under its share
(M / executors) plus PROCESS_OVERHEAD; pymr-budget faster than sort-uniq.
Results go to bench/RESULTS-memory.md and .json (with --quick: to the work dir).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _public import scrub  # noqa: E402  (local folders out of committed results)

from pymr.config import PROCESS_OVERHEAD  # noqa: E402

ENGINES = ("pymr-budget", "pymr", "sort-uniq", "dict")
MiB = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units \
        else int(text)


def generate(path: Path, size: int, distinct: int, seed: int = 7) -> None:
    """``size`` bytes of ``%016x`` lines drawn from ``distinct`` ids (cached by name)."""
    if path.exists() and path.stat().st_size == size - size % 17:
        return
    rng = random.Random(seed)
    ids = [rng.getrandbits(64) for _ in range(distinct)]
    lines = size // 17
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for start in range(0, lines, 1 << 16):
            n = min(1 << 16, lines - start)
            f.write("".join(f"{ids[rng.randrange(distinct)]:016x}\n" for _ in range(n)))
    os.replace(tmp, path)


def command(engine: str, path: Path, out: Path, memory: str) -> list[str]:
    py = sys.executable
    if engine.startswith("pymr"):
        cmd = [py, "-m", "pymr", "job", "wordcount", str(path), "--tokenizer", "whitespace",
               "-o", str(out), "--force"]
        return cmd + (["--memory", memory] if engine == "pymr-budget" else [])
    if engine == "sort-uniq":
        return ["sh", "-c", f"LC_ALL=C sort -S {memory} --parallel=2 -T {out.parent} "
                f"'{path}' | uniq -c > '{out}'"]
    return [py, "-c", "import collections, sys\n"
            "c = collections.Counter(open(sys.argv[1], 'rb'))\n"
            "with open(sys.argv[2], 'wb') as f:\n"
            "    f.writelines(b'%d %s' % (n, k) for k, n in c.items())\n",
            str(path), str(out)]


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out.extend(_tree(int(child)))
    except OSError:
        pass
    return out


def _rss_and_name(pid: int) -> tuple[int, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            name = f.read().replace(b"\0", b" ").decode(errors="replace")
        return int(fields.get("VmRSS", "0 kB").split()[0]) * 1024, name
    except (OSError, ValueError):
        return 0, ""


def run(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    peaks: dict[int, tuple[int, str]] = {}
    with open(log, "wb") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=env)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for pid in _tree(proc.pid):
                    rss, name = _rss_and_name(pid)
                    if rss > peaks.get(pid, (0, ""))[0]:
                        peaks[pid] = (rss, name)
                done.wait(0.02)

        t = threading.Thread(target=sample)
        t.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        done.set()
        t.join()
    text = log.read_text(errors="replace")
    spilled = 0.0
    if "spilled " in text:
        spilled = float(text.split("spilled ")[-1].split(" MiB")[0].replace(",", ""))
    nodes = [rss for rss, name in peaks.values() if "_embedded_node" in name
             or "multiprocessing" in name]
    return {"rc": rc, "wall_s": wall, "peak_rss": max((r for r, _ in peaks.values()),
                                                       default=0),
            "peak_node_rss": max(nodes, default=0), "spilled_mib": spilled}


def pairs(engine: str, out: Path) -> set[tuple[bytes, int]]:
    result = set()
    with open(out, "rb") as f:
        for line in f:
            a, b = line.split()
            if engine.startswith("pymr"):
                result.add((a, int(b)))
            else:
                result.add((b, int(a)))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--distinct", type=int, default=6_500_000)
    ap.add_argument("--memory", default="128M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "pymr-bench"))
    ap.add_argument("--quick", action="store_true", help="16M, 200,000 ids, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.size, args.distinct, args.rounds, args.memory = "16M", 200_000, 1, "8M"
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    size = parse_size(args.size)
    path = work / f"ids-{args.size}-{args.distinct}.txt"
    generate(path, size, args.distinct)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYMR_HOME=str(work / "home-empty"))
    engines = args.engines.split(",")
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    for r in range(args.rounds):
        order = engines[r % len(engines):] + engines[:r % len(engines)]
        for engine in order:
            out = work / f"out-{engine}.txt"
            res = run(command(engine, path, out, args.memory), env, work / f"{engine}.log")
            if res["rc"] != 0:
                print(f"{engine} failed: see {work / f'{engine}.log'}", file=sys.stderr)
                return 1
            runs[engine].append(res)
            print(f"round {r + 1} {engine}: {res['wall_s']:.2f} s, peak process "
                  f"{res['peak_rss'] / MiB:.0f} MiB, spilled {res['spilled_mib']:.0f} MiB",
                  flush=True)
    answers = {e: pairs(e, work / f"out-{e}.txt") for e in engines}
    agree = len({frozenset(a) for a in answers.values()}) == 1
    if "pymr" in engines and "pymr-budget" in engines:
        agree = agree and (work / "out-pymr.txt").read_bytes() == \
            (work / "out-pymr-budget.txt").read_bytes()
    med = {e: statistics.median(x["wall_s"] for x in v) for e, v in runs.items()}
    share = parse_size(args.memory) // (os.cpu_count() or 1)
    lines = [f"# Memory budget: {args.size} of {args.distinct:,} distinct ids, "
             f"--memory {args.memory}", "",
             f"`python bench/run_memory.py --size {args.size} --distinct {args.distinct} "
             f"--memory {args.memory} --rounds {args.rounds}`; every answer equal: {agree}",
             "", "| engine | wall s (median, min-max) | peak process RSS MiB | "
             "peak node process MiB | spilled MiB | vs pymr |", "| --- | --- | ---: | ---: | "
             "---: | ---: |"]
    for e, v in runs.items():
        walls = [x["wall_s"] for x in v]
        ratio = med[e] / med["pymr"] if "pymr" in med else 0
        lines.append(f"| {e} | {med[e]:.2f} ({min(walls):.2f}-{max(walls):.2f}) | "
                     f"{max(x['peak_rss'] for x in v) / MiB:.0f} | "
                     f"{max(x['peak_node_rss'] for x in v) / MiB:.0f} | "
                     f"{max(x['spilled_mib'] for x in v):.0f} | {ratio:.2f}x |")
    lines += ["", f"Share per executor: {share / MiB:.0f} MiB; overhead allowed "
              f"{PROCESS_OVERHEAD / MiB:.0f} MiB per process."]
    text = "\n".join(lines) + "\n"
    print(text)
    dest = work if args.quick else HERE
    (dest / "RESULTS-memory.md").write_text(scrub(text))
    (dest / "RESULTS-memory.json").write_text(json.dumps(scrub(runs), indent=1))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
