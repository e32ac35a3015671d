"""What a job's consumer gets: its reduced partitions, fetched on credit from their owners
and merged into the job's order (or handed over one partition at a time).

The fetch itself (requests, credit, chunks arriving) is ``PartitionStreams``; the master
pumps its sockets while a stream waits. This module only picks the partitions, their
order and the merge, from what each reducer reported in its ``PartitionComplete``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..wire.keys import merge_sorted, record_sort_key, sort_records
from .fetch import PartitionStreams
from .partitions import PartitionBook


class JobRecords:
    """What a job's consumer gets: iterate it for the merged answer in the job's order, or
    call ``by_partition()`` for each partition's sorted records in turn (part files)."""

    def __init__(self, book: PartitionBook, streams: PartitionStreams, order: str,
                 phase: Callable[[str], None]) -> None:
        self._book = book
        self._streams = streams
        self._order = order
        self._phase = phase             # tells the reporter "fetch" or "merge"

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._merged()

    def by_partition(self) -> Iterator[tuple[int, Iterator[tuple[Any, Any]]]]:
        return self._by_partition()

    @property
    def order(self) -> str:
        """The job's output order: "key" or "value"."""
        return self._order

    def tsv_lines(self) -> Iterator[tuple[Any, bytes]]:
        """``(key, line)``: each record's TSV output line, formatted by its reducer, in
        the merged order (``output.write_lines`` writes them). Only for jobs ordered by
        key: the master merges on the key alone and never decodes a value."""
        return self._merged(lines=True)

    def tsv_lines_by_partition(self) -> Iterator[tuple[int, Iterator[tuple[Any, bytes]]]]:
        """Each partition's ``(key, line)`` records in turn (part files, any order)."""
        return self._by_partition(lines=True)

    @property
    def key_types(self) -> list[str]:
        done = self._book.done.values()
        return sorted({t for x in done if x.records for t in x.key_types})

    @property
    def value_types(self) -> list[str]:
        done = self._book.done.values()
        return sorted({t for x in done if x.records for t in x.value_types})

    def _by_partition(self, lines: bool = False
                      ) -> Iterator[tuple[int, Iterator[tuple[Any, Any]]]]:
        """Each partition's sorted records, fetched one partition at a time (part files);
        with ``lines``, (key, TSV line) records formatted by the reducers."""
        self._phase("fetch")
        for part in sorted(self._book.partition_map):
            self._streams.open(part, lines)
            if self._book.done[part].records:
                yield part, self._streams.stream(part)
            else:
                yield part, iter(())

    def _merged(self, lines: bool = False) -> Iterator[tuple[Any, Any]]:
        """k-way merge of the sorted partitions, fetched on credit: flat memory. The order
        is the job's, picked for the key and value types every reducer reported. With
        ``lines`` (jobs ordered by key only), (key, TSV line) records."""
        self._phase("merge")
        streams = []
        key_types: set[str] = set()
        value_types: set[str] = set()
        for part in sorted(self._book.partition_map):
            self._streams.open(part, lines)
            done = self._book.done[part]
            if done.records:
                streams.append(self._streams.stream(part))
                key_types.update(done.key_types)
                value_types.update(done.value_types)
        order = self._order
        return merge_sorted(streams, record_sort_key(order, key_types, value_types),
                            lambda block: sort_records(block, order, key_types, value_types),
                            lines=lines)
