"""Tests for pymr.engine.splits: the cutting rule, its two implementations, and the master's
I/O bound.

Both implementations are compared with a deliberately naive reference of the rule written
here, so a bug shared by the two would still show.
"""

from __future__ import annotations

import builtins
import dataclasses
import gzip
import io
import pickle
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymr.engine import splits
from pymr.engine.splits import (
    BOUNDARY_WINDOW,
    MiB,
    Split,
    TokenTooLong,
    plan_file_splits,
    stream_splits,
)
from pymr.errors import UsageError

WS = b" \t\n\r\v\f"
OTHER_WS = b" \t\r\v\f"


# --------------------------------------------------------------------------- helpers


def reference_cuts(data: bytes, split_size: int, max_token: int) -> list[tuple[int, int]]:
    """The cutting rule, written as plainly as possible: (offset, length) per split."""
    out = []
    s = 0
    while s < len(data):
        if len(data) - s <= split_size:
            out.append((s, len(data) - s))
            break
        rng = data[s:s + split_size]
        i = rng.rfind(b"\n")
        if i < 0:
            i = max(rng.rfind(bytes([c])) for c in OTHER_WS)
        if i >= 0:
            cut = s + i + 1
        else:
            j = next((k for k in range(s + split_size, len(data)) if data[k] in WS), None)
            token_end = len(data) if j is None else j
            if token_end - s > max_token:
                raise TokenTooLong("<ref>", s, max_token)
            cut = len(data) if j is None else j + 1
        out.append((s, cut - s))
        s = cut
    return out


def plan_cuts(path: Path, split_size: int, max_token: int = splits.MAX_TOKEN_SIZE
              ) -> list[tuple[int, int]]:
    result = []
    for sp in plan_file_splits(str(path), split_size, max_token):
        assert sp.path == str(path)
        result.append((sp.offset, sp.length))
    return result


def stream_pieces(stream, split_size: int, max_token: int = splits.MAX_TOKEN_SIZE,
                  name: str = "<stream>") -> list[bytes]:
    # Hold every view before converting: each split must own its buffer, so earlier views
    # stay valid while later splits are read.
    views = list(stream_splits(stream, split_size, max_token, name))
    assert all(isinstance(v, memoryview) for v in views)
    return [bytes(v) for v in views]


