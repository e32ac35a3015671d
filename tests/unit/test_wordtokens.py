"""Tests for pymr.wordtokens: the word rule, and the fast Combiner that must match it exactly.

Set PYMR_FUZZ_EXAMPLES (default 300) to run the property tests longer.
"""

from __future__ import annotations

import array
import codecs
import collections
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pymr import wordtokens
from pymr.wordtokens import (
    TOKENIZERS,
    WORD_PATTERN,
    Combiner,
    count_bad_sequences,
    reference_count,
)

FUZZ_EXAMPLES = int(os.environ.get("PYMR_FUZZ_EXAMPLES", "300"))
ASCII_WS = b" \t\n\r\x0b\x0c"


def C(*words: str | bytes) -> collections.Counter[bytes]:
    """Counter of UTF-8 keys, from str or bytes words."""
    return collections.Counter(w.encode() if isinstance(w, str) else w for w in words)


def combine(
    pieces: Sequence[bytes | bytearray | memoryview],
    tokenizer: str = "words",
    finish_after: frozenset[int] = frozenset(),
) -> tuple[collections.Counter[bytes], int]:
    """Feed pieces to one Combiner, finishing after the given piece indexes and at the end."""
    comb = Combiner(tokenizer)
    total: collections.Counter[bytes] = collections.Counter()
    bad = 0
    for i, piece in enumerate(pieces):
        comb.add(piece)
        if i in finish_after:
            out, b = comb.finish()
            assert all(n > 0 for n in out.values())
            total.update(out)
            bad += b
    out, b = comb.finish()
    assert all(n > 0 for n in out.values())
    total.update(out)
    return total, bad + b


