"""Reducer-side bookkeeping that makes every (task, partition) count exactly once.

Sans-I/O: the node or reducing executor feeds it shuffle chunks and the master's
commits and drops; it answers which map outputs are ready to merge and which chunks
to fetch again. It never touches a socket, a file or msgpack, so it can be tested
against random interleavings with no cluster.

Model.  Executors flush several map tasks as one *map output* (``output_id``, unique
per flush; a retry or backup is a different id) that names its task set.  For each
partition the output sends chunks ``seq 0..n-1`` to the partition's reducer.  The
master commits an output per partition with a :class:`Manifest`.  States of one
(output, partition) pair::

    staged    --commit-->      committed  --all chunks, checksum ok-->  complete
    complete  --take_ready-->  merged      (handed out exactly once, then freed)
    any state but merged  --rebind / drop_output / superseded-->  dropped

Binding rules for one partition (each task counts once):

* a task is *bound* to at most one committed, not yet merged output, and once
  merged it stays merged;
* a commit of another output with exactly the task set of the bound output rebinds
  the pair (the first output is abandoned there, e.g. its mapper died);
* a commit whose tasks are all merged already is dropped (its data freed);
* any other overlap is refused (``commit`` returns False, the ledger is unchanged);
  the master never sends one on purpose.

Not thread-safe: one owner drives it.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_CRC_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the mapper reported for one partition of one output.

    ``checksum`` is ``zlib.crc32`` chained over the payloads in seq order, so a
    reducer can tell a corrupt or mixed-up chunk from a good one without knowing
    the record format.  ``records`` is carried for the caller; the ledger only
    sees bytes and cannot check it.
    """

    chunks: int
    records: int
    checksum: int


@dataclass(frozen=True, slots=True)
class Ready:
    """A committed, complete pair handed to the merger exactly once."""

    output_id: str
    partition: int
    tasks: frozenset[int]
    payloads: tuple[bytes, ...]  # in seq order


def chained_crc32(payloads: Iterable[bytes]) -> int:
    """The manifest checksum of ``payloads`` (in seq order); mappers use the same."""
    crc = 0
    for payload in payloads:
        crc = zlib.crc32(payload, crc)
    return crc


class _Pair:
    """One (output, partition) that is staged, committed or complete."""

    __slots__ = ("output_id", "partition", "chunks", "nbytes", "tasks", "manifest",
                 "complete", "mismatches")

    def __init__(self, output_id: str, partition: int) -> None:
        self.output_id = output_id
        self.partition = partition
        self.chunks: dict[int, bytes] = {}
        self.nbytes = 0
        self.tasks: frozenset[int] | None = None  # set by the commit
        self.manifest: Manifest | None = None  # set by the commit
        self.complete = False
        self.mismatches = 0  # checksum failures, for the logs


class _Partition:
    """Per-partition state; merged, merged_outputs and dropped grow for the job's life."""

    __slots__ = ("merged", "bound", "merged_outputs", "dropped", "live")

    def __init__(self) -> None:
        self.merged: set[int] = set()
        self.bound: dict[int, str] = {}  # task -> committed, not yet merged output
        self.merged_outputs: set[str] = set()
        # Outputs abandoned here by a rebind or superseded by merged tasks: their late
        # chunks and re-sent commits must not come back to life.
        self.dropped: set[str] = set()
        self.live: set[str] = set()  # outputs with a _Pair here


def _manifest_problem(manifest: Manifest) -> str | None:
    """Why a manifest can never be satisfied, or None if it is well formed."""
    if manifest.chunks < 0 or manifest.records < 0:
        return "negative count"
    if not 0 <= manifest.checksum <= _CRC_MAX:
        return "checksum out of crc32 range"
    if manifest.chunks == 0 and (manifest.checksum != 0 or manifest.records != 0):
        return "no chunks but records or a checksum"
    return None


