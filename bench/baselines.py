"""Word-count baselines that pymr is measured against.

    python bench/baselines.py plain FILE -o OUT [--tokenizer words|whitespace]
    python bench/baselines.py pool  FILE -o OUT [--tokenizer ...] [--processes 2]

* ``plain``: one process, the idiomatic loop: 16 MiB blocks cut after the last newline (only
  the tail is carried), ``decode("utf-8", "replace")``, ``lower()``, ``re.findall``,
  ``Counter.update``; keys encoded to UTF-8 at the end.
* ``pool``: ``multiprocessing.Pool`` over the same blocks, given to the workers as
  ``(offset, length)`` so that they read the file themselves (``os.pread``), each worker
  running pymr's per-byte algorithm (``pymr.wordtokens.Combiner``) over all the blocks it gets
  and returning its final dict once, in a flush task that every worker runs exactly once.

Both write ``word<TAB>count<LF>`` sorted by count descending, then word ascending (bytewise
UTF-8, i.e. code-point order), the format of ``pymr job wordcount -o OUT``.

The ``whitespace`` tokenizer is ``data.split()`` (ASCII whitespace) with each token
``.decode("utf-8", "replace").encode()``; no lowering.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:            # run as a script from a checkout: use its pymr
    sys.path.insert(0, str(ROOT))

from pymr.engine.fileio import pread_exact  # noqa: E402

MiB = 1 << 20
BLOCK = 16 * MiB
TOKENIZERS = ("words", "whitespace")
WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
_SCAN = 64 * 1024                      # backwards search window for a newline
_BARRIER_TIMEOUT_S = 3600.0


# --------------------------------------------------------------------------- blocks

def block_ranges(path: str | os.PathLike[str], block: int = BLOCK) -> list[tuple[int, int]]:
    """``(offset, length)`` of the blocks :func:`plain_count` processes, without reading them.

    Plain reads ``block`` bytes at a time and cuts after the last newline of what it holds,
    so block ``k`` ends after the last ``\\n`` before ``(k + 1) * block`` (or, when there is
    none since the previous cut, the block grows by further reads); what follows the last
    newline of the file is a block of its own.
    """
    if block <= 0:
        raise ValueError("block must be > 0")
    size = os.path.getsize(path)
    ranges: list[tuple[int, int]] = []
    start = 0
    limit = block
    with open(path, "rb", buffering=0) as f:
        while start < size:
            end = min(limit, size)
            cut = -1
            pos = end
            while pos > start:
                lo = max(start, pos - _SCAN)
                f.seek(lo)
                window = f.read(pos - lo)
                i = window.rfind(b"\n")
                if i >= 0:
                    cut = lo + i + 1
                    break
                pos = lo
            if cut > start:
                ranges.append((start, cut - start))
                start = cut
            if end == size:          # end of file: the rest (after the last newline) alone
                if start < size:
                    ranges.append((start, size - start))
                break
            limit += block
    return ranges


def _read_blocks(path: str | os.PathLike[str], block: int) -> Iterable[memoryview]:
    """Sequential blocks cut after the last newline; only the tail is carried over."""
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


# --------------------------------------------------------------------------- plain

def plain_count(path: str | os.PathLike[str], block: int = BLOCK,
                tokenizer: str = "words") -> dict[bytes, int]:
    """Single process, the plain rule block by block; returns word bytes -> count."""
    _check(tokenizer)
    counts: collections.Counter[Any] = collections.Counter()
    if tokenizer == "words":
        findall = WORD_RE.findall
        for view in _read_blocks(path, block):
            counts.update(findall(str(view, "utf-8", "replace").lower()))
            del view
        return {word.encode(): n for word, n in counts.items()}
    for view in _read_blocks(path, block):
        counts.update(view.tobytes().split())
        del view
    out: dict[bytes, int] = {}
    for raw, n in counts.items():
        key = raw.decode("utf-8", "replace").encode() if not raw.isascii() else raw
        out[key] = out.get(key, 0) + n
    return out


# --------------------------------------------------------------------------- pool

_worker: dict[str, Any] = {}


def _pool_init(path: str, tokenizer: str, barrier: Any) -> None:
    from pymr.wordtokens import Combiner

    _worker["fd"] = os.open(path, os.O_RDONLY)
    _worker["combiner"] = Combiner(tokenizer)
    _worker["barrier"] = barrier


def _pool_map(rng: tuple[int, int]) -> int:
    offset, length = rng
    fd = _worker["fd"]
    data = pread_exact(fd, length, offset)
    _worker["combiner"].add(data)
    return length


def _pool_flush(_: int) -> tuple[dict[bytes, int], int, int]:
    # Every worker runs exactly one flush: one blocked here cannot take a second flush task.
    _worker["barrier"].wait(_BARRIER_TIMEOUT_S)
    words, bad = _worker["combiner"].finish()
    return words, bad, os.getpid()


def pool_count(path: str | os.PathLike[str], processes: int = 2, block: int = BLOCK,
               tokenizer: str = "words") -> tuple[dict[bytes, int], int]:
    """``multiprocessing.Pool`` + ``pymr.wordtokens.Combiner``; returns (counts, bad sequences)."""
    _check(tokenizer)
    from pymr.wordtokens import Combiner

    Combiner(tokenizer)      # fail here, not in an initializer that Pool would re-run forever
    ranges = block_ranges(path, block)
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else methods[0])
    barrier = ctx.Barrier(processes)
    pool = ctx.Pool(processes, initializer=_pool_init,
                    initargs=(os.fspath(path), tokenizer, barrier))
    try:
        done = sum(pool.imap_unordered(_pool_map, ranges, chunksize=1))
        if done != sum(n for _, n in ranges):
            raise RuntimeError("a block was lost")
        results = pool.map(_pool_flush, range(processes), chunksize=1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()                  # reap the workers: their CPU time goes to the parent
    if len({pid for _, _, pid in results}) != processes:
        raise RuntimeError("a worker flushed twice")
    results.sort(key=lambda r: len(r[0]), reverse=True)
    total, bad, _ = results[0]
    for words, more_bad, _ in results[1:]:
        get = total.get
        for w, n in words.items():
            total[w] = get(w, 0) + n
        bad += more_bad
    return total, bad


# --------------------------------------------------------------------------- output

def sorted_items(counts: dict[bytes, int]) -> list[tuple[bytes, int]]:
    """Count descending, then word ascending (bytewise)."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def write_tsv(counts: dict[bytes, int], out: BinaryIO) -> None:
    out.writelines(b"%s\t%d\n" % kv for kv in sorted_items(counts))