def cut(text: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def ws_cut_points(text: bytes) -> list[int]:
    """Every legal split boundary: right after an ASCII whitespace byte."""
    return [i + 1 for i, b in enumerate(text) if b in ASCII_WS]


@contextmanager
def chunk_bytes(n: int) -> Iterator[None]:
    with mock.patch.object(wordtokens, "_CHUNK_BYTES", n):
        yield


def assert_matches_reference(text: bytes, tokenizer: str = "words") -> None:
    """Combiner equals the plain rule for the whole text, cut everywhere legal and nowhere."""
    expected = reference_count(text, tokenizer)
    expected_bad = count_bad_sequences(text)
    points = ws_cut_points(text)
    for chunk in (1, 16 << 10):
        with chunk_bytes(chunk):
            assert combine([text], tokenizer) == (expected, expected_bad)
            pieces = cut(text, points)
            assert combine(pieces, tokenizer) == (expected, expected_bad)
            every = frozenset(range(len(pieces)))
            assert combine(pieces, tokenizer, every) == (expected, expected_bad)


# --------------------------------------------------------------------------- the rule itself

WORD_CASES: list[tuple[str, bytes, collections.Counter[bytes]]] = [
    ("empty", b"", C()),
    ("only whitespace", b" \t\r\n\x0b\x0c ", C()),
    ("basic", b"Hello, hello HELLO world!", C("hello", "hello", "hello", "world")),
    ("contraction", b"Don't DON'T don't", C("don't", "don't", "don't")),
    ("multi apostrophe", b"rock'n'roll ROCK'N'ROLL", C("rock'n'roll", "rock'n'roll")),
    ("right single quote", "don’t Don’t".encode(), C("don’t", "don’t")),
    ("mixed quotes", "rock'n’roll".encode(), C("rock'n’roll")),
    ("leading/trailing", b"'quoted' 'tis dogs' ''a''", C("quoted", "tis", "dogs", "a")),
    ("double apostrophe", b"a''b a'", C("a", "b", "a")),
    ("curly leading/trailing", "’twas ’em’".encode(), C("twas", "em")),
    ("apostrophe digits", b"rock'5 5'5", C("rock'5", "5'5")),
    ("crlf", b"one\r\ntwo\r\n", C("one", "two")),
    ("form feed, vt", b"a\x0cb\x0bc", C("a", "b", "c")),
    ("other ascii controls", b"a\x1cb\x1fc\x00d\x7fe", C("a", "b", "c", "d", "e")),
    ("nbsp", "a\u00a0b".encode(), C("a", "b")),
    ("unicode spaces", "a\u2028b\u3000c\x85d".encode(), C("a", "b", "c", "d")),
    ("emoji", "hi😀there 😀".encode(), C("hi", "there")),
    ("combining mark", "e\u0301 cafe\u0301s".encode(), C("e", "cafe", "s")),
    ("precomposed", "café CAFÉ".encode(), C("café", "café")),
    ("istanbul", "İstanbul".encode(), C("i", "stanbul")),
    ("kelvin sign", "\u212aelvin kelvin".encode(), C("kelvin", "kelvin")),
    ("kelvin alone", "\u212a".encode(), C("k")),
    ("sharp s", "STRASSE Straße".encode(), C("strasse", "straße")),
    ("titlecase digraph", "ǅemal".encode(), C("ǆemal")),
    ("sigma then dot", "ΟΔΟΣ.Α".encode(), C("οδοσ", "α")),
    ("sigma then space", "ΟΔΟΣ Α".encode(), C("οδος", "α")),
    ("sigma alone", "ΟΔΟΣ".encode(), C("οδος")),
    ("sigma colon", "ΟΔΟΣ:Α ΟΔΟΣ:".encode(), C("οδοσ", "α", "οδος")),
    ("sigma apostrophe", "ΟΔΟΣ'Α".encode(), C("οδοσ'α")),
    ("sigma caret backtick", "ΟΔΟΣ^Α ΟΔΟΣ`Α".encode(), C("οδοσ", "α", "οδοσ", "α")),
    ("sigma comma", "ΟΔΟΣ,Α".encode(), C("οδος", "α")),
    ("sigma after dot", "Α.Σ .Σ Σ".encode(), C("α", "ς", "σ", "σ")),
    ("sigma tab/cr", "ΟΔΟΣ\tΑ ΟΔΟΣ\rΑ".encode(), C("οδος", "α", "οδος", "α")),
    ("sigma combining", "ΟΔΟΣ\u0301Α".encode(), C("οδοσ", "α")),
    ("sigma middle", "ΟΔΟΣΟΣ".encode(), C("οδοσος")),
    ("lower sigma kept", "οδος οδοσ".encode(), C("οδος", "οδοσ")),
    (
        "digits underscores",
        b"abc_123 _ 4_5 __init__ 007",
        C("abc_123", "_", "4_5", "__init__", "007"),
    ),
    ("non-ascii digits", "١٢٣ x²".encode(), C("١٢٣", "x²")),
    ("cjk", "日本語 テスト".encode(), C("日本語", "テスト")),
    ("hyphen", b"well-known e-mail", C("well", "known", "e", "mail")),
    ("lone continuation", b"\x80abc d\xbfe", C("abc", "d", "e")),
    ("truncated at end", b"ab\xe2\x82", C("ab")),
    ("truncated then space", b"ab\xe2\x82 cd", C("ab", "cd")),
    ("truncated 4-byte", b"x\xf0\x9f\x98y", C("x", "y")),
    ("overlong", b"a\xc0\xafb \xe0\x80\xafc", C("a", "b", "c")),
    ("encoded surrogate", b"a\xed\xa0\x80b", C("a", "b")),
    ("above U+10FFFF", b"a\xf4\x90\x80\x80b", C("a", "b")),
    ("ff fe", b"\xff\xfeab", C("ab")),
    ("valid U+FFFD", "a\ufffdb".encode(), C("a", "b")),
    ("lead byte eats nothing", b"\xe2\xef\xbf\xbdz", C("z")),
]

BAD_CASES: list[tuple[bytes, int]] = [
    (b"", 0),
    (b"plain ascii", 0),
    ("café ΟΔΟΣ 😀".encode(), 0),
    (b"\x80", 1),
    (b"\x80\x80", 2),
    (b"ab\xe2\x82", 1),  # truncated 3-byte sequence: one maximal subpart
    (b"\xe2\x82 \xe2\x82", 2),
    (b"\xf0\x9f\x98", 1),
    (b"\xc0\xaf", 2),  # overlong: C0 is never valid, AF is a lone continuation
    (b"\xe0\x80\xaf", 3),
    (b"\xed\xa0\x80", 3),  # UTF-8-encoded surrogate
    (b"\xf4\x90\x80\x80", 4),
    (b"\xff\xfe", 2),
    ("\ufffd".encode(), 0),  # a real U+FFFD is not a bad sequence
    (b"\xef\xbf\xbd\x80", 1),
    (b"\xe2\xef\xbf\xbd", 1),
    (b"\xce", 1),
    (b"\xa3", 1),
]


@pytest.mark.parametrize("name,text,expected", WORD_CASES, ids=[c[0] for c in WORD_CASES])
def test_reference_words(name: str, text: bytes, expected: collections.Counter[bytes]) -> None:
    assert reference_count(text) == expected
    assert reference_count(text, "words") == expected


@pytest.mark.parametrize("name,text,expected", WORD_CASES, ids=[c[0] for c in WORD_CASES])
def test_combiner_words_hand_cases(
    name: str, text: bytes, expected: collections.Counter[bytes]
) -> None:
    assert_matches_reference(text, "words")
    # The same text repeated across lines, so splits and chunks cut between copies.
    assert_matches_reference(b"\n".join([text] * 3) + b"\n", "words")


@pytest.mark.parametrize("text,bad", BAD_CASES)
def test_count_bad_sequences(text: bytes, bad: int) -> None:
    assert count_bad_sequences(text) == bad
    assert count_bad_sequences(bytearray(text)) == bad
    assert count_bad_sequences(memoryview(text)) == bad
    for tokenizer in TOKENIZERS:
        assert combine([text], tokenizer)[1] == bad


def test_bad_sequences_summed_over_splits() -> None:
    pieces = [b"a\xe2\x82\n", b"\x80 x\xff\t", "ΟΔΟΣ".encode() + b"\xed ", b"\xce"]
    whole = b"".join(pieces)
    assert count_bad_sequences(whole) == 5
    for tokenizer in TOKENIZERS:
        assert combine(pieces, tokenizer, frozenset({1}))[1] == 5


def test_whitespace_tokenizer_rule() -> None:
    text = b"Hello, hello\tHELLO\x0bx\x0cy\r\nz a\xc2\xa0b c\x1cd"
    assert reference_count(text, "whitespace") == C(
        "Hello,", "hello", "HELLO", "x", "y", "z", "a\u00a0b", "c\x1cd"
    )


def test_whitespace_tokenizer_merges_replaced_keys() -> None:
    text = b"a\x80 a\xff a\xef\xbf\xbd a\xc3"
    assert reference_count(text, "whitespace") == C("a\ufffd", "a\ufffd", "a\ufffd", "a\ufffd")
    assert count_bad_sequences(text) == 3
    with chunk_bytes(1):
        total, bad = combine([b"a\x80 ", b"a\xff ", b"a\xef\xbf\xbd ", b"a\xc3"], "whitespace")
    assert total == C(*["a\ufffd"] * 4) and bad == 3


@pytest.mark.parametrize("text", [t for _, t, _ in WORD_CASES])
def test_combiner_whitespace_hand_cases(text: bytes) -> None:
    assert_matches_reference(text, "whitespace")


# --------------------------------------------------------------------------- API and contract


def test_constants() -> None:
    assert WORD_PATTERN == r"\w+(?:['’]\w+)*"
    assert TOKENIZERS == ("words", "whitespace")


def test_unknown_tokenizer() -> None:
    with pytest.raises(ValueError):
        Combiner("chars")
    with pytest.raises(ValueError):
        reference_count(b"x", "Words")


def test_finish_resets_and_distinct_raw() -> None:
    comb = Combiner()
    assert comb.distinct_raw() == 0
    assert comb.finish() == ({}, 0)
    comb.add(b"b a B A don't \x80 ")
    assert comb.distinct_raw() == 4  # b, a, don't, \x80
    comb.add("ΟΔΟΣ.Α x\n".encode())
    assert comb.distinct_raw() >= 5
    out, bad = comb.finish()
    assert out == {b"a": 2, b"b": 2, b"don't": 1, "οδοσ".encode(): 1, "α".encode(): 1, b"x": 1}
    assert bad == 1
    assert comb.distinct_raw() == 0
    assert comb.finish() == ({}, 0)


def test_input_types_and_no_mutation() -> None:
    text = b"One two, THREE\n" * 5000  # larger than a chunk: exercises chunking
    expected = reference_count(text)
    buf = bytearray(text)
    for data in (text, buf, memoryview(text), memoryview(buf), memoryview(text)[0:]):
        assert combine([data]) == (expected, 0)
    assert bytes(buf) == text
    # A memoryview with a wider item format is counted by its bytes.
    wide = array.array("I")
    wide.frombytes(b"abc def\n")
    assert combine([memoryview(wide)]) == (C("abc", "def"), 0)
    assert reference_count(memoryview(wide)) == C("abc", "def")


def test_chunking_large_split_matches_reference() -> None:
    line = "Άλφα ΟΔΟΣ.Α don't café \u212aelvin ΣΑΣ:\tword_1 rock'n’roll".encode()
    line += b" \x80\xe2\x82\r\n"
    text = line * 3000 + b"tail-without-newline"
    expected = reference_count(text), count_bad_sequences(text)
    assert combine([text]) == expected
    assert combine([memoryview(text)]) == expected
    for size in (7, 100, 4096):
        with chunk_bytes(size):
            assert combine([memoryview(text)]) == expected
            assert combine([text], "whitespace") == (
                reference_count(text, "whitespace"),
                count_bad_sequences(text),
            )


def test_long_run_without_whitespace() -> None:
    text = ("ΟΔΟΣ." * 20000 + "Σ").encode() + b" " + b"x." * 30000 + b"\n"
    with chunk_bytes(1024):
        assert combine([text]) == (reference_count(text), 0)


def test_file_end_is_a_word_boundary() -> None:
    # Two files fed to one combiner: "ab" + "cd" never joins, and ΟΔΟΣ at a file end is final.
    files = [b"x ab", "ΟΔΟΣ".encode(), b"cd y", b"\xe2\x82", b"\x80z"]
    total, bad = combine(files)
    assert total == sum((reference_count(f) for f in files), collections.Counter())
    assert total[b"ab"] == 1 and total[b"cd"] == 1 and total["οδος".encode()] == 1
    assert bad == sum(count_bad_sequences(f) for f in files) == 2


def test_table_matches_rule() -> None:
    """The translate table keeps exactly the ASCII bytes that can be in a word."""
    for b in range(256):
        ch = chr(b)
        mapped = wordtokens._TABLE[b]
        if b >= 0x80:
            assert mapped == b
        elif ch == "'" or re.fullmatch(r"\w", ch):
            assert mapped == ord(ch.lower())
        else:
            assert mapped == 0x20


def test_regex_word_char_is_isalnum_or_underscore() -> None:
    """The normaliser's isalnum() shortcut relies on this."""
    chars = "".join(chr(cp) for cp in range(sys.maxunicode + 1) if not 0xD800 <= cp <= 0xDFFF)
    by_regex = set(re.findall(r"\w", chars))
    by_method = {c for c in chars if c.isalnum() or c == "_"}
    assert by_regex == by_method


def test_lowering_is_per_character_except_capital_sigma() -> None:
    """Exactness rests on this: in this Python, only U+03A3 lowers by context."""
    chars = [chr(cp) for cp in range(sys.maxunicode + 1) if not 0xD800 <= cp <= 0xDFFF]
    chars.remove("\u03a3")
    lowered = [c.lower() for c in chars]
    assert "".join(chars).lower() == "".join(lowered)
    for sep in ("A", ".", "\u03b1", "\u0301", "'", " "):  # cased, case-ignorable, neither
        assert sep.join(chars).lower() == sep.lower().join(lowered)
    # Lowering never turns a non-ASCII character into ASCII punctuation or whitespace, so the
    # fast path's key boundaries (ASCII non-word bytes) are boundaries of the rule too.
    made_ascii = {c for c in chars if not c.isascii() for x in c.lower() if x.isascii()}
    assert made_ascii == {"\u0130", "\u212a"}
    assert all(re.fullmatch(r"\w", x) for c in made_ascii for x in c.lower() if x.isascii())


# --------------------------------------------------------------------------- fast path is used


class CountingNormaliser:
    """Wraps a bulk normaliser and records every key it is asked to normalise."""

    def __init__(self, fn: Callable[[list[bytes]], list[tuple[tuple[bytes, ...], int]]]) -> None:
        self.fn = fn
        self.keys: list[bytes] = []

    def __call__(self, keys: list[bytes]) -> list[tuple[tuple[bytes, ...], int]]:
        self.keys.extend(keys)
        return self.fn(keys)


def test_fast_path_ascii_never_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    norm = CountingNormaliser(wordtokens._normalise_word_keys)
    monkeypatch.setattr(wordtokens, "_normalise_word_keys", norm)
    sigma_runs: list[int] = []
    monkeypatch.setattr(Combiner, "_redo_sigma_runs", lambda self, d, p: sigma_runs.append(p))
    text = b"Hello, World! hello world 123 foo_bar; (x) [y] {z} a-b\r\n" * 2000
    comb = Combiner()
    comb.add(text)
    out, bad = comb.finish()
    assert out == dict(reference_count(text)) and bad == 0
    assert norm.keys == [] and sigma_runs == []


def test_fast_path_normalises_each_distinct_key_once(monkeypatch: pytest.MonkeyPatch) -> None:
    norm = CountingNormaliser(wordtokens._normalise_word_keys)
    monkeypatch.setattr(wordtokens, "_normalise_word_keys", norm)
    text = "café Café CAFÉ don't Don't ok über\n".encode() * 3000
    comb = Combiner()
    comb.add(text)
    comb.add(text)
    out, _ = comb.finish()
    assert out == dict(reference_count(text * 2))
    # raw keys: caf\xc3\xa9 (café, Café), caf\xc3\x89 (CAFÉ), don't, \xc3\xbcber
    slow = [b"caf\xc3\xa9", b"caf\xc3\x89", b"don't", "über".encode()]
    assert sorted(norm.keys) == sorted(slow)
    # Each flush normalises its own distinct keys once.
    comb.add(text)
    assert comb.finish()[0] == dict(reference_count(text))
    assert sorted(norm.keys) == sorted(slow * 2)


def test_whitespace_fast_path_only_non_ascii(monkeypatch: pytest.MonkeyPatch) -> None:
    norm = CountingNormaliser(wordtokens._normalise_ws_keys)
    monkeypatch.setattr(wordtokens, "_normalise_ws_keys", norm)
    text = "Don't, STOP. café Café\n".encode() * 1000 + b"x\x80\n"
    comb = Combiner("whitespace")
    comb.add(text)
    assert comb.finish() == (dict(reference_count(text, "whitespace")), 1)
    assert sorted(norm.keys) == sorted(["café".encode(), "Café".encode(), b"x\x80"])


def test_sigma_plain_path_only_for_sigma_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[int] = []
    original = Combiner._redo_sigma_runs

    def spy(self: Combiner, data: bytes, pos: int) -> None:
        runs.append(pos)
        original(self, data, pos)

    monkeypatch.setattr(Combiner, "_redo_sigma_runs", spy)
    comb = Combiner()
    comb.add("αβγ café ΣΑΣ.x ok\n".encode())
    assert len(runs) == 1
    out, _ = comb.finish()
    assert out == dict(reference_count("αβγ café ΣΑΣ.x ok\n".encode()))
    comb.add("ελληνικά χωρίς κεφαλαίο σίγμα\n".encode())
    assert len(runs) == 1


# --------------------------------------------------------------------------- properties

PIECES = [
    "Σ", "ΟΔΟΣ", "ΣΑΣ", "Α", "α", "σ", "ς", "ο", "Ω",  # Greek, capital sigma
    # case-ignorable
    ".", ":", "'", "’", "^", "`", "·", "\u0301", "\u0345", "\u00ad", "\u200d", "ʼ",
    ",", "-", "!", "(", '"', "/",  # ASCII punctuation that is not case-ignorable
    "İ", "\u212a", "ß", "ǅ", "ﬁ", "Å", "ẞ",  # special lowerings
    "a", "Z", "don", "t", "_", "7", "١", "x²",  # ASCII and other word chars
    "😀", "\u00a0", "\u2028", "\x85", "\x1c", "\x00",  # non-word, unicode spaces
    "é", "e\u0301", "日本", "Москва",
]
WS = [b" ", b"\n", b"\t", b"\r", b"\x0b", b"\x0c", b"\r\n"]
BAD = [
    b"\x80", b"\xbf", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\xaf", b"\xe0\x80\xaf",
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xff", b"\xfe", b"\xef\xbf\xbd",
    b"\xce", b"\xa3", b"\xcf",
]

# The characters the fast path treats specially, drawn often so that they meet each other,
# and known traps drawn whole.
HOT = ["Σ", "Α", "ς", "a", "B", "'", "’", ".", ":", "-", "\u0301", "\u212a", "ü"]
TRAPS = [
    "Α.Σ", "ΟΔΟΣ.", ".Σ", "Σ.Α", "Α:Σ", "Σ'Α", "ΑΣ\u0301", "Σ\u00adΑ", "Α^Σ`",
    "a'", "'a", "a''b", "’a", "a’", "a-b", "İ", "\u212a",
]

element = st.one_of(
    st.sampled_from(HOT).map(str.encode),
    st.sampled_from(HOT).map(str.encode),
    st.sampled_from(TRAPS).map(str.encode),
    st.sampled_from(TRAPS).map(str.encode),
    st.sampled_from(PIECES).map(str.encode),
    st.sampled_from(WS),
    st.sampled_from(BAD),
    st.binary(max_size=4),
    st.text(max_size=3).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
# A text is sometimes repeated, so that the same raw keys (valid or not) occur several times.
texts = st.builds(
    lambda body, times, sep: sep.join([body] * times),
    st.lists(element, max_size=40).map(b"".join),
    st.integers(1, 3),
    st.sampled_from(WS),
)
buffer_types = st.sampled_from([bytes, bytearray, memoryview])

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def oracle_count(text: bytes, tokenizer: str) -> collections.Counter[bytes]:
    """The rule written again, independently of pymr.wordtokens."""
    decoded = text.decode("utf-8", "replace")
    if tokenizer == "words":
        return C(*re.findall(r"\w+(?:['’]\w+)*", decoded.lower()))
    return C(*(t.decode("utf-8", "replace") for t in text.split()))


_ORACLE_ERRORS: list[int] = []


def _oracle_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _ORACLE_ERRORS.append(exc.start)
    return "\ufffd", exc.end


codecs.register_error("pymr-test-count-replace", _oracle_replace)


def oracle_bad(text: bytes) -> int:
    """Bad sequences counted by an error handler that is called once per replacement."""
    _ORACLE_ERRORS.clear()
    assert text.decode("utf-8", "pymr-test-count-replace") == text.decode("utf-8", "replace")
    return len(_ORACLE_ERRORS)


def check_any_cutting(data: st.DataObject, text: bytes, tokenizer: str) -> None:
    assert reference_count(text, tokenizer) == oracle_count(text, tokenizer)
    assert count_bad_sequences(text) == oracle_bad(text)
    points = ws_cut_points(text)
    cuts = data.draw(st.lists(st.sampled_from(points), unique=True)) if points else []
    pieces = cut(text, cuts)
    finishes = data.draw(st.frozensets(st.integers(0, max(len(pieces) - 1, 0))))
    kinds = data.draw(st.lists(buffer_types, min_size=len(pieces), max_size=len(pieces)))
    chunk = data.draw(st.sampled_from([1, 2, 3, 8, 64, 16 << 10]))
    with chunk_bytes(chunk):
        got = combine([k(p) for k, p in zip(kinds, pieces, strict=True)], tokenizer, finishes)
    assert got == (reference_count(text, tokenizer), count_bad_sequences(text))


@FUZZ
@given(data=st.data(), text=texts)
@example(data=None, text="ΟΔΟΣ.Α ΟΔΟΣ Α\nΟΔΟΣ".encode())
@example(data=None, text="Α.Σ:'Σ\u0301 \tΣ\u00adΑ\x0bΣ".encode())
def test_words_combiner_equals_reference(data: st.DataObject | None, text: bytes) -> None:
    if data is None:  # explicit examples: every legal cut, finish after each piece
        assert_matches_reference(text, "words")
        return
    check_any_cutting(data, text, "words")


@FUZZ
@given(data=st.data(), text=texts)
def test_whitespace_combiner_equals_reference(data: st.DataObject, text: bytes) -> None:
    check_any_cutting(data, text, "whitespace")


@FUZZ
@given(docs=st.lists(texts, min_size=1, max_size=4), tokenizer=st.sampled_from(TOKENIZERS))
def test_long_lived_combiner_flushes_independently(docs: list[bytes], tokenizer: str) -> None:
    """One combiner, reused across many flushes, keeps nothing from one flush to the next."""
    comb = Combiner(tokenizer)
    for _ in range(2):
        for text in docs:
            comb.add(text)
            expected = dict(reference_count(text, tokenizer)), count_bad_sequences(text)
            assert comb.finish() == expected
