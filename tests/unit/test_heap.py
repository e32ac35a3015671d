"""The collector policy while a job's data is held: off, settled at calm points (cycles
still freed), restored at the end."""

from __future__ import annotations

import gc
import weakref

from pymr.engine import heap


class Node:
    def __init__(self) -> None:
        self.me = self


def test_hold_settle_release_free_cycles_and_restore_the_collector() -> None:
    was = gc.isenabled()
    h = heap.JobHeap(freeze=True)
    try:
        h.hold()
        assert not gc.isenabled()
        # a job's data: many containers (twice the threshold: other threads left by earlier
        # tests may free containers meanwhile, which lowers the collector's count)
        kept = [[i] for i in range(2 * heap.SETTLE_AFTER)]
        cycle = Node()
        gone = weakref.ref(cycle)
        del cycle
        assert gone() is not None, "the automatic collector is off while data is held"
        h.settle()
        assert gone() is None, "a settle frees the cycles the job's code made"
        assert gc.get_freeze_count() >= len(kept), "the survivors are frozen"
    finally:
        h.release()
    assert gc.isenabled() == was and gc.get_freeze_count() == 0


def test_release_keeps_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        h = heap.JobHeap(freeze=False)
        h.hold()
        h.settle()
        h.release()
        assert not gc.isenabled()
    finally:
        gc.enable()
