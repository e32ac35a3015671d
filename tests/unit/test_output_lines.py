"""Output lines formatted by the reducers: byte for byte what the master would write."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest

from pymr.engine import output
from pymr.engine.fetch import PartitionStreams
from pymr.engine.output import line_value, tsv_lines, write_lines, write_tsv
from pymr.engine.reduceside import ReduceSide
from pymr.jobs import JobSpec
from pymr.jobs.program import load_program
from pymr.wire import keys
from pymr.wire import protocol as p


def tsv(records: list[tuple[Any, Any]]) -> bytes:
    out = io.BytesIO()
    write_tsv(records, out)
    return out.getvalue()


def typed_records(seed: int, n: int = 3000) -> list[tuple[Any, Any]]:
    """Every type a key or value may have, with the characters TSV must escape."""
    rng = random.Random(seed)
    texts = ["plain", "tab\there", "new\nline", "cr\r", "caf\u00e9", "\udcff-fs-byte",
             "\ud800-lone", "back\\slash", ""]

    def scalar() -> Any:
        return rng.choice([
            rng.choice(texts) + str(rng.randrange(99)),
            rng.choice(texts).encode("utf-8", "surrogatepass"),
            rng.randrange(-10**20, 10**20), rng.random() * 1e6, float("nan"), float("inf"),
            -0.0, True, False, None])

    def value() -> Any:
        kind = rng.randrange(4)
        if kind == 0:
            return scalar()
        if kind == 1:
            return tuple(scalar() for _ in range(rng.randrange(4)))
        if kind == 2:
            return [scalar() for _ in range(rng.randrange(6))]
        return [(scalar(), [scalar()]) for _ in range(rng.randrange(3))]

    return [(value(), value()) for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_tsv_lines_are_the_lines_write_tsv_writes(seed: int) -> None:
    records = typed_records(seed)
    keys, values = [k for k, _ in records], [v for _, v in records]
    lines = tsv_lines(keys, values)
    assert len(lines) == len(records)
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert b"".join(lines) == tsv(records)


def test_word_count_records_with_a_tab_are_escaped_line_by_line() -> None:
    # The (bytes, int) fast path formats without escaping, then checks the batch in C
    keys: list[Any] = [b"a", b"b\tc", "d\re", b"f"]
    values: list[Any] = [1, 2, 3, 4]
    assert tsv_lines(keys, values) == [b"a\t1\n", b"b\\tc\t2\n", b"d\\re\t3\n", b"f\t4\n"]


def test_write_lines_writes_the_lines_and_counts_them() -> None:
    out = io.BytesIO()
    records = [(i, b"k%d\t%d\n" % (i, i)) for i in range(20_000)]
    assert write_lines(records, out) == 20_000
    assert out.getvalue() == b"".join(line for _, line in records)
    assert write_lines([], io.BytesIO()) == 0


class _WriteSizes(io.RawIOBase):
    """A file that keeps what it is given and the size of every write (``writelines`` is
    ``IOBase``'s: one ``write`` per line, as on a real file)."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.sizes: list[int] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sizes.append(len(data))
        self.data += data
        return len(data)


def test_write_lines_never_joins_megabyte_lines_into_one_big_write() -> None:
    # Given an inverted index's lines: small ones around a few lines of several MiB each,
    big = max(1, output.WRITE_BYTES // 3)
    records = [(i, (b"w%d\t" % i) + b"x" * (big if i % 500 == 7 else 20) + b"\n")
               for i in range(3_000)]
    out = _WriteSizes()
    # when they are written,
    assert write_lines(records, out) == 3_000
    # then the bytes are the same, in order,
    assert out.data == b"".join(line for _, line in records)
    # and no write (no joined copy) holds more than the batch bytes: the six big lines
    # (two batches' worth) are never joined together.
    assert max(out.sizes) <= output.WRITE_BYTES


def test_line_value_shows_ints_as_ints_and_the_rest_as_text() -> None:
    assert line_value(b"word\t42\n") == 42
    assert line_value(b'word\t["a.txt:1", "b.txt:2"]\n') == '["a.txt:1", "b.txt:2"]'
    assert line_value(b"a\\tb\t-3\n") == "-3"


LISTS = "def map(line):\n    yield line, 1\ndef reduce(key, values):\n" \
        "    return sorted(values)\n"
MIXED = "def map(line):\n    yield line, 1\ndef reduce(key, values):\n" \
        "    return sum(values)\n"


def reducer_input(seed: int) -> list[tuple[list[Any], list[Any]]]:
    """Map outputs as a reducer receives them (through the codec): typed keys."""
    rng = random.Random(seed)
    out = []
    for _ in range(8):
        d: dict[Any, Any] = {}
        for _ in range(500):
            k: Any = rng.choice([f"k\t{rng.randrange(900)}", b"b\n%d" % rng.randrange(900),
                                 rng.randrange(90), (f"t{rng.randrange(50)}", 1), None,
                                 rng.random()])
            d.setdefault(k, []).append(rng.randrange(1, 100))  # no combine: value lists
        out.append(p.unpack_chunk(p.pack_chunk(list(d), list(d.values()))))
    return out


@pytest.mark.parametrize("order", ["key", "value"])
@pytest.mark.parametrize("source", [LISTS, MIXED], ids=["lists", "mixed"])
@pytest.mark.parametrize("spill", [False, True], ids=["in-memory", "spilled"])
def test_a_runs_line_chunks_are_its_records_as_tsv(source: str, order: str, spill: bool,
                                                   tmp_path: Path) -> None:
    program = load_program(JobSpec.from_source("j", source + f"ORDER = {order!r}\n"))
    reducer = ReduceSide(program, str(tmp_path), "p0")
    for i, chunk in enumerate(reducer_input(seed=len(source))):
        reducer.add_chunk(*chunk)
        if spill and i % 2:
            reducer.spill(65_536)
    run = reducer.finish(memory=64 << 10 if spill else 0, chunk_records=700)
    assert (run.file is not None) == spill
    records: list[tuple[Any, Any]] = []
    lines: list[bytes] = []
    for seq in range(run.num_chunks(700)):
        keys, values = p.unpack_chunk(run.chunk(seq, 700))
        records.extend(zip(keys, values, strict=True))
        line_keys, chunk_lines = p.unpack_chunk(run.line_chunk(seq, 700))
        # the same chunks, keyed alike: a fetch can resume in either form
        assert line_keys == keys
        lines.extend(chunk_lines)
    assert len(records) > 700, "several chunks"
    assert b"".join(lines) == tsv(records)
    run.remove()


def test_streams_ask_for_lines_again_after_a_move() -> None:
    asked: list[tuple[int, int, int, bool]] = []
    streams = PartitionStreams(2, lambda *a: asked.append(a), pump=lambda: None,
                               chunks_of=lambda part: 4)
    streams.open(0, lines=True)
    streams.open(1)
    streams._maybe_request(0)
    streams._maybe_request(1)
    assert asked == [(0, 0, 2, True), (1, 0, 2, False)]
    assert streams.on_data(0, 0, False, ([b"k"], [b"k\t1\n"]))
    streams.restart(0)  # the partition moved: resume at the first chunk not received
    streams._maybe_request(0)
    assert asked[-1] == (0, 1, 2, True)


def test_a_merge_of_lines_reads_about_its_byte_budget_of_each_run_at_a_time() -> None:
    # Given (key, line) records of an inverted index: 5,000 lines of 200 bytes, then lines
    # of 100 kB (a common word's postings), merged with a budget of 64 kB of lines a block,
    budget = 64 << 10
    records = [(i, b"%06d\t" % i + b"x" * (200 if i < 5_000 else 100_000) + b"\n")
               for i in range(5_100)]
    # when they are cut into merge blocks,
    blocks = list(keys.batched_lines(records, nbytes=budget))
    # then nothing is lost or reordered,
    assert [r for b in blocks for r in b] == records
    # after the first block (MERGE_BLOCK records), a block of short lines holds about the
    # budget, not MERGE_BLOCK records,
    assert len(blocks[0]) == keys.MERGE_BLOCK
    second = sum(len(line) for _, line in blocks[1])
    assert len(blocks[1]) < keys.MERGE_BLOCK and budget // 2 <= second <= 2 * budget
    # and once the lines are longer than the budget, a block holds one line.
    assert all(len(b) == 1 for b in blocks[-50:])


def test_a_merge_of_two_runs_of_lines_keeps_the_key_order() -> None:
    a = [(k, b"%s\t%s\n" % (k.encode(), b"v" * 300_000)) for k in ("a", "c", "e", "g")]
    b = [(k, b"%s\t1\n" % k.encode()) for k in ("b", "d", "f")]
    merged = list(keys.merge_sorted([a, b], None, lines=True))
    assert [k for k, _ in merged] == ["a", "b", "c", "d", "e", "f", "g"]


def test_line_value_cuts_a_long_value_for_the_table() -> None:
    line = b"the\t" + b"y" * 10_000 + b"\n"
    shown = line_value(line, 200)
    assert shown == "y" * 200 + "..."
    assert line_value(b"word\t42\n", 200) == 42
    assert line_value(line) == "y" * 10_000
