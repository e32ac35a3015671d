"""The reduce side of one partition, without sockets: merge map outputs, reduce, sort.

Chunks arrive as ``{key: value}`` (the job has a ``combine``: each value is combined) or
``{key: [values]}`` (no combine). ``add_chunk`` folds them in: a bulk dict sum when
``combine`` is ``pymr.api.sum_values``, else lists per key (a ``combine`` shortens a long
list as it grows). ``finish`` calls the job's ``reduce`` once per key (none when ``reduce``
is ``sum_values`` over summed values) and sorts the run in the job's order; the sort is
deterministic, so a fetch that resumes after a move gets the same chunks.
"""

from __future__ import annotations

import traceback
from typing import Any

from . import api
from .jobs.program import JobProgram, user_traceback
from .keys import ListKey, first_untravelable, record_sort_key, thaw, type_names

#: A combine (not a plain sum) runs on a key's values once it holds this many.
COMBINE_EVERY = 256
#: Key types that may hold a ListKey (thawed before the job's code sees them).
_HELD = frozenset([ListKey, tuple])


class ReduceError(Exception):
    """The job's reduce (or combine) raised for a key, or returned what cannot travel."""

    def __init__(self, key: str, exc_type: str, message: str, user_tb: str = "",
                 cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.full_tb = "".join(traceback.format_exception(cause)) if cause else ""
        self.key = key
        self.exc_type = exc_type
        self.message = message
        self.user_tb = user_tb


class SortedRun:
    """A partition's reduced records in the job's order, with what the master merges by."""

    def __init__(self, records: list[tuple[Any, Any]], key_types: set[str],
                 value_types: set[str], counters: dict[str, int]) -> None:
        self.records = records
        self.key_types = key_types
        self.value_types = value_types
        self.counters = counters


class ReduceSide:
    """One partition's merge; ``finish`` once every task's output is in."""

    def __init__(self, program: JobProgram) -> None:
        self.program = program
        self.combined = program.combine is not None
        self.summed = program.combine_is_sum
        self.data: dict[Any, Any] = {}

    def add_chunk(self, chunk: dict[Any, Any]) -> None:
        data = self.data
        if self.summed:
            if not data:
                data.update(chunk)
                return
            get = data.get
            for k, v in chunk.items():
                data[k] = get(k, 0) + v
            return
        get = data.get
        if self.combined:
            for k, v in chunk.items():
                held = get(k)
                if held is None:
                    data[k] = [v]
                else:
                    held.append(v)
                    if len(held) >= COMBINE_EVERY:
                        held[:] = [self._call(self.program.combine, k, held)]
            return
        for k, vs in chunk.items():
            held = get(k)
            if held is None:
                data[k] = vs
            else:
                held.extend(vs)

    def finish(self) -> SortedRun:
        """Reduce every key and sort; raises ``ReduceError`` naming the key."""
        data, self.data = self.data, {}
        counters: dict[str, int] = {}
        api._counters = counters
        program = self.program
        if not (self.summed and program.reduce_is_sum):
            reduce = program.reduce
            if self.summed:
                for k, v in data.items():
                    data[k] = self._call(reduce, k, [v])
            else:
                for k, vs in data.items():
                    data[k] = self._call(reduce, k, vs)
        found = first_untravelable(data.values())
        if found is not None:
            key = next(k for k, v in data.items() if v is found[0])
            raise ReduceError(repr(key), "TypeError", f"reduce returned a value of type "
                              f"{found[1].__name__}, which cannot travel (use str, bytes, "
                              "int, float, bool, None, or tuples / lists of them)")
        key_types = type_names(data.keys())
        value_types = type_names(data.values())
        sort_key = record_sort_key(program.order, key_types, value_types)
        records = sorted(data.items(), key=sort_key)
        return SortedRun(records, key_types, value_types, counters)

    def _call(self, fn: Any, key: Any, values: list[Any]) -> Any:
        try:
            # a list key is held as a hashable ListKey; the job sees the list it emitted
            return fn(thaw(key) if type(key) in _HELD else key, values)
        except Exception as exc:
            raise ReduceError(_short(key), type(exc).__name__, str(exc),
                              user_traceback(exc, self.program.filenames), exc) from None


def _short(obj: Any, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[:limit - 3] + "..."