class ReducerLedger:
    """Exactly-once state of the map outputs sent to this reducer's partitions.

    Memory: chunks of an output that is never committed (a zombie, a losing backup,
    an output whose tasks were committed elsewhere) stay staged until
    :meth:`drop_output`.  The owner must call ``drop_output`` whenever the master
    says an output is abandoned, and for every output at job end (or discard the
    ledger).  Chunks of an uncommitted output whose task set is known (it was
    committed for another partition) are freed as soon as its tasks merge here.
    Apart from chunks, the ledger keeps a few ids per output and task for the
    job's life, so that late duplicates stay harmless.
    """

    def __init__(self, partitions: Iterable[int]) -> None:
        self._parts: dict[int, _Partition] = {p: _Partition() for p in partitions}
        self._pairs: dict[tuple[str, int], _Pair] = {}
        self._output_tasks: dict[str, frozenset[int]] = {}  # from accepted commits
        self._dropped_outputs: set[str] = set()
        self._ready: dict[tuple[str, int], None] = {}  # insertion-ordered set
        self._bytes = 0

    # ------------------------------------------------------------------ events

    def stage(self, output_id: str, partition: int, seq: int, payload: bytes) -> None:
        """Hold one shuffle chunk until its pair is committed and complete.

        Ignored (never an error, since shuffle traffic is at-least-once and may be
        late): unknown partition, negative seq, seq past a known manifest, a seq
        already held, chunks of merged or dropped pairs.
        """
        part = self._parts.get(partition)
        if part is None:
            log.debug("chunk for unknown partition %d of output %s ignored", partition,
                      output_id)
            return
        if seq < 0:
            log.debug("chunk with negative seq %d of %s/%d ignored", seq, output_id,
                      partition)
            return
        if (output_id in part.merged_outputs or output_id in part.dropped
                or output_id in self._dropped_outputs):
            return
        key = (output_id, partition)
        pair = self._pairs.get(key)
        if pair is None:
            tasks = self._output_tasks.get(output_id)
            if tasks is not None and not tasks.isdisjoint(part.merged):
                return  # could never be committed here: merged tasks stay merged
            pair = _Pair(output_id, partition)
            self._pairs[key] = pair
            part.live.add(output_id)
        elif pair.complete:
            return
        if pair.manifest is not None and seq >= pair.manifest.chunks:
            log.debug("chunk seq %d past manifest (%d) of %s/%d ignored", seq,
                      pair.manifest.chunks, output_id, partition)
            return
        if seq in pair.chunks:
            return  # duplicate: the first copy wins, the checksum judges it
        pair.chunks[seq] = payload
        pair.nbytes += len(payload)
        self._bytes += len(payload)
        if pair.manifest is not None:
            self._check_complete(pair)

    def commit(self, output_id: str, tasks: Iterable[int], partition: int,
               manifest: Manifest) -> bool:
        """Apply the master's commit of ``output_id`` for ``partition``.

        Returns True when the output is (now or already) the one that counts for
        these tasks here, including a repeated commit of a pair already merged.
        Returns False when the commit is dropped (its tasks are merged already;
        its staged data is freed) or refused (unknown partition, malformed
        manifest, a task set differing from an earlier commit of the same output,
        a partial overlap, an output dropped before); a refusal is logged and
        leaves the ledger unchanged.

        Re-sent copies of a commit are harmless, but the first copies of commits for
        one partition must arrive in the master's order: a superseded output's
        commit seen for the first time after its successor's would rebind back.
        """
        part = self._parts.get(partition)
        if part is None:
            log.warning("commit of %s for unknown partition %d refused", output_id, partition)
            return False
        task_set = frozenset(tasks)
        if not task_set:
            log.warning("commit of %s/%d with no tasks refused", output_id, partition)
            return False
        problem = _manifest_problem(manifest)
        if problem is not None:
            log.warning("commit of %s/%d refused: bad manifest (%s): %r", output_id,
                        partition, problem, manifest)
            return False
        known = self._output_tasks.get(output_id)
        if known is not None and known != task_set:
            log.warning("commit of %s/%d refused: tasks %s differ from its earlier commit %s",
                        output_id, partition, sorted(task_set), sorted(known))
            return False
        if output_id in part.merged_outputs:
            return True  # a re-sent commit of a pair already merged
        if output_id in self._dropped_outputs or output_id in part.dropped:
            log.debug("commit of dropped output %s/%d ignored", output_id, partition)
            return False
        key = (output_id, partition)
        pair = self._pairs.get(key)
        if pair is not None and pair.manifest is not None:
            if pair.manifest == manifest:
                return True  # a re-sent commit
            log.warning("commit of %s/%d refused: manifest %r differs from committed %r",
                        output_id, partition, manifest, pair.manifest)
            return False

        if not task_set.isdisjoint(part.merged):
            if task_set <= part.merged:
                log.debug("commit of %s/%d dropped: its tasks are merged already",
                          output_id, partition)
                if pair is not None:
                    self._forget(pair, part)
                part.dropped.add(output_id)
                return False
            log.warning("commit of %s/%d refused: tasks %s partly merged already",
                        output_id, partition, sorted(task_set & part.merged))
            return False

        holders = {part.bound[t] for t in task_set if t in part.bound}
        if holders:
            holder = next(iter(holders))
            held = self._pairs[(holder, partition)]
            if len(holders) > 1 or held.tasks != task_set:
                log.warning("commit of %s/%d refused: tasks %s overlap committed outputs %s",
                            output_id, partition, sorted(task_set), sorted(holders))
                return False
            log.info("partition %d: tasks %s rebound from output %s to %s", partition,
                     sorted(task_set), holder, output_id)
            self._forget(held, part)
            part.dropped.add(holder)

        if pair is None:
            pair = _Pair(output_id, partition)
            self._pairs[key] = pair
            part.live.add(output_id)
        if known is None:
            self._output_tasks[output_id] = task_set  # one frozenset shared by all pairs
            self._purge_output_elsewhere(output_id, task_set)
        else:
            task_set = known
        pair.tasks = task_set
        pair.manifest = manifest
        for task in task_set:
            part.bound[task] = output_id
        for seq in [s for s in pair.chunks if s >= manifest.chunks]:
            self._release(pair, seq)
        self._check_complete(pair)
        return True

    def drop_output(self, output_id: str) -> None:
        """Abandon ``output_id`` wherever it is not merged yet (zombie, failed, lost).

        Frees its chunks, unbinds its tasks so another output can be committed for
        them, and ignores its late chunks and commits from now on.  Merged pairs
        are kept: their tasks already count.
        """
        self._dropped_outputs.add(output_id)
        for partition, part in self._parts.items():
            pair = self._pairs.get((output_id, partition))
            if pair is not None:
                self._forget(pair, part)

    def take_ready(self) -> list[Ready]:
        """Hand out every committed pair whose chunks are all present and verified.

        Each pair is returned once, marked merged and forgotten; the caller now owns
        the payloads.  Uncommitted chunks that can no longer count here (their
        output's tasks just merged) are freed too.
        """
        if not self._ready:
            return []
        out: list[Ready] = []
        touched: set[int] = set()
        for key in self._ready:
            pair = self._pairs.pop(key)
            output_id, partition = key
            part = self._parts[partition]
            part.live.discard(output_id)
            assert pair.tasks is not None and pair.manifest is not None
            for task in pair.tasks:
                del part.bound[task]
            part.merged |= pair.tasks
            part.merged_outputs.add(output_id)
            self._bytes -= pair.nbytes
            payloads = tuple(pair.chunks[seq] for seq in range(pair.manifest.chunks))
            out.append(Ready(output_id, partition, pair.tasks, payloads))
            touched.add(partition)
        self._ready.clear()
        for partition in touched:
            self._purge_hopeless(partition)
        return out

    # ----------------------------------------------------------------- queries

    def missing(self) -> list[tuple[str, int, list[int]]]:
        """Committed pairs with absent chunks, as (output, partition, seqs).

        A pair whose chunks failed the checksum has had them discarded, so all its
        seqs show here.  Chunks may merely be in flight: the caller decides how long
        to wait before fetching them again.
        """
        result: list[tuple[str, int, list[int]]] = []
        for (output_id, partition), pair in self._pairs.items():
            if pair.manifest is None or pair.complete:
                continue
            absent = [s for s in range(pair.manifest.chunks) if s not in pair.chunks]
            result.append((output_id, partition, absent))
        return result

    def merged_tasks(self, partition: int) -> frozenset[int]:
        """Tasks merged into ``partition``; KeyError if it is not this ledger's."""
        return frozenset(self._parts[partition].merged)

    def staged_bytes(self) -> int:
        """Payload bytes held (staged, committed or complete, not yet taken)."""
        return self._bytes

    # ---------------------------------------------------------------- internals

    def _check_complete(self, pair: _Pair) -> None:
        """Move a committed pair to ready once all chunks are in and verified."""
        manifest = pair.manifest
        assert manifest is not None
        if pair.complete or len(pair.chunks) < manifest.chunks:
            return
        # Chunks past the manifest are never held after a commit, so this is 0..n-1.
        crc = chained_crc32(pair.chunks[seq] for seq in range(manifest.chunks))
        if crc != manifest.checksum:
            pair.mismatches += 1
            log.warning("output %s partition %d: checksum %08x != manifest %08x "
                        "(failure %d); chunks discarded for re-fetch", pair.output_id,
                        pair.partition, crc, manifest.checksum, pair.mismatches)
            self._bytes -= pair.nbytes
            pair.chunks = {}
            pair.nbytes = 0
            return
        pair.complete = True
        self._ready[(pair.output_id, pair.partition)] = None

    def _release(self, pair: _Pair, seq: int) -> None:
        """Free one held chunk."""
        payload = pair.chunks.pop(seq)
        pair.nbytes -= len(payload)
        self._bytes -= len(payload)

    def _forget(self, pair: _Pair, part: _Partition) -> None:
        """Drop a live pair: free its chunks, unbind its tasks, unqueue it."""
        key = (pair.output_id, pair.partition)
        del self._pairs[key]
        part.live.discard(pair.output_id)
        self._ready.pop(key, None)
        self._bytes -= pair.nbytes
        pair.chunks = {}
        pair.nbytes = 0
        if pair.manifest is not None and pair.tasks is not None:
            for task in pair.tasks:
                if part.bound.get(task) == pair.output_id:
                    del part.bound[task]

    def _purge_output_elsewhere(self, output_id: str, tasks: frozenset[int]) -> None:
        """Free staged pairs of a newly committed output where its tasks merged already."""
        for partition, part in self._parts.items():
            pair = self._pairs.get((output_id, partition))
            if pair is not None and pair.manifest is None and not tasks.isdisjoint(part.merged):
                log.debug("staged chunks of %s/%d freed: its tasks merged already", output_id,
                          partition)
                self._forget(pair, part)

    def _purge_hopeless(self, partition: int) -> None:
        """Free uncommitted pairs here whose known task set overlaps merged tasks."""
        part = self._parts[partition]
        for output_id in list(part.live):
            pair = self._pairs[(output_id, partition)]
            tasks = self._output_tasks.get(output_id)
            if pair.manifest is None and tasks is not None and not tasks.isdisjoint(part.merged):
                log.debug("staged chunks of %s/%d freed: its tasks just merged", output_id,
                          partition)
                self._forget(pair, part)
