"""Keys and values of a job: which types travel, the partition of a key, and the total order.

A job's keys and values are ``str``, ``bytes``, ``int``, ``float``, ``bool``, ``None`` and
tuples / lists of them. Sans-I/O and import-free (of pymr): the map side, the reduce side,
the master's merge and the tests all use these functions, so there is one partition rule and
one order.

* **Partition**: ``crc32`` of a canonical encoding of the key, never Python's salted
  ``hash()``. ``bytes`` are their own encoding and ``str`` is UTF-8, so a word count's keys
  cost one ``crc32`` each. Keys that are equal in Python (``1``, ``1.0``, ``True``) are
  grouped together by the dicts of every process, so they share one encoding.
* **Order** (``ORDER = "key"``, the default): ``None`` < numbers (``bool`` as ``int``) <
  NaN < ``str`` (code points) < ``bytes`` < tuples and lists (element by element).
  ``ORDER = "value"``: value descending, then key ascending (a word count's order).
"""

from __future__ import annotations

import math
import struct
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, islice
from operator import itemgetter, methodcaller
from typing import Any


class ListKey(tuple):  # type: ignore[type-arg]
    """A list used as a key: hashable while it travels and is grouped, and never equal to a
    tuple with the same items (a key comes back as the type it was emitted)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is ListKey and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(("pymr.ListKey", tuple(self)))

    def __repr__(self) -> str:
        return repr(list(self))


#: Types a key or value may have (containers are checked item by item).
SCALARS = frozenset([str, bytes, int, float, bool, type(None)])
CONTAINERS = frozenset([tuple, list, ListKey])
TRAVELS = SCALARS | CONTAINERS


#: What a dict entry costs beyond its key object (its slot, a third empty, and a small
#: value): the memory estimates of the map and reduce sides.
DICT_ENTRY_BYTES = 100
#: Key types that may hold a ListKey.
_HOLDERS = frozenset([ListKey, tuple])


def as_emitted(key: Any) -> Any:
    """The key as the job emitted it, for the job's own code (a list key is held as a
    hashable ``ListKey``); other keys as they are, at the cost of one type check."""
    return thaw(key) if type(key) in _HOLDERS else key


def short_repr(obj: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters, for a key in a one-line error."""
    text = repr(obj)
    return text if len(text) <= limit else text[:limit - 3] + "..."


#: Records a merge reads from each run at a time.
MERGE_BLOCK = 4096
#: Bytes of formatted lines a merge of (key, line) records reads from each run at a time
#: (about: an inverted index's line for a common word can be megabytes).
MERGE_LINE_BYTES = 1 << 20


def merge_sorted(streams: Sequence[Iterable[tuple[Any, Any]]],
                 key: Callable[[tuple[Any, Any]], Any] | None,
                 sort: Callable[[list[tuple[Any, Any]]], None] | None = None,
                 *, lines: bool = False) -> Iterator[tuple[Any, Any]]:
    """k-way merge of sorted runs of records (``key`` as for ``sorted``), a block at a time
    (``merge_blocks``, reading ``MERGE_BLOCK`` records of each run at a time; with
    ``lines``, records whose values are formatted lines, about ``MERGE_LINE_BYTES``)."""
    if len(streams) == 1:
        return iter(streams[0])
    blocks = [batched_lines(s) if lines else batched(s, MERGE_BLOCK) for s in streams]
    return chain.from_iterable(merge_blocks(blocks, key, sort))


