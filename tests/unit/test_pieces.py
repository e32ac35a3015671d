"""A running map task is fed to its combiner in pieces (so a cancel can land between
them): the pieces must cover the split exactly, each cut right after ASCII whitespace,
and give the same counts as the whole split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pymr.wordtokens import Combiner, pieces

WS = b" \n\t\r\x0b\x0c"
TEXT = st.lists(st.sampled_from([b"a", b"Bee", b"\xce\xa3", b"don't", b"\xff", b"x" * 40,
                                 b" ", b"\n", b"\r\n", b"\t", b"\x0c", b"\xc2\xa0", b"  "]),
                max_size=300).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(TEXT, st.integers(min_value=1, max_value=64))
def test_pieces_cover_the_split_and_cut_after_whitespace(data: bytes, size: int) -> None:
    got = [bytes(x) for x in pieces(data, size)]
    assert b"".join(got) == data
    for piece in got[:-1]:
        assert len(piece) >= size and piece[-1:] in [bytes([c]) for c in WS]
        # the cut is the first whitespace at or after ``size`` bytes into the piece
        assert not any(c in WS for c in piece[size - 1:-1])
    assert all(got), "no empty pieces"


@settings(max_examples=100, deadline=None)
@given(TEXT, st.integers(min_value=1, max_value=64), st.sampled_from(["words", "whitespace"]))
def test_counts_from_pieces_equal_counts_of_the_whole(data: bytes, size: int,
                                                      tokenizer: str) -> None:
    whole, by_piece = Combiner(tokenizer), Combiner(tokenizer)
    whole.add(data)
    for piece in pieces(bytearray(data), size):
        by_piece.add(piece)
    assert by_piece.finish() == whole.finish()


def test_a_split_without_whitespace_is_one_piece() -> None:
    assert [bytes(x) for x in pieces(b"x" * 100, 10)] == [b"x" * 100]
    assert list(pieces(b"", 10)) == []
