"""Fetching the sorted partitions from the reducers as streams (``keys.merge_sorted`` merges them).

Each partition arrives chunk by chunk, on credit, so the master's memory does
not grow with the number of distinct keys. A partition whose reducer is lost
is rebuilt elsewhere and its stream resumes at the chunk where it stopped:
sorted runs are deterministic (the job's total order; fixed chunk size).
A chunk is ``[keys, values]``: two arrays, unpacked without a tuple per record.

A window asked for that brings nothing for ``FETCH_RETRY_S`` (the reply was lost: a
connection reset drops what its socket still queued) is asked for again, from the first
chunk not received, waiting twice as long each time without progress; chunks that then
come twice are dropped by their sequence number.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

#: How long a partition's window may bring nothing before it is asked for again.
FETCH_RETRY_S = 10.0
#: The longest wait between two asks without progress (a very slow link).
FETCH_RETRY_MAX_S = 160.0


class PartitionStreams:
    """Buffers and credit for every partition being fetched."""

    def __init__(self, credit: int, request: Callable[[int, int, int, bool], None],
                 pump: Callable[[], None], chunks_of: Callable[[int], int | None],
                 now: Callable[[], float] = time.monotonic) -> None:
        self.credit = credit
        self._request_cb = request         # (partition, start, count, lines)
        self._pump = pump                  # receive and handle messages for a while
        self._chunks_of = chunks_of        # total chunks of a complete partition, else None
        self.buffers: dict[int, deque[tuple[list[Any], list[Any]]]] = {}
        self.next: dict[int, int] = {}     # next chunk index to request
        self.received: dict[int, int] = {}
        self.last: dict[int, bool] = {}
        self.lines: dict[int, bool] = {}   # fetched as [keys, TSV lines], not values
        self._now = now                    # a clock, for asking again (tests pass their own)
        self.waiting_since: dict[int, float] = {}  # last ask or chunk of a partition
        self.wait: dict[int, float] = {}   # how long to wait for it before asking again
        #: windows asked for again after a silence (a lost reply)
        self.asked_again = 0

    def open(self, part: int, lines: bool = False) -> None:
        """Start fetching a partition: its records, or with ``lines`` each key with its
        formatted output line."""
        self.lines[part] = lines
        self.buffers[part] = deque()
        self.next[part] = 0
        self.received[part] = 0
        self.last[part] = False
        self.waiting_since[part] = self._now()
        self.wait[part] = FETCH_RETRY_S

    def restart(self, part: int) -> None:
        """The partition moved: ask again from the first chunk not yet received."""
        if part in self.next:
            self.next[part] = self.received[part]

    def on_data(self, part: int, seq: int, last: bool,
                records: tuple[list[Any], list[Any]]) -> bool:
        """Accept the next chunk in order; False for anything else (duplicate, stale)."""
        if part not in self.buffers or seq != self.received[part]:
            return False
        self.received[part] += 1
        self.waiting_since[part] = self._now()
        self.wait[part] = FETCH_RETRY_S
        self.buffers[part].append(records)
        if last:
            self.last[part] = True
        return True

    def _maybe_request(self, part: int) -> None:
        total = self._chunks_of(part)
        if total is None:
            return
        in_flight = self.next[part] - self.received[part]
        if in_flight > 1 or self.next[part] >= total:
            return
        count = min(self.credit, total - self.next[part])
        self._request_cb(part, self.next[part], count, self.lines[part])
        self.next[part] += count
        if in_flight == 0:
            self.waiting_since[part] = self._now()

    def _ask_again_if_silent(self, part: int) -> None:
        """The window asked for brought nothing for too long: ask again from the first
        chunk not received (and wait twice as long before the next time)."""
        if self.next[part] <= self.received[part]:
            return
        now = self._now()
        wait = self.wait[part]
        if now - self.waiting_since[part] < wait:
            return
        self.asked_again += 1
        self.wait[part] = min(FETCH_RETRY_MAX_S, 2 * wait)
        self.next[part] = self.received[part]
        self._maybe_request(part)
        self.waiting_since[part] = now

    def stream(self, part: int) -> Iterator[tuple[Any, Any]]:
        """One partition's sorted run as (key, value) records, fetched lazily."""
        buf = self.buffers[part]
        while True:
            while not buf:
                if self.last[part]:
                    return
                self._maybe_request(part)
                self._ask_again_if_silent(part)
                self._pump()
            keys, values = buf.popleft()
            self._maybe_request(part)
            yield from zip(keys, values, strict=True)