def batched_lines(records: Iterable[tuple[Any, bytes]], size: int = MERGE_BLOCK,
                  nbytes: int = MERGE_LINE_BYTES) -> Iterator[list[tuple[Any, bytes]]]:
    """``batched`` for (key, line) records: at most ``size`` records a block, and as many
    as about ``nbytes`` of lines at the mean length of the block before (measured in C,
    no Python step per record)."""
    it = iter(records)
    count = size
    while block := list(islice(it, count)):
        yield block
        held = sum(map(len, map(_second_item, block)))
        count = max(1, min(size, len(block) * nbytes // max(1, held)))


def batched(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``records`` as lists of ``size`` (the last one shorter)."""
    it = iter(records)
    while block := list(islice(it, size)):
        yield block


def merge_blocks(runs: Sequence[Iterable[list[tuple[Any, Any]]]],
                 key: Callable[[tuple[Any, Any]], Any] | None,
                 sort: Callable[[list[tuple[Any, Any]]], None] | None = None
                 ) -> Iterator[list[tuple[Any, Any]]]:
    """k-way merge of sorted runs, each given as blocks of records, into sorted blocks:
    every run's records up to the smallest of the runs' last read records are sorted
    together (``sort``, in place; by default ``list.sort(key=key)``), which merges the few
    runs in C instead of a Python heap step per record; a caller that works a block at a
    time (writes a run, sums a block) needs no Python step per record either. Records with
    equal keys come out next to each other (runs first, in run order), which is what
    grouping needs."""
    if sort is None:
        def sort(block: list[tuple[Any, Any]]) -> None:
            block.sort(key=key)
    iters = [iter(r) for r in runs]
    if len(iters) == 1:
        return (b for b in iters[0] if b)
    return _merge_blocks(iters, key, sort)


def _merge_blocks(iters: list[Iterator[list[tuple[Any, Any]]]],
                  key: Callable[[tuple[Any, Any]], Any] | None,
                  sort: Callable[[list[tuple[Any, Any]]], None]
                  ) -> Iterator[list[tuple[Any, Any]]]:
    # Every record left unread in a run is >= that run's last read one >= ``bound``, and
    # every record taken is <= ``bound``: so each sorted block follows the one before.
    last = key if key is not None else _itself
    buffers: list[list[Any]] = [[recs, it] for it in iters if (recs := _next_block(it))]
    while len(buffers) > 1:
        bound = min(last(b[0][-1]) for b in buffers)
        block: list[tuple[Any, Any]] = []
        for b in buffers:
            recs = b[0]
            cut = bisect_right(recs, bound, key=key)
            if cut == len(recs):
                block += recs
                b[0] = _next_block(b[1])
            elif cut:
                block += recs[:cut]
                b[0] = recs[cut:]
        buffers = [b for b in buffers if b[0]]
        sort(block)
        yield block
    for recs, it in buffers:
        yield recs
        yield from (b for b in it if b)


def _next_block(it: Iterator[list[Any]]) -> list[Any]:
    """The next non-empty block of a run, or ``[]`` at its end."""
    for block in it:
        if block:
            return block
    return []


def _itself(x: Any) -> Any:
    return x


def freeze_key(key: Any) -> Any:
    """A hashable key for one that holds lists (lists become ``ListKey``)."""
    t = type(key)
    if t is list:
        return ListKey(map(freeze_key, key))
    if t is tuple:
        return tuple(map(freeze_key, key))
    return key


def thaw(value: Any) -> Any:
    """What the user emitted: ``ListKey`` back to ``list`` (inside tuples too)."""
    t = type(value)
    if t is ListKey:
        return [thaw(x) for x in value]
    if t is tuple:
        return tuple(map(thaw, value))
    if t is list:
        return [thaw(x) for x in value]
    return value


def untravelable(value: Any) -> type | None:
    """The first type inside ``value`` that cannot travel, or None. A container of scalars
    (an inverted index's list of places) is checked in one C pass over its item types."""
    t = type(value)
    if t in SCALARS:
        return None
    if t in CONTAINERS:
        if SCALARS.issuperset(map(type, value)):
            return None
        for item in value:
            bad = untravelable(item)
            if bad is not None:
                return bad
        return None
    return t


def first_untravelable(values: Iterable[Any]) -> tuple[Any, type] | None:
    """(value, bad type) of the first value of a batch that cannot travel. The common case
    (scalars only) is one pass over the types in C."""
    values = list(values)
    types = set(map(type, values))
    if types <= SCALARS:
        return None
    for v in values:
        bad = untravelable(v)
        if bad is not None:
            return v, bad
    return None


# ---------------------------------------------------------------- partition

_pack_len = struct.Struct(">I").pack


def canonical(key: Any) -> bytes:
    """Bytes that equal keys share (``1 == 1.0 == True``), for the partition hash."""
    t = type(key)
    if t is bytes:
        return key  # type: ignore[no-any-return]
    if t is str:
        return key.encode("utf-8", "surrogatepass")  # type: ignore[no-any-return]
    return _canon(key)


def _canon(x: Any) -> bytes:
    t = type(x)
    if x is None:
        return b"N"
    if t is bool or t is int:
        return b"i%d;" % x
    if t is float:
        if x.is_integer():
            return b"i%d;" % int(x)
        return b"f" + x.hex().encode() + b";"
    if t is str:
        raw = x.encode("utf-8", "surrogatepass")
        return b"s" + _pack_len(len(raw)) + raw
    if t is bytes:
        return b"b" + _pack_len(len(x)) + x
    if t is tuple:
        return b"t" + _pack_len(len(x)) + b"".join(map(_canon, x))
    if t is ListKey or t is list:
        return b"l" + _pack_len(len(x)) + b"".join(map(_canon, x))
    raise TypeError(f"a key of type {t.__name__} cannot travel")


#: The one NaN object keys are grouped under: NaN != NaN, but a dict finds a key by
#: identity first, so every NaN key of a job meets in one record.
NAN = float("nan")


def same_nans(keys: list[Any]) -> list[Any]:
    """``keys`` with every float NaN replaced by ``NAN`` (only floats are looked at)."""
    if float not in set(map(type, keys)):
        return keys
    return [NAN if type(k) is float and k != k else k for k in keys]


def nan_inside(key: Any) -> Any:
    """A tuple or list key with every NaN inside it (at any depth) replaced by ``NAN``, so
    that equal keys holding a NaN are one dict key; the key itself when it holds none."""
    t = type(key)
    if t is not tuple and t is not ListKey:
        return NAN if t is float and key != key else key
    items = [nan_inside(x) for x in key]
    if all(a is b for a, b in zip(items, key, strict=True)):
        return key
    return ListKey(items) if t is ListKey else tuple(items)


def partition_of(key: Any, num_partitions: int) -> int:
    """The reduce partition of a key: stable across processes, machines and runs."""
    return zlib.crc32(canonical(key)) % num_partitions


_utf8 = methodcaller("encode", "utf-8", "surrogatepass")


def partition_hashes(keys: list[Any]) -> list[int]:
    """``crc32(canonical(key))`` of each key (``partition_of`` before the modulo): keys of
    one type, ``bytes`` or ``str``, in C without a Python call per key."""
    types = set(map(type, keys))
    if types == _BYTES_ONLY:
        return list(map(zlib.crc32, keys))
    if types == _STR_ONLY:
        return list(map(zlib.crc32, map(_utf8, keys)))
    return [zlib.crc32(canonical(k)) for k in keys]


_BYTES_ONLY, _STR_ONLY = {bytes}, {str}


# ---------------------------------------------------------------- order

#: One native type: Python's own ``<`` is the documented order (and is fastest).
NATIVE_ORDER = frozenset(["str", "bytes", "int"])


def order_key(x: Any) -> Any:
    """A sort key that puts any mix of travelling types in the documented total order."""
    t = type(x)
    if t is str:
        return (3, x)
    if t is bytes:
        return (4, x)
    if t is int or t is bool:
        return (1, x)
    if t is float:
        return (2, 0) if math.isnan(x) else (1, x)
    if x is None:
        return (0, 0)
    # tuples and lists compare item by item, together; on equal items a tuple goes first
    return (5, tuple(map(order_key, x)), t is not tuple)


class Descending:
    """Wraps a sort key to reverse it (values of ``ORDER = "value"`` that are not ints)."""

    __slots__ = ("k",)

    def __init__(self, k: Any) -> None:
        self.k = k

    def __lt__(self, other: Descending) -> bool:
        return bool(other.k < self.k)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Descending) and bool(self.k == other.k)

    __hash__ = None  # type: ignore[assignment]


def type_names(values: Iterable[Any]) -> set[str]:
    """The names of the types of ``values`` (a ``ListKey`` is a list)."""
    return {"list" if t is ListKey else t.__name__ for t in set(map(type, values))}


def sort_records(records: list[tuple[Any, Any]], order: str, key_types: set[str],
                 value_types: set[str]) -> None:
    """Sort records in place in the job's order. Value order with int values and keys of
    one native type takes two C-keyed passes (by key, then by value, largest first: the
    sort is stable) instead of a Python key function per record; same order."""
    if order == "value" and value_types <= {"int"} and len(key_types) <= 1 \
            and key_types <= NATIVE_ORDER:
        records.sort(key=_first_item)
        records.sort(key=_second_item, reverse=True)
        return
    records.sort(key=record_sort_key(order, key_types, value_types))


_first_item, _second_item = itemgetter(0), itemgetter(1)


def record_sort_key(order: str, key_types: set[str], value_types: set[str]
                    ) -> Callable[[tuple[Any, Any]], Any] | None:
    """The sort key of ``(key, value)`` records for a job's order, given the types seen.

    None means "sort the records as they are" (keys of one native type, order by key).
    Every key returned is consistent with the others on the records they both accept, so
    reducers that saw fewer types sort their runs compatibly with the master's merge.
    """
    native_key = len(key_types) <= 1 and key_types <= NATIVE_ORDER
    if order == "key":
        if native_key:
            return None
        return lambda kv: order_key(kv[0])
    int_values = value_types <= {"int"}
    if int_values and native_key:
        return lambda kv: (-kv[1], kv[0])
    if int_values:
        return lambda kv: (-kv[1], order_key(kv[0]))
    return lambda kv: (Descending(order_key(kv[1])), order_key(kv[0]))
