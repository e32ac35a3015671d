"""Per-record overhead of line jobs, in process: where the time of a map call and of an
emitted pair goes, on the executor side and on the reduce side.

    python bench/profile_jobs.py [--jobs bigrams,invert] [--sample 64M] [--top 15]

On a generated sample (``bench/gen_text.py``, cached in the work dir like run_core's inputs),
cut into pymr's line-aligned 16 MiB splits (``plan_file_splits(lines=True)``, first line
numbers counted as the master counts them), for each job:

1. timings (best of ``--repeat``), reported as ns per map call (= per line) and per emitted
   pair:
   * ``decode``: ``pymr.engine.mapside.split_lines`` of every split (UTF-8 decode, split at \\n);
   * ``bare map``: the job's ``map`` called on every line and its pairs iterated, nothing
     kept (the job's own cost);
   * ``MapSide``: ``pymr.engine.mapside.MapSide`` (one per executor: the splits dealt to two
     sides, as two executors get them) ``add_split`` + ``finish``, decode included;
   * ``single-process loop``: the single-process baseline's own loop
     (``job_baselines.Mapper``: map into one dict), decode included, and what MapSide
     costs beyond it;
   * ``pack`` / ``unpack``: ``pymr.wire.protocol.pack_chunk`` / ``unpack_chunk`` of the two
     map outputs (one partition here; the engine packs one chunk list per partition);
   * ``ReduceSide``: ``add_chunk`` of both unpacked chunks + ``finish`` (reduce, sort);
   * ``write``: ``pymr.engine.output.write_tsv`` of the sorted records into memory.
2. a cProfile of the map path (MapSide over every split + finish) and of the reduce path
   (unpack + ReduceSide + write_tsv), the top functions by tottime.

The sample is named by its bare file name in positions, as run_jobs.py names its inputs.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.util
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
if importlib.util.find_spec("pymr") is None:   # not installed nor on PYTHONPATH
    sys.path.insert(0, str(ROOT))

import gen_text  # noqa: E402
from _public import scrub  # noqa: E402  (its output is pasted into committed pages)
from job_baselines import Mapper, lines_of  # noqa: E402
from run_core import _csv, ensure_input  # noqa: E402

from pymr import api  # noqa: E402
from pymr.engine.mapside import MapSide, split_lines  # noqa: E402
from pymr.engine.output import write_tsv  # noqa: E402
from pymr.engine.reduceside import ReduceSide  # noqa: E402
from pymr.engine.splits import plan_file_splits  # noqa: E402
from pymr.jobs import builtin_spec  # noqa: E402
from pymr.jobs.program import JobProgram, load_program  # noqa: E402
from pymr.wire.protocol import pack_chunk, unpack_chunk  # noqa: E402

SPLIT = 16 << 20


def load_splits(path: Path) -> list[tuple[bytes, int]]:
    """(data, first line number) of every line-aligned split."""
    out = []
    number = 1
    with open(path, "rb") as f:
        for s in plan_file_splits(str(path), SPLIT, lines=True):
            f.seek(s.offset)
            data = f.read(s.length)
            out.append((data, number))
            number += data.count(b"\n")
    return out


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls (gc collected before each) and the last result."""
    times = []
    result = None
    for _ in range(repeat):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def bare_map(program: JobProgram, splits: list[tuple[bytes, int]], name: str
             ) -> tuple[int, int]:
    fmap = program.map
    assert fmap is not None
    lines_n = pairs = 0
    for data, first in splits:
        lines, _ = split_lines(data)
        lines_n += len(lines)
        if program.map_takes_position:
            pos = api.Position
            for i, line in enumerate(lines, first):
                for _ in fmap(line, pos(name, i)):
                    pairs += 1
        else:
            for line in lines:
                for _ in fmap(line):
                    pairs += 1
    return lines_n, pairs


def single_loop(program: JobProgram, splits: list[tuple[bytes, int]], name: str) -> int:
    """The single-process baseline's map loop (``job_baselines.Mapper``: the job's map into
    one dict), decode included: what the engine's map side is compared with."""
    mapper = Mapper(program, name)
    for data, first in splits:
        mapper.add_lines(lines_of(data), first)
    return len(mapper.data)


def map_side(program: JobProgram, splits: list[tuple[bytes, int]], name: str
             ) -> list[dict[Any, Any]]:
    sides = [MapSide(program), MapSide(program)]
    for i, (data, first) in enumerate(splits):
        sides[i % 2].add_split(data, file=name, first_line=first)
    return [side.finish()[0] for side in sides]


