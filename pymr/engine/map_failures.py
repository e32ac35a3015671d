"""Why a map batch failed, named for the user: ``MapFailed`` and the slow paths that find
the line, the key or the value to blame. No sockets.

``MapSide`` maps a batch of lines without remembering which line emitted which pair, so
that the fast path keeps no bookkeeping per pair. When the batch fails (the job's map
raised, or emitted what is not a pair or cannot travel) these functions run the batch's
lines again, one at a time, to name the first line that does it, and the line of the
job's source that yielded the item. Only a failing batch pays for that.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from .. import api
from ..jobs.program import JobProgram, user_traceback
from ..wire.keys import first_untravelable, short_repr, untravelable

#: What a pair may be: a tuple or a list of two.
PAIR_TYPES = frozenset([tuple, list])


class MapFailed(Exception):
    """The job's map or combine raised, or emitted what cannot travel.

    ``record`` is the 0-based line of the split (-1: not known, as for combine), ``key``
    the key combine was given; ``fatal`` when another attempt cannot help.
    """

    def __init__(self, stage: str, exc_type: str, message: str, *, record: int = -1,
                 key: str = "", user_tb: str = "", fatal: bool = False,
                 cause: BaseException | None = None) -> None:
        super().__init__(message)
        #: the whole traceback of the job's exception (pymr's frames too), for --debug
        self.full_tb = "".join(traceback.format_exception(cause)) if cause else ""
        self.stage = stage
        self.exc_type = exc_type
        self.message = message
        self.record = record
        self.key = key
        self.user_tb = user_tb
        self.fatal = fatal


def replay(program: JobProgram, batch: list[str], start: int, file: str,
           first_line: int) -> None:
    """Run the lines of a failed batch one by one and raise ``MapFailed`` naming the
    first line whose map raises (``batch`` starts at line ``start`` of the split)."""
    for i, line in enumerate(batch):
        try:
            out = _call_map(program, line, start + i, file, first_line)
            if out is None:
                raise MapFailed("map", "TypeError", "map returned None; it must yield "
                                "(or return a list of) (key, value) pairs",
                                record=start + i, fatal=True)
            for _ in out:
                pass
        except MapFailed:
            raise
        except Exception as exc:
            raise MapFailed("map", type(exc).__name__, str(exc), record=start + i,
                            user_tb=user_traceback(exc, program.filenames),
                            cause=exc) from None


def fail_on(program: JobProgram, batch: list[str], start: int, file: str, first_line: int,
            is_bad: Callable[[Any], bool], why: str) -> NoReturn:
    """Find the line whose map emitted the offending item, with the job's line that
    yielded it, and raise ``MapFailed`` (fatal: every attempt emits the same)."""
    for i, line in enumerate(batch):
        it = iter(_call_map(program, line, start + i, file, first_line))
        for item in it:
            if not is_bad(item):
                continue
            frame = getattr(it, "gi_frame", None)
            where = ""
            if frame is not None:
                where = f" (yielded at {program.spec.filename}:{frame.f_lineno})"
            raise MapFailed("map", "TypeError", why + where, record=start + i,
                            fatal=True)
    raise MapFailed("map", "TypeError", why, fatal=True)


def check_travel(values: Iterable[Any], records: dict[Any, Any], stage: str) -> None:
    """Raise ``MapFailed`` naming the key when a value (or else a key) of ``records``
    cannot travel; ``values`` are the records' values."""
    found = first_untravelable(values)
    if found is None:
        found = first_untravelable(records.keys())
        if found is None:
            return
        key = found[0]
        what = f"a key of type {found[1].__name__}"
    else:
        obj = found[0]
        key = next(k for k, v in records.items() if v is obj)
        what = f"a value of type {found[1].__name__} for key"
    raise MapFailed(stage, "TypeError", f"{what} {short_repr(key)} cannot travel (use str, "
                    "bytes, int, float, bool, None, or tuples / lists of them)",
                    key=short_repr(key), fatal=True)


def not_a_pair(item: Any) -> bool:
    return type(item) not in PAIR_TYPES or len(item) != 2


def has_bad_item(index: int, bad_type: type) -> Callable[[Any], bool]:
    """Is this pair's key (0) or value (1) holding ``bad_type``?"""
    def check(item: Any) -> bool:
        return not not_a_pair(item) and untravelable(item[index]) is bad_type
    return check


def _call_map(program: JobProgram, line: str, index: int, file: str, first_line: int) -> Any:
    fmap = program.map
    assert fmap is not None
    if program.map_takes_position:
        return fmap(line, api.Position(file, first_line + index))
    return fmap(line)
