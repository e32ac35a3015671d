"""Counted nouns for messages: "1 slot", "3 slots"."""

from __future__ import annotations


def count_of(n: int, noun: str) -> str:
    """``n`` with ``noun``, plural unless n is 1 (regular plurals only)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
