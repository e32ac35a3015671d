"""The map side of a job, without sockets: map (+ combine) over the splits of one batch.

An executor feeds the splits of a batch of tasks to one ``MapSide`` and flushes what
``finish`` returns as one map output. Two kinds of job:

* **line jobs** (``map(line)`` or ``map(line, pos)``): a split (cut right after a ``\\n``) is
  decoded once (UTF-8, invalid bytes replaced and counted as ``invalid_utf8``), ``\\r\\n``
  becomes ``\\n`` and the text is split at ``\\n``. ``map`` runs over the lines from C
  (``map`` + ``chain``) and each pair is grouped as it comes, while it is still in the CPU's
  cache: summed when ``combine`` is ``pymr.api.sum_values``, else appended to its key's list
  (a ``combine`` shortens the long ones and reduces every list at ``finish``). The first pair
  that is not a plain tuple with a scalar value sends the rest of its batch of lines through
  a checked path; a batch's new keys are checked once. When ``map`` raises, the lines of
  that batch are replayed one by one to name the line (``map_failures``: ``MapFailed`` and
  the slow paths that find the line, key or value to blame).
* **chunk jobs** (``chunk_mapper(params)``): raw bytes, cut after ASCII whitespace, go to the
  job's object, whose ``finish`` returns combined values (word count's fast path).

``finish`` returns ``{key: value}`` (combined) or ``{key: [values]}`` (no combine).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain, count, islice, repeat
from operator import itemgetter
from sys import getsizeof
from typing import Any

from .. import api
from ..jobs.program import JobProgram, enter, user_traceback
from ..wire.keys import (
    CONTAINERS,
    DICT_ENTRY_BYTES,
    SCALARS,
    ListKey,
    as_emitted,
    first_untravelable,
    freeze_key,
    nan_inside,
    short_repr,
)
from ..wordtokens import count_bad_sequences, pieces
from .map_failures import (
    PAIR_TYPES,
    MapFailed,
    check_travel,
    fail_on,
    has_bad_item,
    not_a_pair,
    replay,
)

#: A running task looks for a cancel after each piece of this size (chunk jobs) ...
CANCEL_CHECK_BYTES = 1 << 20
#: ... or this many lines (line jobs).
CANCEL_CHECK_LINES = 8192
#: What one distinct key of a chunk mapper is taken to cost in memory (a bytes word, its
#: count and its dict slot measured about 100-130 bytes).
CHUNK_KEY_BYTES = 128
#: A combine (not a plain sum) runs on a key's values once it holds this many, so a
#: frequent key does not hold all its values until the flush.
COMBINE_EVERY = 256

_first, _second = itemgetter(0), itemgetter(1)
_TWO = frozenset([2])


class Cancelled(Exception):
    """The check between pieces said stop: another attempt of a task in the batch won."""


def split_lines(data: Any) -> tuple[list[str], int]:
    """The lines of a split and the number of invalid UTF-8 sequences replaced."""
    try:
        text = str(data, "utf-8")
        bad = 0
    except UnicodeDecodeError:
        text = str(data, "utf-8", "replace")
        bad = count_bad_sequences(data)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines, bad


class MapSide:
    """Map and combine of the tasks of one batch; ``finish`` hands the output over."""

    def __init__(self, program: JobProgram) -> None:
        self.program = program
        self.counters: dict[str, int] = {}
        self.groups: dict[Any, Any] = {}
        self.values_held = 0
        self._key_bytes = 64.0 + DICT_ENTRY_BYTES
        self._value_bytes = 32.0
        self.sum_combine = program.combine_is_sum
        self.chunk: Any = None
        if program.chunk_mapper is not None:
            enter(program, self.counters)
            self.chunk = self._call("map", program.chunk_mapper, dict(program.params))
            missing = [m for m in ("add", "finish") if not callable(getattr(self.chunk, m, None))]
            if missing:
                raise MapFailed("map", "TypeError", "chunk_mapper(params) must return an object "
                                f"with add(data) and finish(); {short_repr(self.chunk)} has no "
                                f"{' or '.join(missing)}()", fatal=True)

    # ---------------------------------------------------------------- feeding
    def add_split(self, data: Any, *, file: str = "", first_line: int = 0,
                  check: Callable[[], bool] = lambda: False) -> None:
        """Map one split; ``check`` is called between pieces and raises ``Cancelled``
        when it returns True."""
        enter(self.program, self.counters)
        if self.chunk is not None:
            add = self.chunk.add
            for piece in pieces(data, CANCEL_CHECK_BYTES):
                self._call("map", add, piece)
                if check():
                    raise Cancelled
            return
        lines, bad = split_lines(data)
        if bad:
            self.counters["invalid_utf8"] = self.counters.get("invalid_utf8", 0) + bad
        for start in range(0, len(lines), CANCEL_CHECK_LINES):
            batch = lines[start:start + CANCEL_CHECK_LINES]
            self._map_lines(batch, start, file, first_line)
            if check():
                raise Cancelled

    def size(self) -> int:
        """What this side holds, for the executor's flush limit: distinct keys (values
        too when they are kept as lists)."""
        if self.chunk is not None:
            size = getattr(self.chunk, "size", None)
            if size is None:
                return 0
            n = self._call("map", size)
            if type(n) is not int:
                raise MapFailed("map", "TypeError", "the chunk mapper's size() must return "
                                f"an int, not {type(n).__name__}", fatal=True)
            return n
        return len(self.groups) if self.sum_combine else self.values_held

    def approx_bytes(self) -> int:
        """About how much memory the batch's output holds, for a memory budget: a chunk
        mapper's ``size()`` keys at ``CHUNK_KEY_BYTES`` each; for line jobs, the keys and
        values held at sizes sampled from what map emitted."""
        if self.chunk is not None:
            return self.size() * CHUNK_KEY_BYTES
        return int(len(self.groups) * self._key_bytes + (
            0 if self.sum_combine else self.values_held * self._value_bytes))

    def finish(self) -> tuple[dict[Any, Any], dict[str, int]]:
        """The batch's records and counters; this side is spent afterwards."""
        enter(self.program, self.counters)
        if self.chunk is not None:
            records = self._call("map", self.chunk.finish)
            if not isinstance(records, dict):
                raise MapFailed("map", "TypeError", "the chunk mapper's finish() must "
                                f"return a dict, not {type(records).__name__}", fatal=True)
            check_travel(records.values(), records, "combine")
            return records, self.counters
        groups = self.groups
        combine = self.program.combine
        if combine is not None and not self.sum_combine:
            for key, values in groups.items():
                groups[key] = self._combine(key, values)
            check_travel(groups.values(), groups, "combine")
        elif self.sum_combine:  # 0 + v took the values: a number type that cannot travel?
            check_travel(groups.values(), groups, "combine")
        return groups, self.counters

    # ---------------------------------------------------------------- lines
    def _map_lines(self, batch: list[str], start: int, file: str, first_line: int) -> None:
        """Map a batch of lines and group the pairs as they come (no list of the batch's
        pairs: a pair is grouped while it is still in the CPU's cache). The common case
        (tuple pairs, hashable keys, scalar values) runs in a tight loop; the first other
        pair sends the rest of the batch through ``_group``, which checks everything."""
        fmap = self.program.map
        assert fmap is not None
        if self.program.map_takes_position:
            positions = map(api.Position, repeat(file), count(first_line + start))
            produced: Any = chain.from_iterable(map(fmap, batch, positions))
        else:
            produced = chain.from_iterable(map(fmap, batch))
        groups = self.groups
        before = len(groups)
        try:
            odd = (self._add_sums if self.sum_combine else self._add_lists)(produced, groups)
            if odd is not None:
                pairs = [odd]
                pairs.extend(produced)
                self._group(pairs, batch, start, file, first_line)
        except MapFailed:
            raise
        except Exception:
            replay(self.program, batch, start, file, first_line)
            raise  # the replay did not fail: the job's map is not deterministic
        if len(groups) > before:
            self._check_new_keys(len(groups) - before, batch, start, file, first_line)
        if (not self.sum_combine and self.program.combine is not None
                and self.values_held >= COMBINE_EVERY * 4):
            self._combine_long_lists()

    @staticmethod
    def _add_sums(produced: Any, groups: dict[Any, Any]) -> Any:
        """Sum the values of each key (``combine`` is ``sum_values``) until a pair that is
        not a plain tuple or that the dict cannot take; that pair is returned (the rest
        stays in ``produced``). An exception of the job's map propagates."""
        get = groups.get
        p = None
        try:
            for p in produced:
                if p.__class__ is not tuple or len(p) != 2:
                    return p
                k, v = p
                groups[k] = get(k, 0) + v
                p = None
        except Exception:
            if p is None:  # raised while iterating: by the job's map
                raise
            return p
        return None

    def _add_lists(self, produced: Any, groups: dict[Any, Any]) -> Any:
        """Append each value to its key's list, as ``_add_sums`` does for sums; values other
        than scalars go to ``_group`` (they are checked item by item)."""
        get = groups.get
        scalars = SCALARS
        p = None
        n = 0
        try:
            for p in produced:
                if p.__class__ is not tuple or len(p) != 2 or p[1].__class__ not in scalars:
                    return p
                k, v = p
                held = get(k)
                if held is None:
                    groups[k] = [v]
                else:
                    held.append(v)
                n += 1
                p = None
        except Exception:
            if p is None:
                raise
            return p
        finally:
            self.values_held += n
        return None

    def _check_new_keys(self, new: int, batch: list[str], start: int, file: str,
                        first_line: int) -> None:
        """The keys a batch added: that they travel, NaNs grouped as one, the memory
        estimate's sample. Only the new keys are looked at (the dict keeps insertion
        order, so they are its last entries)."""
        groups = self.groups
        fresh = list(islice(reversed(groups), new))
        types = set(map(type, fresh))
        if not types <= SCALARS:
            found = first_untravelable(fresh)
            if found is not None:
                fail_on(self.program, batch, start, file, first_line,
                        has_bad_item(0, found[1]),
                        f"a key of type {found[1].__name__} cannot travel (use str, "
                        "bytes, int, float, bool, None, or tuples / lists of them)")
        if float in types or not _HOLDERS.isdisjoint(types):
            self._group_nans(fresh)
        step = max(1, new // 8)
        sample = fresh[::step]
        self._key_bytes = 0.8 * self._key_bytes + 0.2 * (
            sum(map(getsizeof, sample)) / len(sample) + DICT_ENTRY_BYTES)
        if not self.sum_combine:
            values = [groups[k][-1] for k in sample if k in groups]
            if values:
                self._value_bytes = 0.8 * self._value_bytes + 0.2 * (
                    sum(map(getsizeof, values)) / len(values) + 8)

    def _group_nans(self, fresh: list[Any]) -> None:
        """NaN != NaN: every key the batch added that is or holds a NaN joins the key with
        the one ``NAN`` in its place (``keys.nan_inside``)."""
        groups = self.groups
        for k in fresh:
            same = nan_inside(k)
            if same is k or k not in groups:
                continue
            held = groups.pop(k)
            if self.sum_combine:
                groups[same] = groups.get(same, 0) + held
            else:
                groups.setdefault(same, []).extend(held)

    def _group(self, pairs: list[Any], batch: list[str], start: int, file: str,
               first_line: int) -> None:
        if not PAIR_TYPES.issuperset(map(type, pairs)) or not _TWO.issuperset(
                map(len, pairs)):
            bad = next(x for x in pairs if not_a_pair(x))
            fail_on(self.program, batch, start, file, first_line, not_a_pair,
                    f"map must yield (key, value) pairs, not {short_repr(bad)}")
        keys = list(map(_first, pairs))
        values = list(map(_second, pairs))
        key_types = set(map(type, keys))
        value_types = set(map(type, values))
        for index, seq, types, what in ((0, keys, key_types, "key"),
                                        (1, values, value_types, "value")):
            found = None if types <= SCALARS else first_untravelable(seq)
            if found is not None:
                fail_on(self.program, batch, start, file, first_line,
                        has_bad_item(index, found[1]),
                        f"a {what} of type {found[1].__name__} cannot travel (use str, "
                        "bytes, int, float, bool, None, or tuples / lists of them)")
        if not CONTAINERS.isdisjoint(key_types):
            keys = list(map(freeze_key, keys))
        # (NaN keys, the memory estimate and long lists: _map_lines, after the batch)
        groups = self.groups
        if self.sum_combine:
            get = groups.get
            try:
                for k, v in zip(keys, values, strict=True):
                    groups[k] = get(k, 0) + v
            except TypeError as exc:
                raise MapFailed("combine", "TypeError", f"sum_values cannot add the values "
                                f"of key {short_repr(k)}: {exc}", key=short_repr(k),
                                fatal=True) from None
            return
        get = groups.get
        for k, v in zip(keys, values, strict=True):
            held = get(k)
            if held is None:
                groups[k] = [v]
            else:
                held.append(v)
        self.values_held += len(values)

    def _combine_long_lists(self) -> None:
        held = 0
        for key, values in self.groups.items():
            if len(values) >= COMBINE_EVERY:
                values[:] = [self._combine(key, values)]
            held += len(values)
        self.values_held = held

    def _combine(self, key: Any, values: list[Any]) -> Any:
        combine = self.program.combine
        assert combine is not None
        try:
            return combine(as_emitted(key), values)
        except Exception as exc:
            raise MapFailed("combine", type(exc).__name__, str(exc), key=short_repr(key),
                            user_tb=user_traceback(exc, self.program.filenames),
                            cause=exc) from None

    def _call(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except (Cancelled, MapFailed):
            raise
        except Exception as exc:
            raise MapFailed(stage, type(exc).__name__, str(exc),
                            user_tb=user_traceback(exc, self.program.filenames),
                            cause=exc) from None


_HOLDERS = frozenset([tuple, ListKey])
