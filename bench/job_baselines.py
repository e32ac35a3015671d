"""Baselines for line jobs (``map(line)`` / ``map(line, pos)`` + ``reduce``), such as the
built-in ``bigrams`` and ``invert``: the job's own functions without pymr's engine.

    python bench/job_baselines.py single JOB FILE -o OUT
    python bench/job_baselines.py pool   JOB FILE -o OUT [--processes 2] [--split-mib 16]

JOB is a built-in job name (or a job file), loaded with ``pymr.jobs.program.load_program``:
the very ``map``/``combine``/``reduce`` functions pymr runs. FILE is named in positions
(``Position(file, line)``) exactly as given, as ``pymr job`` names it.

Lines as the API defines them: the bytes split at ``b"\\n"``, a ``b"\\r"`` before it dropped,
decoded as UTF-8 with ``errors="replace"`` (decoded a block at a time: an invalid sequence
never spans a newline, so this is the same as line by line).

* ``single``: one process, 16 MiB blocks cut after the last newline, a loop over the lines
  calling ``map``, and a dict: ``d[k] = d.get(k, 0) + v`` when the job's ``combine`` is
  ``pymr.api.sum_values`` (a counting job), else a list of values per key; then ``reduce``
  per key (not for a sum job, whose summed values are the answer).
* ``pool``: ``multiprocessing.Pool`` (fork) over the line-aligned splits of
  ``pymr.engine.splits.plan_file_splits(FILE, split, lines=True)`` (pymr's own planner; the parent
  counts each split's first line number as pymr's master does); each worker reads its splits
  by offset, maps them into its own dict as ``single`` does and returns the dict once, in a
  flush task every worker runs exactly once; the parent merges the dicts and reduces.

Both write the records sorted in the job's order (``pymr.wire.keys.record_sort_key``) with
``pymr.engine.output.write_tsv`` through ``pymr.engine.output.atomic_output`` (temp file,
fsync, rename), as ``pymr job JOB FILE -o OUT`` does, so the outputs compare byte for byte.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("pymr") is None:   # not installed nor on PYTHONPATH: this checkout's
    sys.path.insert(0, str(ROOT))

from pymr import api  # noqa: E402
from pymr.engine.fileio import pread_exact  # noqa: E402
from pymr.engine.output import atomic_output, write_tsv  # noqa: E402
from pymr.engine.splits import plan_file_splits  # noqa: E402
from pymr.jobs.program import JobProgram, load_program, resolve_job  # noqa: E402
from pymr.wire.keys import record_sort_key, type_names  # noqa: E402

MiB = 1 << 20
BLOCK = 16 * MiB
_BARRIER_TIMEOUT_S = 3600.0


def load_job(job: str) -> JobProgram:
    program = load_program(resolve_job(job))
    if program.map is None:
        raise SystemExit(f"{job}: not a line job (it has a chunk_mapper)")
    return program


def lines_of(data: Any) -> list[str]:
    """The lines of a block that ends after a newline (or at the end of the file)."""
    text = str(data, "utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


class Mapper:
    """The job's map over lines into one dict (sums for a counting job, else lists)."""

    def __init__(self, program: JobProgram, file: str) -> None:
        self.program = program
        self.file = file
        self.summed = program.combine_is_sum
        self.data: dict[Any, Any] = {}

    def add_lines(self, lines: list[str], first_line: int) -> None:
        fmap = self.program.map
        assert fmap is not None
        data = self.data
        get = data.get
        if self.program.map_takes_position:
            position = api.Position
            file = self.file
            number = first_line
            if self.summed:
                for line in lines:
                    for k, v in fmap(line, position(file, number)):
                        data[k] = get(k, 0) + v
                    number += 1
            else:
                for line in lines:
                    for k, v in fmap(line, position(file, number)):
                        held = get(k)
                        if held is None:
                            data[k] = [v]
                        else:
                            held.append(v)
                    number += 1
            return
        if self.summed:
            for line in lines:
                for k, v in fmap(line):
                    data[k] = get(k, 0) + v
        else:
            for line in lines:
                for k, v in fmap(line):
                    held = get(k)
                    if held is None:
                        data[k] = [v]
                    else:
                        held.append(v)


def merge(total: dict[Any, Any], part: dict[Any, Any], summed: bool) -> None:
    get = total.get
    if summed:
        for k, v in part.items():
            total[k] = get(k, 0) + v
        return
    for k, vs in part.items():
        held = get(k)
        if held is None:
            total[k] = vs
        else:
            held.extend(vs)


