"""What a job file may use from pymr: counters, positions, and the fast sum.

A job is a Python file. The smallest one::

    def map(line):
        words = line.split()
        for a, b in zip(words, words[1:]):
            yield a + " " + b, 1

    def reduce(key, values):
        return sum(values)

Everything else is optional; ``docs/JOBS.md`` documents each name with an example:
``combine(key, values)``, ``map(line, pos)`` (``pos`` is a :class:`Position`),
``PARAMS`` + ``setup(params)``, ``ORDER = "value"``, ``FIELDS``, ``chunk_mapper(params)``
(a chunk-level map over raw bytes), and the module docstring (shown by ``pymr jobs``).

This module is imported by job files on every node: it must stay small and import nothing
of the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = ["Position", "count", "sum_values"]


class Position(NamedTuple):
    """Where a line came from: the input's name as given to ``pymr job`` and its 1-based
    line number in that input (``map(line, pos)`` receives one)."""

    file: str
    line: int


#: The counters of the job being run in this process; the engine swaps the dict in before
#: it calls a job's code and reads it back after (several jobs may share an executor).
_counters: dict[str, int] = {}


def count(name: str, n: int = 1) -> None:
    """Add ``n`` to the counter ``name`` (like Hadoop counters). Counters of map and
    combine are summed over the committed map outputs, so a re-run task counts once;
    counters of reduce are summed over partitions. The summary shows them."""
    _counters[name] = _counters.get(name, 0) + n


def sum_values(key: Any, values: Iterable[Any]) -> Any:
    """``sum(values)``: use it as ``combine`` and ``reduce`` of a counting job
    (``combine = reduce = sum_values``). pymr recognises it and sums in bulk, without a
    Python call per key."""
    return sum(values)
