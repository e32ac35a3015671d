"""What the terminal table keeps of a value (``pymr.cli.main._preview``): short values as
they are; long ones cut, never formatted whole."""

from __future__ import annotations

from pymr.cli.main import CELL_CHARS, _preview


def test_scalars_and_short_values_are_kept_as_they_are() -> None:
    for value in (5, 2.5, None, True, "short", b"bytes", ["a", "b"], ("x", 1)):
        assert _preview(value) == value


def test_a_list_of_millions_of_postings_shows_its_head_and_its_length() -> None:
    postings = [f"book.txt:{n}" for n in range(1_000_000)]
    shown = _preview(postings)
    assert shown.startswith('["book.txt:0", "book.txt:1", ')
    assert shown.endswith(", ... (1,000,000 items)]")
    assert len(shown) < 2 * CELL_CHARS + 40


def test_long_text_and_bytes_are_cut() -> None:
    assert _preview("w" * 10_000) == "w" * CELL_CHARS + "..."
    assert _preview(b"\xff" * 10_000) == b"\xff" * CELL_CHARS + b"..."
