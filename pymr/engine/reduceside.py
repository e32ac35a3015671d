"""The reduce side of one partition, without sockets: merge map outputs, reduce, sort.

Chunks arrive as ``[keys, values]`` (``pymr.wire.protocol.pack_chunk``): each value combined (the
job has a ``combine``) or a list of values (no combine). ``add_chunk`` folds them in: a bulk
dict sum when ``combine`` is ``pymr.api.sum_values``, else lists per key (a ``combine``
shortens a long list as it grows). ``finish`` calls the job's ``reduce`` once per key (none
when ``reduce`` is ``sum_values`` over summed values) and sorts the run in the job's order;
the sort is deterministic, so a fetch that resumes after a move gets the same chunks.

Under a memory budget the executor asks a partition that holds too much to ``spill``: its
merged data is sorted by key and written as a run file (``pymr.engine.runs``). ``finish`` then
k-way merges the runs and what is still in memory as a stream, gathers each key's values
across runs and calls ``reduce`` once per key, as Hadoop's reducers see a sorted stream.
The output goes to a file of chunks when it does not fit the share (``ORDER = "value"``
sorts it by value with spilled runs of its own), so a fetch reads it chunk by chunk.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate, chain, compress, count, groupby, islice
from operator import itemgetter, ne, sub
from sys import getsizeof
from typing import Any

from ..jobs.program import JobProgram, enter, user_traceback
from ..wire import protocol as p
from ..wire.keys import (
    DICT_ENTRY_BYTES,
    NATIVE_ORDER,
    ListKey,
    as_emitted,
    batched,
    first_untravelable,
    merge_blocks,
    order_key,
    record_sort_key,
    same_nans,
    short_repr,
    sort_records,
    type_names,
    untravelable,
)
from .output import tsv_lines
from .runs import RunFile, chunk_ranges, write_blocks, write_run, write_sorted

#: A combine (not a plain sum) runs on a key's values once it holds this many.
COMBINE_EVERY = 256
_keys_of, _values_of = itemgetter(0), itemgetter(1)
_INT_ONLY = {int}
#: Records (or list items) per chunk of a spilled run: what a merge holds per run read.
RUN_CHUNK_ITEMS = 4096
#: Most runs merged at once; more are merged in groups first.
MAX_FAN_IN = 64
#: Value types whose chunks are cut by record count alone.
_SCALAR_VALUES = frozenset(["int", "float", "str", "bytes", "bool", "NoneType"])


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
    """A partition's reduced records in the job's order, with what the master merges by:
    in memory (``records``) or, when it did not fit, in a file of chunks (``file``)."""

    def __init__(self, records: list[tuple[Any, Any]], key_types: set[str],
                 value_types: set[str], counters: dict[str, int],
                 file: RunFile | None = None, chunk_records: int = 65_536) -> None:
        self.records = records
        self.key_types = key_types
        self.value_types = value_types
        self.counters = counters
        self.file = file
        self.ranges = chunk_ranges(list(map(_values_of, records)), chunk_records) \
            if records and not _SCALAR_VALUES.issuperset(value_types) else None

    @property
    def count(self) -> int:
        return self.file.records if self.file is not None else len(self.records)

    def num_chunks(self, chunk_records: int) -> int:
        if self.file is not None:
            return max(1, len(self.file.offsets))
        if self.ranges is not None:
            return max(1, len(self.ranges))
        return max(1, -(-len(self.records) // chunk_records))

    def chunk(self, seq: int, chunk_records: int) -> bytes:
        """The packed ``[keys, values]`` of chunk ``seq``."""
        if self.file is not None and self.file.offsets:
            return self.file.chunk(seq)
        piece = self._piece(seq, chunk_records)
        return p.pack_chunk(list(map(_keys_of, piece)), list(map(_values_of, piece)))

    def line_chunk(self, seq: int, chunk_records: int) -> bytes:
        """The packed ``[keys, lines]`` of chunk ``seq``: the TSV line of each record, as
        the master would write it (``output.tsv_lines``), formatted here in parallel with
        the other reducers. The same chunks as ``chunk``, so a fetch resumes either way."""
        if self.file is not None and self.file.offsets:
            keys, values = p.unpack_chunk(self.file.chunk(seq))
        else:
            piece = self._piece(seq, chunk_records)
            keys, values = list(map(_keys_of, piece)), list(map(_values_of, piece))
        return p.pack_chunk(keys, tsv_lines(keys, values))

    def _piece(self, seq: int, chunk_records: int) -> list[tuple[Any, Any]]:
        if self.ranges:
            a, b = self.ranges[seq]
            return self.records[a:b]
        return self.records[seq * chunk_records:(seq + 1) * chunk_records]

    def remove(self) -> None:
        if self.file is not None:
            self.file.remove()


class ReduceSide:
    """One partition's merge; ``finish`` once every task's output is in."""

    def __init__(self, program: JobProgram, spill_dir: str = "", name: str = "p") -> None:
        self.program = program
        self.combined = program.combine is not None
        self.summed = program.combine_is_sum
        self.data: dict[Any, Any] = {}
        self.values_held = 0
        self.counters: dict[str, int] = {}
        self.spill_dir = spill_dir
        self.name = name
        self.runs: list[RunFile] = []
        self.run_key_types: set[str] = set()
        self.spilled_bytes = 0
        self.spilled_runs = 0
        self.chunk_records = 65_536
        self._key_bytes = 64.0        # running estimates of one key / one value in memory
        self._value_bytes = 32.0

    # ---------------------------------------------------------------- merging
    def add_chunk(self, keys: list[Any], values: list[Any]) -> None:
        """Fold in one chunk of a map output: ``keys[i]`` with its combined value (or its
        list of values, for a job without ``combine``)."""
        if keys:
            self._sample(keys, values)
            if float in set(map(type, keys)):  # NaN keys of every map output meet in one
                keys = same_nans(keys)
        data = self.data
        if self.summed:
            if not data:
                data.update(zip(keys, values, strict=True))
                if len(data) == len(keys):
                    return
                data.clear()  # a key twice in one chunk (only a NaN can be): sum them
            get = data.get
            for k, v in zip(keys, values, strict=True):
                data[k] = get(k, 0) + v
            return
        get = data.get
        if self.combined:
            enter(self.program, self.counters)
            self.values_held += len(keys)
            for k, v in zip(keys, values, strict=True):
                held = get(k)
                if held is None:
                    data[k] = [v]
                else:
                    held.append(v)
                    if len(held) >= COMBINE_EVERY:
                        self.values_held -= len(held) - 1
                        held[:] = [self._call(self.program.combine, k, held)]
            return
        self.values_held += sum(map(len, values))
        for k, vs in zip(keys, values, strict=True):
            held = get(k)
            if held is None:
                data[k] = vs
            else:
                held.extend(vs)

    def _sample(self, keys: list[Any], values: list[Any]) -> None:
        """Update the per-key and per-value size estimates from a few records."""
        items = list(zip(keys[:8], values[:8], strict=True))
        key_bytes = sum(getsizeof(k) for k, _ in items) / len(items) + DICT_ENTRY_BYTES
        if self.summed:
            value_bytes = 0.0
        elif self.combined:
            value_bytes = sum(getsizeof(v) for _, v in items) / len(items) + 8
        else:
            sizes = [getsizeof(x) for _, vs in items for x in vs[:4]]
            value_bytes = (sum(sizes) / len(sizes) + 8) if sizes else 8.0
        self._key_bytes = 0.8 * self._key_bytes + 0.2 * key_bytes
        self._value_bytes = 0.8 * self._value_bytes + 0.2 * value_bytes

    def approx_bytes(self) -> int:
        """About how much memory the merged data holds (for the executor's budget)."""
        return int(len(self.data) * self._key_bytes + self.values_held * self._value_bytes)

    def spill(self, chunk_records: int) -> int:
        """Write the merged data as a sorted run file and free it; returns its size.
        Raises ``SpillError`` when the directory refuses."""
        if not self.data:
            return 0
        data, self.data, self.values_held = self.data, {}, 0
        types = type_names(data.keys())
        keys = sorted(data, key=_key_order(types))
        values = list(map(data.__getitem__, keys))
        del data
        run = write_sorted(self.spill_dir, f"{self.name}.run{len(self.runs)}", keys, values,
                           RUN_CHUNK_ITEMS)
        self.runs.append(run)
        self.run_key_types |= types
        self.spilled_bytes += run.size
        self.spilled_runs += 1
        return run.size

    def discard(self) -> None:
        """Drop everything (the partition moved away, or its job ended)."""
        self.data, self.values_held = {}, 0
        for run in self.runs:
            run.remove()
        self.runs = []

    # ---------------------------------------------------------------- finishing
    def finish(self, memory: int = 0, chunk_records: int = 65_536) -> SortedRun:
        """Reduce every key and sort; raises ``ReduceError`` naming the key (and
        ``SpillError`` when a run cannot be written or read)."""
        counters = self.counters  # what a reduce-side combine counted, then reduce
        enter(self.program, counters)
        self.chunk_records = chunk_records
        if not self.runs:
            return self._finish_in_memory(counters)
        try:
            return self._finish_from_runs(counters, memory, chunk_records)
        finally:
            for run in self.runs:
                run.remove()
            self.runs = []

    def _finish_in_memory(self, counters: dict[str, int]) -> SortedRun:
        data, self.data, self.values_held = self.data, {}, 0
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
            raise _cannot_travel(key, found[1])
        key_types = type_names(data.keys())
        value_types = type_names(data.values())
        records = list(data.items())
        sort_records(records, program.order, key_types, value_types)
        return SortedRun(records, key_types, value_types, counters,
                         chunk_records=self.chunk_records)

    def _finish_from_runs(self, counters: dict[str, int], memory: int,
                          chunk_records: int) -> SortedRun:
        data, self.data, self.values_held = self.data, {}, 0
        types = self.run_key_types | type_names(data.keys())
        merge_key = _merge_key(types)
        self._reduce_fan_in(types)
        streams: list[Any] = [run.blocks() for run in self.runs]
        if data:
            streams.append(batched(sorted(data.items(), key=merge_key), RUN_CHUNK_ITEMS))
        del data
        merged = self._merge(streams, types)
        key_types: set[str] = set()
        value_types: set[str] = set()
        reduced = self._reduce_blocks(merged, key_types, value_types)
        if self.program.order == "key":
            out = write_blocks(self.spill_dir, f"{self.name}.out", reduced, chunk_records)
            self.spilled_bytes += out.size
            return SortedRun([], key_types, value_types, counters, out)
        return self._sort_by_value(reduced, key_types, value_types, counters, memory,
                                   chunk_records)

    def _merge(self, streams: list[Any], key_types: set[str]
               ) -> Iterator[list[tuple[Any, Any]]]:
        """The block merge of sorted runs, with each key's values summed when the job's
        combine is a sum (then each key comes once)."""
        merged = merge_blocks(streams, _merge_key(key_types))
        return _sum_blocks(merged, _key_order(key_types) is None) if self.summed else merged

    def _reduce_fan_in(self, key_types: set[str]) -> None:
        """Merge runs in groups until at most ``MAX_FAN_IN`` are left: a merge holds one
        chunk of every run it reads. The first merge takes just enough runs that the
        others are merges of ``MAX_FAN_IN`` (so with a few runs too many, a few small ones
        are merged, not ``MAX_FAN_IN`` of them); each group is of neighbouring runs, its
        merge taking their place, so a key's values keep the order they arrived in.
        Summed values are summed as they merge: the merged run holds each key once."""
        level = 0
        while len(self.runs) > MAX_FAN_IN:
            size = (len(self.runs) - 2) % (MAX_FAN_IN - 1) + 2
            at = _lightest_window([r.records for r in self.runs], size)
            group = self.runs[at:at + size]
            run = write_blocks(self.spill_dir, f"{self.name}.m{level}",
                               self._merge([r.blocks() for r in group], key_types),
                               RUN_CHUNK_ITEMS)
            for r in group:
                r.remove()
            self.runs[at:at + size] = [run]
            self.spilled_bytes += run.size
            level += 1

    def _reduce_blocks(self, merged: Iterator[list[tuple[Any, Any]]], key_types: set[str],
                       value_types: set[str]) -> Iterator[list[tuple[Any, Any]]]:
        """Each key's values gathered across the runs (summed ones: already one record
        per key), reduced once, checked to travel, as blocks of records; summed values
        reduced by ``sum_values`` need no Python call per key."""
        if not (self.summed and self.program.reduce_is_sum):
            return batched(self._reduce_stream(merged, key_types, value_types),
                           RUN_CHUNK_ITEMS)
        return self._summed_blocks(merged, key_types, value_types)

    @staticmethod
    def _summed_blocks(merged: Iterator[list[tuple[Any, Any]]], key_types: set[str],
                       value_types: set[str]) -> Iterator[list[tuple[Any, Any]]]:
        """Summed records as they are (``sum_values`` of one total is the total), checked
        and typed a block at a time."""
        for block in merged:
            values = list(map(_values_of, block))
            found = first_untravelable(values)
            if found is not None:
                raise _cannot_travel(next(k for k, v in block if v is found[0]), found[1])
            key_types |= type_names(map(_keys_of, block))
            value_types |= type_names(values)
            yield block

    def _reduce_stream(self, merged: Iterator[list[tuple[Any, Any]]], key_types: set[str],
                       value_types: set[str]) -> Iterator[tuple[Any, Any]]:
        """Each key's values gathered across the runs, reduced once, checked to travel."""
        program = self.program
        reduce = program.reduce
        if self.summed:  # each key once, its values summed: the job's reduce sees the total
            for key, total in chain.from_iterable(merged):
                yield self._checked(key, self._call(reduce, key, [total]), key_types,
                                    value_types)
            return
        for key, group in groupby(chain.from_iterable(merged), key=_keys_of):
            values = chain.from_iterable(map(_values_of, group))
            # lists of values (combined ones, with a combine) from every run
            yield self._checked(key, self._call(reduce, key, list(values)), key_types,
                                value_types)

    @staticmethod
    def _checked(key: Any, value: Any, key_types: set[str], value_types: set[str]
                 ) -> tuple[Any, Any]:
        bad = untravelable(value)
        if bad is not None:
            raise _cannot_travel(key, bad)
        key_types.add(_type_name(key))
        value_types.add(_type_name(value))
        return key, value

    def _sort_by_value(self, reduced: Iterator[list[tuple[Any, Any]]], key_types: set[str],
                       value_types: set[str], counters: dict[str, int], memory: int,
                       chunk_records: int) -> SortedRun:
        """``ORDER = "value"`` over a stream larger than memory: runs sorted by value, each
        by the order for its own types (``sort_records``: two passes in C for int values;
        the orders agree on what they both accept), merged by the order for all types."""
        limit = max(chunk_records, memory // 128) if memory else 1 << 62
        buffer: list[tuple[Any, Any]] = []
        runs: list[RunFile] = []
        try:
            for block in reduced:
                buffer += block
                if len(buffer) >= limit:
                    _sort_run(buffer)
                    runs.append(write_run(self.spill_dir, f"{self.name}.v{len(runs)}",
                                          buffer, RUN_CHUNK_ITEMS))
                    self.spilled_bytes += runs[-1].size
                    buffer = []
            if not runs:
                sort_records(buffer, "value", key_types, value_types)
                return SortedRun(buffer, key_types, value_types, counters,
                                 chunk_records=chunk_records)
            _sort_run(buffer)
            streams: list[Any] = [r.blocks() for r in runs]
            streams.append(batched(buffer, RUN_CHUNK_ITEMS))
            merged = merge_blocks(
                streams, record_sort_key("value", key_types, value_types),
                lambda block: sort_records(block, "value", key_types, value_types))
            out = write_blocks(self.spill_dir, f"{self.name}.out", merged, chunk_records)
            self.spilled_bytes += out.size
            return SortedRun([], key_types, value_types, counters, out)
        finally:
            for r in runs:
                r.remove()

    def _call(self, fn: Any, key: Any, values: list[Any]) -> Any:
        try:
            # a list key is held as a hashable ListKey; the job sees the list it emitted
            return fn(as_emitted(key), values)
        except Exception as exc:
            raise ReduceError(short_repr(key), type(exc).__name__, str(exc),
                              user_traceback(exc, self.program.filenames), exc) from None


def _sort_run(records: list[tuple[Any, Any]]) -> None:
    """Sort one run of reduced records by value, by the order for the types it holds."""
    sort_records(records, "value", type_names(map(_keys_of, records)),
                 type_names(map(_values_of, records)))


def _sum_blocks(merged: Iterable[list[tuple[Any, Any]]], native: bool
                ) -> Iterator[list[tuple[Any, Any]]]:
    """Blocks of records sorted by key (equal keys next to each other, maybe across
    blocks) with each key's values summed, ``RUN_CHUNK_ITEMS`` records at a time (so what
    it holds stays small), the last key of a piece carried into the next one. ``native``:
    keys of one native type (equal keys are equal objects of that type)."""
    carry: list[tuple[Any, Any]] = []
    for block in merged:
        for start in range(0, len(block), RUN_CHUNK_ITEMS):
            summed = _sum_piece(carry + block[start:start + RUN_CHUNK_ITEMS], native)
            carry = [summed.pop()]
            if summed:
                yield summed
    if carry:
        yield carry


def _sum_piece(piece: list[tuple[Any, Any]], native: bool) -> list[tuple[Any, Any]]:
    """One sorted piece with each key's values summed. Int values under native keys are
    summed in C: the prefix sums at the last record of each key, less the one before
    (exact for ints); anything else by a dict, as ``sum`` would."""
    values = list(map(_values_of, piece))
    if not native or set(map(type, values)) != _INT_ONLY:
        sums: dict[Any, Any] = {}
        for k, v in piece:
            if k in sums:
                sums[k] += v
            else:
                sums[k] = v
        return list(sums.items())
    keys = list(map(_keys_of, piece))
    ends = list(compress(count(), map(ne, keys, islice(keys, 1, None))))
    ends.append(len(keys) - 1)
    totals = list(map(list(accumulate(values)).__getitem__, ends))
    return list(zip(map(keys.__getitem__, ends), map(sub, totals, chain((0,), totals)),
                    strict=True))


def _lightest_window(sizes: list[int], width: int) -> int:
    """Where the ``width`` neighbouring runs holding the fewest records start."""
    total = best = sum(sizes[:width])
    at = 0
    for i in range(width, len(sizes)):
        total += sizes[i] - sizes[i - width]
        if total < best:
            best, at = total, i - width + 1
    return at


def _key_order(key_types: set[str]) -> Callable[[Any], Any] | None:
    """``_merge_key`` on keys alone (None: the keys as they are)."""
    if len(key_types) <= 1 and key_types <= NATIVE_ORDER:
        return None
    return order_key


def _merge_key(key_types: set[str]) -> Callable[[tuple[Any, Any]], Any]:
    """How runs of one partition are sorted and merged: by key only (values never
    compared), native when every key is of one native type, else the total order."""
    if len(key_types) <= 1 and key_types <= NATIVE_ORDER:
        return _keys_of
    return lambda kv: order_key(kv[0])


def _type_name(x: Any) -> str:
    t = type(x)
    return "list" if t is ListKey else t.__name__


def _cannot_travel(key: Any, bad: type) -> ReduceError:
    return ReduceError(repr(key), "TypeError", f"reduce returned a value of type "
                       f"{bad.__name__}, which cannot travel (use str, bytes, int, float, "
                       "bool, None, or tuples / lists of them)")