def cuts_of(pieces: list[bytes]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for p in pieces:
        out.append((pos, len(p)))
        pos += len(p)
    return out


class TrickleStream(io.RawIOBase):
    """A pipe-like stream: short reads, no seeking, and a check that EOF is never re-read."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self._data = data
        self._pos = 0
        self._chunk = chunk
        self.reads_after_eof = 0
        self._saw_eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._saw_eof:
            self.reads_after_eof += 1
        n = min(len(b), self._chunk, len(self._data) - self._pos)
        b[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        if n == 0:
            self._saw_eof = True
        return n


def check_invariants(data: bytes, cuts: list[tuple[int, int]], split_size: int) -> None:
    """Exact cover; every cut but the end right after ASCII whitespace; size bound."""
    pos = 0
    for off, length in cuts:
        assert off == pos and length > 0
        pos += length
        if pos != len(data):
            assert data[pos - 1] in WS, (off, length)
        if length > split_size:
            # Only a token may force this: no whitespace but the final byte.
            piece = data[off:off + length]
            assert not any(c in WS for c in piece[:-1]), (off, length)
    assert pos == len(data)


def check_all(path: Path, data: bytes, split_size: int,
              max_token: int = splits.MAX_TOKEN_SIZE) -> list[bytes]:
    path.write_bytes(data)
    expected = reference_cuts(data, split_size, max_token)
    assert plan_cuts(path, split_size, max_token) == expected
    pieces = stream_pieces(io.BytesIO(data), split_size, max_token)
    assert cuts_of(pieces) == expected
    assert b"".join(pieces) == data
    check_invariants(data, expected, split_size)
    return pieces


# --------------------------------------------------------------------------- examples


TEXT = (b"The quick brown fox\njumps over\tthe lazy dog.\r\n"
        b"  two  spaces \v and\fform feeds\n\nsupercalifragilistic end")


@pytest.mark.parametrize("split_size", range(1, 17))
def test_tiny_splits(tmp_path: Path, split_size: int) -> None:
    check_all(tmp_path / "f", TEXT, split_size)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert list(plan_file_splits(str(path), 4)) == []
    assert list(stream_splits(io.BytesIO(b""), 4)) == []


@pytest.mark.parametrize("split_size", [1, 2, 3, 7, 100])
def test_only_whitespace(tmp_path: Path, split_size: int) -> None:
    data = b" \n\t \r\n\v\f   \n" * 5
    pieces = check_all(tmp_path / "ws", data, split_size)
    assert all(len(p) <= split_size for p in pieces)


def test_no_trailing_newline(tmp_path: Path) -> None:
    data = b"alpha beta\ngamma delta\nepsilon"
    pieces = check_all(tmp_path / "f", data, 12)
    assert pieces == [b"alpha beta\n", b"gamma delta\n", b"epsilon"]


def test_whole_file_fits_is_one_split(tmp_path: Path) -> None:
    data = b"no newline at all but it fits"
    pieces = check_all(tmp_path / "f", data, len(data))
    assert pieces == [data]


def test_newline_preferred_over_later_whitespace(tmp_path: Path) -> None:
    data = b"one two\nthree four five six seven\n"
    pieces = check_all(tmp_path / "f", data, 20)
    assert pieces[0] == b"one two\n"


@pytest.mark.parametrize("split_size", range(1, 17))
def test_crlf(tmp_path: Path, split_size: int) -> None:
    data = b"ab cd\r\nef\r\n\r\nghij kl\r\nmn"
    pieces = check_all(tmp_path / "f", data, split_size)
    if split_size >= len(b"ghij kl\r\n"):
        # Every line fits in a split: cuts fall after the \n, never between \r and \n.
        assert all(p.endswith(b"\r\n") for p in pieces[:-1])


MULTIBYTE = "é€😀ß".encode()  # 2-, 3-, 4- and 2-byte characters


@pytest.mark.parametrize("pad", range(4))
def test_multibyte_characters_at_every_boundary(tmp_path: Path, pad: int) -> None:
    # Words of multibyte characters with whitespace between them, shifted by ``pad`` bytes
    # so that, over the split sizes, every byte position of every character meets a split
    # boundary.
    words = ["é", "€€", "😀", "aé€😀ß", "ß😀", "€ab€", "😀😀😀"]
    text = ("x" * pad + " " + " ".join(words) + "\n" + "\t".join(reversed(words))).encode()
    for split_size in range(1, 17):
        pieces = check_all(tmp_path / f"mb{split_size}", text, split_size)
        for p in pieces:
            p.decode("utf-8")  # strict: raises if a character was cut
        tokens = [t for p in pieces for t in p.split()]
        assert tokens == text.split()  # no word was cut either


def test_line_longer_than_split_is_cut_at_whitespace(tmp_path: Path) -> None:
    data = b"aaa bbb ccc ddd eee\nfff\n"
    pieces = check_all(tmp_path / "f", data, 9)
    assert pieces[:2] == [b"aaa bbb ", b"ccc ddd "]
    assert all(len(p) <= 9 for p in pieces)


def test_token_longer_than_split_extends_the_split(tmp_path: Path) -> None:
    token = b"x" * 20
    data = b"ab " + token + b" cd\n"
    pieces = check_all(tmp_path / "f", data, 4, max_token=20)
    assert pieces == [b"ab ", token + b" ", b"cd\n"]


def test_token_longer_than_split_at_end_of_file(tmp_path: Path) -> None:
    data = b"ab\n" + b"y" * 30
    pieces = check_all(tmp_path / "f", data, 5, max_token=30)
    assert pieces == [b"ab\n", b"y" * 30]


def test_token_extension_carries_tail_through_stream(tmp_path: Path) -> None:
    # With a tiny growth chunk the stream reads the token in many pieces; the bytes after
    # the whitespace must be carried to the next split, not lost or duplicated.
    data = b"z" * 50 + b" tail words here\nmore\n"
    with mock.patch.object(splits, "_GROW_CHUNK", 7):
        check_all(tmp_path / "f", data, 8, max_token=60)
        pieces = stream_pieces(TrickleStream(data, 3), 8, 60)
    assert b"".join(pieces) == data
    assert pieces[0] == b"z" * 50 + b" "


@pytest.mark.parametrize("split_size", [1, 4, 10, 11])
def test_token_longer_than_max_token_raises(tmp_path: Path, split_size: int) -> None:
    path = tmp_path / "big.txt"
    data = b"hello world\n" + b"q" * 11 + b" end\n"  # token of 11 bytes at offset 12
    path.write_bytes(data)
    with pytest.raises(TokenTooLong) as plan_err:
        list(plan_file_splits(str(path), split_size, max_token=10))
    with pytest.raises(TokenTooLong) as stream_err:
        list(stream_splits(io.BytesIO(data), split_size, max_token=10, name=str(path)))
    for err in (plan_err.value, stream_err.value):
        assert err.offset == 12
        assert err.path == str(path)
        msg = str(err)
        assert str(path) in msg and "12" in msg and "--max-token" in msg
        assert isinstance(err, UsageError) and err.exit_code == 2
    assert pickle.loads(pickle.dumps(plan_err.value)).offset == 12


def test_max_token_limits_only_extensions(tmp_path: Path) -> None:
    # A token longer than max_token but inside one split needs no extension, so it passes:
    # max_token bounds how far a split may grow, not the tokens a split may hold.
    data = b"hello world\n" + b"q" * 11 + b" end\n"
    check_all(tmp_path / "f", data, 20, max_token=10)


def test_token_of_exactly_max_token_is_accepted(tmp_path: Path) -> None:
    check_all(tmp_path / "a", b"ab " + b"q" * 10 + b" cd", 4, max_token=10)
    check_all(tmp_path / "b", b"ab " + b"q" * 10, 4, max_token=10)  # token ends the file
    with pytest.raises(TokenTooLong):
        list(stream_splits(io.BytesIO(b"ab " + b"q" * 11), 4, max_token=10))
    (tmp_path / "c").write_bytes(b"ab " + b"q" * 11)
    with pytest.raises(TokenTooLong):
        list(plan_file_splits(str(tmp_path / "c"), 4, max_token=10))


def test_splits_before_a_too_long_token_are_yielded_first(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a b c d\n" * 4 + b"w" * 50)
    it = plan_file_splits(str(path), 8, max_token=20)
    assert next(it) == Split(str(path), 0, 8)


def test_bad_sizes_fail_at_call_time(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        plan_file_splits(str(tmp_path / "missing"), 0)
    with pytest.raises(UsageError):
        stream_splits(io.BytesIO(b"x"), 4, max_token=0)


def test_split_is_a_frozen_value() -> None:
    sp = Split("f", 1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sp.offset = 3  # type: ignore[misc]
    assert not hasattr(sp, "__dict__")
    assert sp == Split("f", 1, 2)


def test_long_line_uses_multiple_backward_windows(tmp_path: Path) -> None:
    # Newline far before the end of the range, and a range with spaces but no newline:
    # both need reads beyond the last window.
    data = b"start\n" + b"word " * 40 + b"\n" + b"w " * 100
    with mock.patch.object(splits, "BOUNDARY_WINDOW", 4), \
            mock.patch.object(splits, "_MAX_WINDOW", 16):
        check_all(tmp_path / "f", data, 150)
        check_all(tmp_path / "g", data, 61)


def test_stream_without_readinto(tmp_path: Path) -> None:
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._f = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._f.read(min(n, 5))

    data = TEXT * 3
    pieces = stream_pieces(ReadOnly(data), 13)
    assert cuts_of(pieces) == reference_cuts(data, 13, splits.MAX_TOKEN_SIZE)


def test_file_that_shrinks_or_grows_while_planning(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = b"word " * 20  # 100 bytes
    path.write_bytes(data)
    it = plan_file_splits(str(path), 10)
    first = next(it)
    with open(path, "r+b") as f:
        f.truncate(55)
    rest = list(it)
    cuts = [(s.offset, s.length) for s in [first, *rest]]
    check_invariants(data[:55], cuts, 10)

    path.write_bytes(data)
    it = plan_file_splits(str(path), 10)
    first = next(it)
    with open(path, "ab") as f:
        f.write(b"more " * 10)
    cuts = [(s.offset, s.length) for s in [first, *it]]
    check_invariants(data, cuts, 10)  # planned up to the size seen at the start


def test_stream_splits_on_gzip(tmp_path: Path) -> None:
    line = "ünïcödé words and more words, 😀 emoji\n".encode()
    data = line * 3000 + b"no newline at the end"
    gz = tmp_path / "in.txt.gz"
    with gzip.open(gz, "wb") as f:
        f.write(data)
    (tmp_path / "in.txt").write_bytes(data)
    with gzip.open(gz, "rb") as f:
        pieces = stream_pieces(f, 4096, name=str(gz))
    assert b"".join(pieces) == data
    assert cuts_of(pieces) == plan_cuts(tmp_path / "in.txt", 4096)
    assert all(p.endswith(b"\n") for p in pieces[:-1])


# --------------------------------------------------------------------------- properties


PIECES = [b"a", b"bc", b"word", b"x" * 17, b" ", b"  ", b"\n", b"\r\n", b"\t", b"\v", b"\f",
          "é".encode(), "€".encode(), "😀".encode(), b"\xff", b"\x00"]

data_strategy = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(PIECES), max_size=120).map(b"".join),
)


@pytest.fixture(scope="module")
def prop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("splits_prop")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=data_strategy,
       split_size=st.integers(1, 40),
       max_token=st.integers(1, 80),
       window=st.integers(1, 16),
       grow_chunk=st.integers(1, 16),
       trickle=st.one_of(st.none(), st.integers(1, 50)))
def test_plan_and_stream_agree_and_cover(prop_dir: Path, data: bytes, split_size: int,
                                         max_token: int, window: int, grow_chunk: int,
                                         trickle: int | None) -> None:
    path = prop_dir / "input"
    path.write_bytes(data)
    stream = io.BytesIO(data) if trickle is None else TrickleStream(data, trickle)
    try:
        expected = reference_cuts(data, split_size, max_token)
    except TokenTooLong as exc:
        expected_err = exc.offset
        expected = None
    with mock.patch.object(splits, "BOUNDARY_WINDOW", window), \
            mock.patch.object(splits, "_MAX_WINDOW", 2 * window), \
            mock.patch.object(splits, "_GROW_CHUNK", grow_chunk):
        if expected is None:
            with pytest.raises(TokenTooLong) as e1:
                plan_cuts(path, split_size, max_token)
            with pytest.raises(TokenTooLong) as e2:
                stream_pieces(stream, split_size, max_token)
            assert e1.value.offset == e2.value.offset == expected_err
            return
        plan = plan_cuts(path, split_size, max_token)
        pieces = stream_pieces(stream, split_size, max_token)
    assert plan == expected
    assert cuts_of(pieces) == expected
    assert b"".join(pieces) == data
    check_invariants(data, expected, split_size)
    if isinstance(stream, TrickleStream):
        assert stream.reads_after_eof == 0


# --------------------------------------------------------------------------- master I/O bound


class CountingFile:
    """Wraps the planner's file object and counts the bytes it reads."""

    def __init__(self, f) -> None:
        self._f = f
        self.bytes_read = 0
        self.largest_read = 0

    def _count(self, n: int) -> None:
        self.bytes_read += n
        self.largest_read = max(self.largest_read, n)

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        self._count(n or 0)
        return n

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._count(len(data))
        return data

    def __getattr__(self, name: str):
        return getattr(self._f, name)

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def test_planning_reads_a_bounded_amount_per_split(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    size = 32 * MiB
    line = b"the quick brown fox jumps over the lazy dog 0123456789 \xc3\xa9\n"
    block = line * 2000
    data = (block * (size // len(block) + 1))[:size]
    path = tmp_path / "big.txt"
    path.write_bytes(data)

    opened: list[CountingFile] = []

    def counting_open(*args, **kwargs):
        f = CountingFile(builtins.open(*args, **kwargs))
        opened.append(f)
        return f

    monkeypatch.setattr(splits, "open", counting_open, raising=False)
    result = list(plan_file_splits(str(path), 1 * MiB))

    assert len(opened) == 1
    counter = opened[0]
    assert len(result) >= 32
    # One boundary window per split (the last split is not read at all).
    assert counter.bytes_read <= (len(result) - 1) * BOUNDARY_WINDOW
    assert counter.bytes_read <= size // 16
    assert counter.largest_read <= BOUNDARY_WINDOW
    cuts = [(s.offset, s.length) for s in result]
    check_invariants(data, cuts, 1 * MiB)
    assert all(data[s.offset + s.length - 1:s.offset + s.length] == b"\n" for s in result[:-1])
    assert all(s.length > 1 * MiB - len(line) for s in result[:-1])


# ------------------------------------------------------------------ line mode


def reference_line_cuts(data: bytes, split_size: int, max_token: int) -> list[tuple[int, int]]:
    """The line rule written plainly: the rest if it fits; else right after the last newline
    in the range; else right after the next newline (the line must fit in max_token)."""
    cuts, start = [], 0
    while start < len(data):
        if len(data) - start <= split_size:
            cuts.append((start, len(data) - start))
            break
        i = data.rfind(b"\n", start, start + split_size)
        if i < 0:
            i = data.find(b"\n", start + split_size)
            if i < 0:
                i = len(data) - 1
            if i + 1 - start > max_token + 1 or (i == len(data) - 1 and data[i:] != b"\n"
                                                  and len(data) - start > max_token):
                raise TokenTooLong("x", start, max_token, lines=True)
        cuts.append((start, i + 1 - start))
        start = i + 1
    return cuts


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.sampled_from([b"a", b" ", b"\n", b"bb ccc", b"\r\n", b"\xc3\xa9",
                                      b"\t"]), max_size=80).map(b"".join),
       split_size=st.integers(1, 12))
def test_line_mode_cuts_only_after_newlines(tmp_path: Path, data: bytes,
                                           split_size: int) -> None:
    # Given any text, when it is cut for a job that maps whole lines,
    path = tmp_path / "lines.txt"
    path.write_bytes(data)
    planned = [(s.offset, s.length) for s in plan_file_splits(str(path), split_size,
                                                               lines=True)]
    streamed = cuts_of([bytes(v) for v in stream_splits(io.BytesIO(data), split_size,
                                                        lines=True)])
    # then file and stream cut alike, as the plain rule does, and the same lines come out
    # of the splits as out of the whole text, whatever the split size.
    assert planned == streamed == reference_line_cuts(data, split_size, splits.MAX_TOKEN_SIZE)
    assert b"".join(data[off:off + n] for off, n in planned) == data
    assert all(data[off + n - 1:off + n] == b"\n" for off, n in planned[:-1])
    lines = [line for off, n in planned
             for line in data[off:off + n].removesuffix(b"\n").split(b"\n")]
    assert lines == (data.removesuffix(b"\n").split(b"\n") if data else [])


def test_line_mode_a_line_longer_than_max_is_named_as_a_line(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_bytes(b"short\n" + b"word " * 100 + b"\nend\n")
    with pytest.raises(TokenTooLong, match="the line starting at byte offset 6 is longer"):
        list(plan_file_splits(str(path), 16, max_token=64, lines=True))
    with pytest.raises(TokenTooLong, match="line starting at byte offset 6"):
        list(stream_splits(io.BytesIO(path.read_bytes()), 16, max_token=64, lines=True))
    # while the token rule cuts the same file at the spaces inside the long line.
    assert len(list(plan_file_splits(str(path), 16, max_token=64))) > 3
