"""What every peer-engine script shares: the word rule, the blocks, the output, the timings.

Engine scripts run under ``bench/.venv-peers/bin/python`` with ``PYTHONPATH`` holding the
checkout (for ``pymr.wordtokens``) and ``bench/`` (for ``baselines``); they import nothing of
pymr but the tokenizer.

Two tokenizers, the ones of ``pymr job wordcount --tokenizer`` (see pymr/wordtokens.py):

* ``words`` (default): decode UTF-8 with replacement, ``lower()``, the matches of
  ``WORD_PATTERN``.
* ``whitespace``: split on the six ASCII whitespace bytes (``bytes.split()``), each token
  decoded UTF-8 with replacement; case and punctuation kept.  On decoded text that is
  ``WS_RE.split`` with the empty strings dropped, never ``str.split()``: that one also
  splits on NBSP, U+3000, U+2009, ... which the generated text contains.  Decoding first
  and splitting after is exact: an ASCII byte ends any truncated UTF-8 sequence.

Every script prints one line ``PEERS-TIMING {json}`` on stderr with the phases it measured
itself (seconds since the interpreter started): ``imported`` (engine modules loaded),
``cluster`` (the engine's cluster/session is up), ``counted`` (the answer is in the driver),
``written`` (the TSV file is on disk).
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import baselines  # noqa: E402  (bench/baselines.py: block ranges and the TSV writer)

from pymr.engine.fileio import pread_exact  # noqa: E402

T0 = time.perf_counter()
WORD_PATTERN = r"\w+(?:['’]\w+)*"
WORD_RE = re.compile(WORD_PATTERN)
#: The same rule for the JVM's regex engine (Spark SQL): Python's str ``\w`` is a letter
#: (L*), a number (N*) or ``_``; Java's ``\w`` is ASCII-only and with (?U) it also takes
#: combining marks, so the classes are spelled out.
JAVA_WORD = r"[\p{L}\p{N}_]"
JAVA_WORD_PATTERN = JAVA_WORD + r"+(?:['’]" + JAVA_WORD + r"+)*"
#: ASCII whitespace, what ``bytes.split()`` splits on (str and Java regex spellings).
WS_RE = re.compile(r"[ \t\n\r\x0b\x0c]+")
JAVA_WS_PATTERN = r"[ \t\n\r\x0B\f]+"
TOKENIZERS = ("words", "whitespace")
BLOCK = 16 << 20

_marks: dict[str, float] = {}


def mark(name: str) -> None:
    _marks[name] = round(time.perf_counter() - T0, 4)


def report(**extra: Any) -> None:
    print("PEERS-TIMING " + json.dumps({**_marks, **extra}), file=sys.stderr, flush=True)


def words_of_text(text: str) -> list[str]:
    """The word rule on decoded text (lines or whole blocks)."""
    return WORD_RE.findall(text.lower())


def words_of_bytes(data: bytes) -> list[str]:
    return WORD_RE.findall(data.decode("utf-8", "replace").lower())


def tokens_of_text(text: str) -> list[str]:
    """The whitespace rule on decoded text (lines or whole blocks)."""
    return [t for t in WS_RE.split(text) if t]


def text_tokenizer(tokenizer: str):  # -> Callable[[str], list[str]]
    return words_of_text if tokenizer == "words" else tokens_of_text


def count_bytes(data: bytes, tokenizer: str) -> dict[str, int]:
    """One block's counts, str keys.  ``whitespace`` counts the raw tokens first (C speed)
    and decodes each distinct token once: the same answer as decoding every token."""
    if tokenizer == "words":
        return dict(collections.Counter(words_of_bytes(data)))
    out: dict[str, int] = {}
    get = out.get
    for raw, n in collections.Counter(data.split()).items():
        k = raw.decode("utf-8", "replace")
        out[k] = get(k, 0) + n
    return out


def ranges(path: str, block: int = BLOCK) -> list[tuple[int, int]]:
    """The (offset, length) blocks of the baselines, cut after a newline."""
    return baselines.block_ranges(path, block)


def groups(items: list[Any], n: int) -> list[list[Any]]:
    """``items`` dealt round-robin into at most ``n`` non-empty groups."""
    n = max(1, min(n, len(items)))
    return [items[i::n] for i in range(n)]


def read_range(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return pread_exact(fd, length, offset, path)
    finally:
        os.close(fd)


def pymr_count_ranges(path: str, rngs: Iterable[tuple[int, int]],
                      tokenizer: str = "words") -> dict[bytes, int]:
    """pymr's per-byte algorithm over some blocks: one Combiner, one finish."""
    from pymr.wordtokens import Combiner

    comb = Combiner(tokenizer)
    for off, n in rngs:
        comb.add(read_range(path, off, n))
    words, _bad = comb.finish()
    return words


def merge_into(total: dict[Any, int], part: dict[Any, int]) -> dict[Any, int]:
    if not total:
        return part if isinstance(part, dict) and type(part) is dict else dict(part)
    get = total.get
    for k, v in part.items():
        total[k] = get(k, 0) + v
    return total


def to_bytes_counts(items: Iterable[tuple[Any, int]]) -> dict[bytes, int]:
    """Word (str or bytes) -> count, as UTF-8 bytes keys (summing duplicates, if any)."""
    out: dict[bytes, int] = {}
    get = out.get
    for w, n in items:
        k = w.encode() if isinstance(w, str) else bytes(w)
        out[k] = get(k, 0) + int(n)
    return out


def write(counts: dict[bytes, int], out: str) -> None:
    baselines.write_tsv_file(counts, out)
    mark("written")


def base_args(argv: list[str] | None, variants: tuple[str, ...]) -> Any:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=variants)
    ap.add_argument("path")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--workers", type=int, default=2, help="worker processes / cores")
    ap.add_argument("--tokenizer", choices=TOKENIZERS, default="words")
    return ap.parse_args(argv)
