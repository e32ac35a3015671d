"""The cyclic garbage collector while a process holds a job's data.

A job's data is millions of small containers (a list of values per key, tuples, the lists of
an unpacked chunk) that live until their phase ends and hold no reference cycles. CPython's
collector would scan them over and over: a young collection every 700 new containers, a
full one each time the old generation grows by a quarter. Measured on an inverted index,
that is a quarter of the executors' CPU and half of the master's unpacking.

So while a job's data is held the automatic collector is off, and at calm points
(``settle``: between splits, between merged chunks) the containers made since the last one
are collected once, which still frees any cycle a job's own code made, and, in the
processes pymr owns, the survivors are frozen (``gc.freeze``: never scanned again, still
freed by reference counting as usual). ``release`` puts the collector back as it was and
collects once. Sans-I/O; the executor and the master call it.
"""

from __future__ import annotations

import gc

#: New containers since the last settle before a settle collects (a young collection of
#: this many costs well under a millisecond).
SETTLE_AFTER = 20_000


class JobHeap:
    """Holds the collector off while jobs run; ``freeze`` only in pymr's own processes
    (a program calling ``pymr.run`` may use ``gc.freeze`` itself)."""

    def __init__(self, *, freeze: bool) -> None:
        self.freeze = freeze
        self.holding = False
        self._was_enabled = True

    def hold(self) -> None:
        if not self.holding:
            self.holding = True
            self._was_enabled = gc.isenabled()
            gc.disable()

    def settle(self) -> None:
        """Collect what the last phase made (cycles included), if it made much."""
        if self.holding and gc.get_count()[0] >= SETTLE_AFTER:
            gc.collect(1)
            if self.freeze:
                gc.freeze()

    def release(self) -> None:
        if self.holding:
            self.holding = False
            if self.freeze:
                gc.unfreeze()
            if self._was_enabled:
                gc.enable()
            gc.collect()