def write_tsv_file(counts: dict[bytes, int], path: str | os.PathLike[str]) -> None:
    """Write atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write_tsv(counts, f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check(tokenizer: str) -> None:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; expected one of {TOKENIZERS}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="word-count baselines (plain, pool)")
    ap.add_argument("engine", choices=("plain", "pool"))
    ap.add_argument("path", metavar="FILE")
    ap.add_argument("-o", "--output", metavar="OUT", help="TSV output (default: stdout)")
    ap.add_argument("--tokenizer", choices=TOKENIZERS, default="words")
    ap.add_argument("--processes", type=int, default=2, help="pool workers (default 2)")
    ap.add_argument("--block-mib", type=int, default=BLOCK // MiB, help="block size in MiB")
    args = ap.parse_args(argv)
    block = args.block_mib * MiB
    t0 = time.perf_counter()
    if args.engine == "plain":
        counts = plain_count(args.path, block, args.tokenizer)
        bad = -1
    else:
        counts, bad = pool_count(args.path, args.processes, block, args.tokenizer)
    t1 = time.perf_counter()
    if args.output:
        write_tsv_file(counts, args.output)
    else:
        write_tsv(counts, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    t2 = time.perf_counter()
    print(f"{args.engine}: {len(counts)} distinct, {sum(counts.values())} words"
          + (f", {bad} bad sequences" if bad >= 0 else "")
          + f"; count {t1 - t0:.2f} s, sort+write {t2 - t1:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