def reduce_side(program: JobProgram, packed: list[bytes]) -> Any:
    side = ReduceSide(program)
    for blob in packed:
        side.add_chunk(*unpack_chunk(blob))
    return side.finish()


def profile(fn: Any, top: int) -> str:
    prof = cProfile.Profile()
    gc.collect()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    text = buf.getvalue()
    start = text.find("   ncalls")
    return scrub(text[start:] if start >= 0 else text)


def run_job(job: str, path: Path, repeat: int, top: int) -> None:
    program = load_program(builtin_spec(job))
    splits = load_splits(path)
    name = path.name
    t_decode, _ = best(lambda: [split_lines(d) for d, _ in splits], repeat)
    t_bare, (lines_n, pairs) = best(lambda: bare_map(program, splits, name), repeat)
    t_map, outputs = best(lambda: map_side(program, splits, name), repeat)
    t_single, _ = best(lambda: single_loop(program, splits, name), repeat)
    t_pack, packed = best(lambda: [pack_chunk(list(o), list(o.values())) for o in outputs],
                          repeat)
    t_unpack, _ = best(lambda: [unpack_chunk(b) for b in packed], repeat)
    t_reduce, run = best(lambda: reduce_side(program, packed), repeat)
    t_red_only = t_reduce - t_unpack
    t_write, _ = best(lambda: write_tsv(run.records, io.BytesIO()), repeat)
    held = sum(len(o) for o in outputs)
    values = sum(len(v) if type(v) is list else 1 for o in outputs for v in o.values())
    mib = sum(len(d) for d, _ in splits) / (1 << 20)
    print(f"\n## {job}: {mib:.0f} MiB sample, {len(splits)} splits, {lines_n:,} lines (map "
          f"calls), {pairs:,} pairs emitted, map outputs: {held:,} keys / {values:,} values, "
          f"{sum(map(len, packed)) / (1 << 20):.0f} MiB packed, {len(run.records):,} records "
          f"out; best of {repeat}\n")
    print("| step | s | ns / map call | ns / pair | MB/s of input |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for step, t in (("decode + split lines", t_decode),
                     ("bare map (the job's map, pairs iterated)", t_bare - t_decode),
                     ("MapSide (decode + map + group), 2 sides", t_map),
                     ("  of which grouping (MapSide - decode - bare map)",
                      t_map - t_bare),
                     ("single-process loop (decode + map + dict; the baseline's)", t_single),
                     ("  MapSide beyond it", t_map - t_single),
                     ("pack_chunk", t_pack), ("unpack_chunk", t_unpack),
                     ("ReduceSide add_chunk + finish", t_red_only),
                     ("write_tsv (to memory)", t_write)):
        print(f"| {step} | {t:.2f} | {t / lines_n * 1e9:,.0f} | {t / pairs * 1e9:,.0f} "
              f"| {mib * 1.048576 / t if t > 0 else 0:,.0f} |")
    total = t_map + t_pack + t_unpack + t_red_only + t_write
    print(f"| total, one process | {total:.2f} | {total / lines_n * 1e9:,.0f} "
          f"| {total / pairs * 1e9:,.0f} | {mib * 1.048576 / total:,.0f} |")
    print(f"\n### {job}: map path (MapSide over every split + finish), top {top} by tottime\n")
    print("```")
    print(profile(lambda: map_side(program, splits, name), top).rstrip())
    print("```")
    print(f"\n### {job}: reduce path (unpack + ReduceSide + write_tsv), top {top} by tottime\n")
    print("```")
    print(profile(lambda: write_tsv(reduce_side(program, packed).records, io.BytesIO()),
                  top).rstrip())
    print("```")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="per-record overhead of line jobs")
    ap.add_argument("--jobs", type=lambda s: _csv(s, ("bigrams", "invert")),
                    default=["bigrams", "invert"])
    ap.add_argument("--sample", default="64M", help="sample size (default 64M)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="timings: best of N (default 2)")
    ap.add_argument("--top", type=int, default=15, help="profile lines (default 15)")
    ap.add_argument("--workdir", type=Path, default=HERE / "data",
                    help="where the sample is cached (default bench/data)")
    args = ap.parse_args(argv)
    path = ensure_input(args.workdir.resolve(), gen_text.parse_size(args.sample), args.seed)
    print(f"# profile_jobs: {path.name}, Python {sys.version.split()[0]}")
    for job in args.jobs:
        run_job(job, path, args.repeat, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