def reduce_and_write(program: JobProgram, data: dict[Any, Any], out: str) -> int:
    """Reduce every key (not for a sum job), sort in the job's order, write the TSV."""
    if not (program.combine_is_sum and program.reduce_is_sum):
        reduce = program.reduce
        if program.combine_is_sum:
            for k, v in data.items():
                data[k] = reduce(k, [v])
        else:
            for k, vs in data.items():
                data[k] = reduce(k, vs)
    sort_key = record_sort_key(program.order, type_names(data.keys()),
                               type_names(data.values()))
    records = sorted(data.items(), key=sort_key)
    with atomic_output(out) as f:
        return write_tsv(records, f)


# --------------------------------------------------------------------------- single

def _read_blocks(path: str, block: int) -> Iterator[memoryview]:
    """Sequential blocks cut after the last newline; only the tail is carried over (as in
    bench/baselines.py)."""
    with open(path, "rb") as f:
        tail = b""
        while True:
            data = f.read(block)
            if not data:
                if tail:
                    yield memoryview(tail)
                return
            buf = tail + data if tail else data
            cut = buf.rfind(b"\n") + 1
            if cut == 0:              # no newline yet: keep reading
                tail = buf
                continue
            yield memoryview(buf)[:cut]
            tail = buf[cut:]


def single_run(program: JobProgram, path: str) -> dict[Any, Any]:
    mapper = Mapper(program, path)
    number = 1
    for view in _read_blocks(path, BLOCK):
        lines = lines_of(view)
        del view
        mapper.add_lines(lines, number)
        number += len(lines)
    return mapper.data


# --------------------------------------------------------------------------- pool

_worker: dict[str, Any] = {}


def _pool_init(job: str, path: str, barrier: Any) -> None:
    _worker["fd"] = os.open(path, os.O_RDONLY)
    _worker["mapper"] = Mapper(load_job(job), path)
    _worker["barrier"] = barrier


def _pool_map(task: tuple[int, int, int]) -> int:
    offset, length, first_line = task
    data = pread_exact(_worker["fd"], length, offset)
    _worker["mapper"].add_lines(lines_of(data), first_line)
    return length


def _pool_flush(_: int) -> tuple[dict[Any, Any], int]:
    # Every worker runs exactly one flush: one blocked here cannot take a second flush task.
    _worker["barrier"].wait(_BARRIER_TIMEOUT_S)
    data = _worker["mapper"].data
    _worker["mapper"].data = {}
    return data, os.getpid()


def line_numbered_splits(path: str, split_size: int) -> list[tuple[int, int, int]]:
    """``(offset, length, first line number)`` of pymr's line-aligned splits."""
    tasks = []
    number = 1
    with open(path, "rb", buffering=0) as f:
        for s in plan_file_splits(path, split_size, lines=True):
            tasks.append((s.offset, s.length, number))
            number += pread_exact(f.fileno(), s.length, s.offset).count(b"\n")
    return tasks


def pool_run(program: JobProgram, job: str, path: str, processes: int = 2,
             split_size: int = BLOCK) -> dict[Any, Any]:
    tasks = line_numbered_splits(path, split_size)
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else methods[0])
    barrier = ctx.Barrier(processes)
    pool = ctx.Pool(processes, initializer=_pool_init, initargs=(job, path, barrier))
    try:
        done = sum(pool.imap_unordered(_pool_map, tasks, chunksize=1))
        if done != sum(n for _, n, _ in tasks):
            raise RuntimeError("a split was lost")
        results = pool.map(_pool_flush, range(processes), chunksize=1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()                  # reap the workers: their CPU time goes to the parent
    if len({pid for _, pid in results}) != processes:
        raise RuntimeError("a worker flushed twice")
    results.sort(key=lambda r: len(r[0]), reverse=True)
    total = results[0][0]
    for part, _ in results[1:]:
        merge(total, part, program.combine_is_sum)
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="line-job baselines (single, pool)")
    ap.add_argument("engine", choices=("single", "pool"))
    ap.add_argument("job", help="built-in job name or job file")
    ap.add_argument("path", metavar="FILE")
    ap.add_argument("-o", "--output", metavar="OUT", required=True, help="TSV output")
    ap.add_argument("--processes", type=int, default=2, help="pool workers (default 2)")
    ap.add_argument("--split-mib", type=int, default=BLOCK // MiB,
                    help="pool split size in MiB (default 16, pymr's)")
    args = ap.parse_args(argv)
    program = load_job(args.job)
    t0 = time.perf_counter()
    if args.engine == "single":
        data = single_run(program, args.path)
    else:
        data = pool_run(program, args.job, args.path, args.processes, args.split_mib * MiB)
    t1 = time.perf_counter()
    n = reduce_and_write(program, data, args.output)
    t2 = time.perf_counter()
    print(f"{args.engine} {args.job}: {n} records; map {t1 - t0:.2f} s, "
          f"reduce+sort+write {t2 - t1:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
