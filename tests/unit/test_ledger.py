"""ReducerLedger: each state transition, then random interleavings against a model.

The model is independent of the ledger: the exact per-task record counts of every
partition.  Payloads encode ``task count`` lines, so summing decoded Ready payloads
shows any task counted twice or lost.
"""

from __future__ import annotations

import os
import random
from collections import Counter, deque
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pymr.engine.ledger import Manifest, Ready, ReducerLedger, chained_crc32

FUZZ_EXAMPLES = int(os.environ.get("PYMR_FUZZ_EXAMPLES", "100"))


def manifest_of(payloads: list[bytes], records: int | None = None) -> Manifest:
    return Manifest(len(payloads), len(payloads) if records is None else records,
                    chained_crc32(payloads))


def decode(payload: bytes) -> Counter[int]:
    """Per-task record counts in one test payload (``b"task count\\n"`` lines)."""
    counts: Counter[int] = Counter()
    for line in payload.decode().splitlines():
        task, count = line.split()
        counts[int(task)] += int(count)
    return counts


def stage_all(ledger: ReducerLedger, output_id: str, partition: int,
              payloads: list[bytes]) -> None:
    for seq, payload in enumerate(payloads):
        ledger.stage(output_id, partition, seq, payload)


PAY = [b"alpha", b"beta", b"gamma"]
MAN = manifest_of(PAY)
NBYTES = sum(map(len, PAY))


# --------------------------------------------------------------------- data types


def test_types_are_frozen_and_slotted() -> None:
    ready = Ready("o", 0, frozenset({1}), (b"x",))
    with pytest.raises(FrozenInstanceError):
        MAN.chunks = 9  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        ready.partition = 2  # type: ignore[misc]
    assert not hasattr(MAN, "__dict__") and not hasattr(ready, "__dict__")


def test_chained_crc32_matches_zlib_chaining() -> None:
    import zlib
    crc = 0
    for payload in PAY:
        crc = zlib.crc32(payload, crc)
    assert chained_crc32(PAY) == crc == zlib.crc32(b"".join(PAY))
    assert chained_crc32([]) == 0


# ------------------------------------------------------------ staged -> committed


def test_staged_then_committed_becomes_ready_in_seq_order() -> None:
    ledger = ReducerLedger([0, 1])
    for seq in (2, 0, 1):
        ledger.stage("o1", 0, seq, PAY[seq])
    assert ledger.staged_bytes() == NBYTES
    assert ledger.take_ready() == []
    assert ledger.missing() == []  # staged only: nothing to fetch yet
    assert ledger.commit("o1", [3, 4], 0, MAN)
    [ready] = ledger.take_ready()
    assert ready == Ready("o1", 0, frozenset({3, 4}), tuple(PAY))
    assert ledger.staged_bytes() == 0
    assert ledger.merged_tasks(0) == {3, 4}
    assert ledger.merged_tasks(1) == frozenset()


def test_committed_then_chunks_out_of_order() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("o1", {7}, 0, MAN)
    assert ledger.missing() == [("o1", 0, [0, 1, 2])]
    ledger.stage("o1", 0, 1, PAY[1])
    assert ledger.missing() == [("o1", 0, [0, 2])]
    ledger.stage("o1", 0, 2, PAY[2])
    assert ledger.take_ready() == []
    ledger.stage("o1", 0, 0, PAY[0])
    assert ledger.missing() == []
    [ready] = ledger.take_ready()
    assert ready.payloads == tuple(PAY)


def test_duplicates_are_held_once_and_returned_once() -> None:
    ledger = ReducerLedger([0])
    stage_all(ledger, "o1", 0, PAY)
    stage_all(ledger, "o1", 0, PAY)
    assert ledger.staged_bytes() == NBYTES
    assert ledger.commit("o1", {1}, 0, MAN)
    assert ledger.commit("o1", {1}, 0, MAN)  # re-sent commit
    assert len(ledger.take_ready()) == 1
    assert ledger.take_ready() == []
    # late duplicates after the merge: ignored, nothing held, nothing returned
    stage_all(ledger, "o1", 0, PAY)
    assert ledger.commit("o1", {1}, 0, MAN)
    assert ledger.staged_bytes() == 0
    assert ledger.take_ready() == []
    assert ledger.missing() == []


def test_complete_pair_ignores_further_chunks() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("o1", {1}, 0, MAN)
    stage_all(ledger, "o1", 0, PAY)
    ledger.stage("o1", 0, 0, b"other")
    assert ledger.staged_bytes() == NBYTES
    assert ledger.take_ready()[0].payloads == tuple(PAY)


def test_zero_chunk_manifest_is_ready_at_commit() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("o1", {1, 2}, 0, Manifest(0, 0, 0))
    assert ledger.take_ready() == [Ready("o1", 0, frozenset({1, 2}), ())]
    assert ledger.merged_tasks(0) == {1, 2}


def test_unknown_partition_and_bad_seq_ignored() -> None:
    ledger = ReducerLedger([0])
    ledger.stage("o1", 5, 0, b"x")
    ledger.stage("o1", 0, -1, b"x")
    assert ledger.staged_bytes() == 0
    assert not ledger.commit("o1", {1}, 5, MAN)
    with pytest.raises(KeyError):
        ledger.merged_tasks(5)


def test_seq_past_manifest_ignored_and_freed_at_commit() -> None:
    ledger = ReducerLedger([0])
    ledger.stage("o1", 0, 7, b"stray")
    stage_all(ledger, "o1", 0, PAY[:1])
    assert ledger.staged_bytes() == len(b"stray") + len(PAY[0])
    assert ledger.commit("o1", {1}, 0, MAN)
    assert ledger.staged_bytes() == len(PAY[0])  # seq 7 freed
    ledger.stage("o1", 0, 3, b"past")
    assert ledger.staged_bytes() == len(PAY[0])
    stage_all(ledger, "o1", 0, PAY)
    assert ledger.take_ready()[0].payloads == tuple(PAY)


@pytest.mark.parametrize("manifest", [
    Manifest(-1, 0, 0), Manifest(1, -1, 0), Manifest(1, 1, -5), Manifest(1, 1, 2**32),
    Manifest(0, 0, 17), Manifest(0, 3, 0)])
def test_malformed_manifest_refused(manifest: Manifest) -> None:
    ledger = ReducerLedger([0])
    assert not ledger.commit("o1", {1}, 0, manifest)
    assert ledger.missing() == [] and ledger.take_ready() == []


def test_empty_task_set_refused() -> None:
    ledger = ReducerLedger([0])
    assert not ledger.commit("o1", [], 0, MAN)


# ------------------------------------------------------------------- checksum


def test_checksum_mismatch_discards_chunks_for_refetch() -> None:
    ledger = ReducerLedger([0])
    ledger.stage("o1", 0, 1, b"BETA")  # corrupt copy arrives first and wins
    assert ledger.commit("o1", {1}, 0, MAN)
    stage_all(ledger, "o1", 0, PAY)
    assert ledger.take_ready() == []
    assert ledger.staged_bytes() == 0
    assert ledger.missing() == [("o1", 0, [0, 1, 2])]
    stage_all(ledger, "o1", 0, PAY)  # the re-fetch
    assert ledger.take_ready()[0].payloads == tuple(PAY)


def test_swapped_chunks_fail_the_checksum() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("o1", {1}, 0, MAN)
    ledger.stage("o1", 0, 0, PAY[1])
    ledger.stage("o1", 0, 1, PAY[0])
    ledger.stage("o1", 0, 2, PAY[2])
    assert ledger.take_ready() == []
    assert ledger.missing() == [("o1", 0, [0, 1, 2])]


# ---------------------------------------------------------------------- rebind


def test_rebind_abandons_first_output() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("a", {1, 2}, 0, MAN)
    ledger.stage("a", 0, 0, PAY[0])
    other = [b"x", b"y"]
    assert ledger.commit("b", {2, 1}, 0, manifest_of(other))
    assert ledger.staged_bytes() == 0  # a's chunk freed
    assert ledger.missing() == [("b", 0, [0, 1])]
    stage_all(ledger, "a", 0, PAY)  # late chunks of the abandoned output
    assert ledger.staged_bytes() == 0
    assert not ledger.commit("a", {1, 2}, 0, MAN)  # a stale re-sent commit cannot rebind back
    stage_all(ledger, "b", 0, other)
    assert ledger.take_ready() == [Ready("b", 0, frozenset({1, 2}), tuple(other))]


def test_rebind_unqueues_complete_untaken_pair() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("a", {1}, 0, MAN)
    stage_all(ledger, "a", 0, PAY)
    assert ledger.commit("b", {1}, 0, Manifest(0, 0, 0))
    assert ledger.take_ready() == [Ready("b", 0, frozenset({1}), ())]


def test_commit_after_merge_of_same_tasks_is_dropped() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("a", {1, 2}, 0, MAN)
    stage_all(ledger, "a", 0, PAY)
    assert len(ledger.take_ready()) == 1
    stage_all(ledger, "b", 0, PAY)  # b's data came first
    assert ledger.staged_bytes() == NBYTES
    assert not ledger.commit("b", {1, 2}, 0, MAN)
    assert ledger.staged_bytes() == 0
    stage_all(ledger, "b", 0, PAY)
    assert ledger.staged_bytes() == 0
    assert ledger.take_ready() == [] and ledger.missing() == []
    assert ledger.merged_tasks(0) == {1, 2}


def test_partial_overlap_with_merged_is_refused_without_change() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("a", {1, 2}, 0, Manifest(0, 0, 0))
    ledger.take_ready()
    stage_all(ledger, "b", 0, PAY)
    assert not ledger.commit("b", {2, 3}, 0, MAN)
    assert ledger.staged_bytes() == NBYTES  # unchanged: freed by drop_output
    assert ledger.merged_tasks(0) == {1, 2}
    assert ledger.missing() == []
    ledger.drop_output("b")
    assert ledger.staged_bytes() == 0


def test_partial_overlap_with_bound_is_refused_without_change() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("a", {1, 2}, 0, MAN)
    assert not ledger.commit("b", {2, 3}, 0, MAN)  # overlaps a
    assert not ledger.commit("c", {1}, 0, MAN)  # a subset of a's tasks is not a rebind
    assert ledger.commit("d", {3}, 0, MAN)
    assert not ledger.commit("e", {1, 2, 3}, 0, MAN)  # spans two outputs
    assert sorted(m[0] for m in ledger.missing()) == ["a", "d"]


def test_same_output_must_name_same_tasks_and_manifest() -> None:
    ledger = ReducerLedger([0, 1])
    assert ledger.commit("a", {1, 2}, 0, MAN)
    assert not ledger.commit("a", {1}, 1, MAN)  # different task set elsewhere
    assert not ledger.commit("a", {1, 2}, 0, Manifest(1, 1, 0))  # conflicting manifest
    assert ledger.commit("a", {1, 2}, 1, Manifest(0, 0, 0))
    assert [(r.output_id, r.partition) for r in ledger.take_ready()] == [("a", 1)]


# ------------------------------------------------------------------------ drop


def test_drop_output_frees_zombie_and_ignores_it_later() -> None:
    ledger = ReducerLedger([0, 1])
    stage_all(ledger, "z", 0, PAY)
    stage_all(ledger, "z", 1, PAY)
    assert ledger.staged_bytes() == 2 * NBYTES
    ledger.drop_output("z")
    assert ledger.staged_bytes() == 0
    stage_all(ledger, "z", 0, PAY)
    assert ledger.staged_bytes() == 0
    assert not ledger.commit("z", {1}, 0, MAN)
    assert ledger.take_ready() == [] and ledger.missing() == []


def test_drop_output_unbinds_committed_tasks() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("a", {1}, 0, MAN)
    stage_all(ledger, "a", 0, PAY[:2])
    ledger.drop_output("a")
    assert ledger.missing() == [] and ledger.staged_bytes() == 0
    assert ledger.commit("b", {1}, 0, MAN)
    stage_all(ledger, "b", 0, PAY)
    assert [r.output_id for r in ledger.take_ready()] == ["b"]


def test_drop_output_unqueues_complete_untaken_pair() -> None:
    ledger = ReducerLedger([0])
    assert ledger.commit("a", {1}, 0, MAN)
    stage_all(ledger, "a", 0, PAY)
    ledger.drop_output("a")
    assert ledger.take_ready() == [] and ledger.staged_bytes() == 0


def test_drop_output_keeps_merged_pairs() -> None:
    ledger = ReducerLedger([0, 1])
    assert ledger.commit("a", {1}, 0, MAN)
    stage_all(ledger, "a", 0, PAY)
    assert len(ledger.take_ready()) == 1
    assert ledger.commit("a", {1}, 1, MAN)
    ledger.stage("a", 1, 0, PAY[0])
    ledger.drop_output("a")
    assert ledger.merged_tasks(0) == {1}
    assert ledger.merged_tasks(1) == frozenset()
    assert ledger.staged_bytes() == 0 and ledger.missing() == []
    assert ledger.commit("a", {1}, 0, MAN)  # re-sent commit of the merged pair
    assert not ledger.commit("a", {1}, 1, MAN)
    assert ledger.commit("b", {1}, 1, Manifest(0, 0, 0))
    assert [(r.output_id, r.partition) for r in ledger.take_ready()] == [("b", 1)]


def test_staged_data_of_output_whose_tasks_merged_is_freed() -> None:
    ledger = ReducerLedger([0, 1])
    stage_all(ledger, "x", 0, PAY)  # x: a losing backup of task 1
    assert ledger.commit("y", {1}, 0, Manifest(0, 0, 0))
    ledger.take_ready()
    assert ledger.staged_bytes() == NBYTES  # x's task set is not known yet
    assert ledger.commit("x", {1}, 1, Manifest(0, 0, 0))  # now it is
    assert ledger.staged_bytes() == 0
    stage_all(ledger, "x", 0, PAY)
    assert ledger.staged_bytes() == 0
    # and the other way round: known task set, then the merge
    ledger2 = ReducerLedger([0, 1])
    assert ledger2.commit("x", {1}, 1, MAN)
    stage_all(ledger2, "x", 0, PAY)
    assert ledger2.commit("y", {1}, 0, Manifest(0, 0, 0))
    ledger2.take_ready()
    assert ledger2.staged_bytes() == 0


def test_partitions_are_independent() -> None:
    ledger = ReducerLedger([0, 1, 2])
    for p in (0, 1, 2):
        assert ledger.commit("a", {1, 2}, p, MAN)
    stage_all(ledger, "a", 1, PAY)
    assert [r.partition for r in ledger.take_ready()] == [1]
    assert {m[1] for m in ledger.missing()} == {0, 2}
    assert ledger.merged_tasks(1) == {1, 2} and ledger.merged_tasks(0) == frozenset()


# --------------------------------------------------------------- property tests


@settings(max_examples=FUZZ_EXAMPLES * 2, deadline=None)
@given(payloads=st.lists(st.binary(max_size=8), max_size=8), data=st.data())
def test_single_pair_any_delivery_order(payloads: list[bytes], data: st.DataObject) -> None:
    ledger = ReducerLedger([0])
    deliveries = data.draw(st.lists(st.integers(0, max(len(payloads) - 1, 0)),
                                    max_size=3 * len(payloads))) if payloads else []
    commit_at = data.draw(st.integers(0, len(deliveries)))
    for step, seq in enumerate(deliveries):
        if step == commit_at:
            assert ledger.commit("o", {0}, 0, manifest_of(payloads))
        ledger.stage("o", 0, seq, payloads[seq])
    if commit_at == len(deliveries):
        assert ledger.commit("o", {0}, 0, manifest_of(payloads))
    for output_id, partition, seqs in ledger.missing():
        for seq in seqs:
            ledger.stage(output_id, partition, seq, payloads[seq])
    assert ledger.take_ready() == [Ready("o", 0, frozenset({0}), tuple(payloads))]
    assert ledger.staged_bytes() == 0 and ledger.missing() == []


class _Output:
    """One simulated map output: its task set and per-partition chunks."""

    def __init__(self, output_id: str, tasks: frozenset[int],
                 chunks: dict[int, list[bytes]]) -> None:
        self.output_id = output_id
        self.tasks = tasks
        self.chunks = chunks
        self.manifests = {p: manifest_of(c, sum(sum(decode(x).values()) for x in c))
                          for p, c in chunks.items()}


class LedgerMachine(RuleBasedStateMachine):
    """A master, lossy shuffle links and a reducer's ledger, checked against counts.

    Control messages reach the ledger in the master's order, possibly duplicated
    later; chunks arrive in any order, duplicated, corrupted, or not at all until
    re-fetched.  Outputs: committed ones, rebinds of a "lost" committed output with
    the same task set, and zombies that are never committed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ledger = ReducerLedger([])
        self.parts: list[int] = []
        self.num_tasks = 0
        self.expected: dict[int, dict[int, int]] = {}
        self.outputs: list[_Output] = []
        self.master_bound: dict[int, int] = {}  # task -> output index the master committed
        self.lost: set[int] = set()  # committed, then rebound away by the master
        self.master_dropped: set[int] = set()
        self.control: deque[tuple] = deque()
        self.delivered: list[tuple] = []
        self.got_tasks: dict[int, Counter[int]] = {}
        self.got_counts: dict[int, Counter[int]] = {}
        self.got_pairs: set[tuple[str, int]] = set()
        self.rng = random.Random(0)

    @initialize(num_tasks=st.integers(1, 6), parts=st.sets(st.integers(0, 9), min_size=1,
                                                           max_size=3), data=st.data())
    def setup(self, num_tasks: int, parts: set[int], data: st.DataObject) -> None:
        self.num_tasks = num_tasks
        self.parts = sorted(parts)
        self.ledger = ReducerLedger(self.parts)
        counts = st.integers(0, 3)
        self.expected = {p: {t: data.draw(counts) for t in range(num_tasks)} for p in self.parts}
        self.got_tasks = {p: Counter() for p in self.parts}
        self.got_counts = {p: Counter() for p in self.parts}
        self.rng = random.Random(data.draw(st.integers(0, 2**32)))

    # -------------------------------------------------------------- helpers

    def make_output(self, tasks: frozenset[int]) -> int:
        """A flush of ``tasks``: records of each partition, shuffled, cut into chunks."""
        chunks: dict[int, list[bytes]] = {}
        for p in self.parts:
            records = [t for t in sorted(tasks) for _ in range(self.expected[p][t])]
            self.rng.shuffle(records)
            n = self.rng.randint(1, len(records)) if records else 0
            cuts = sorted(self.rng.sample(range(1, len(records)), n - 1)) if n else []
            bounds = list(zip([0] + cuts, cuts + [len(records)], strict=True)) if n else []
            chunks[p] = [
                b"".join(b"%d %d\n" % (t, c) for t, c in sorted(Counter(records[a:b]).items()))
                for a, b in bounds]
        self.outputs.append(_Output(f"out-{len(self.outputs)}", tasks, chunks))
        return len(self.outputs) - 1

    def send_commits(self, index: int) -> None:
        out = self.outputs[index]
        for task in out.tasks:
            self.master_bound[task] = index
        parts = list(self.parts)
        self.rng.shuffle(parts)
        self.control.extend(("commit", index, p) for p in parts)

    def apply(self, message: tuple, first: bool) -> None:
        if message[0] == "drop":
            self.ledger.drop_output(self.outputs[message[1]].output_id)
            return
        _, index, p = message
        out = self.outputs[index]
        merged_before = self.ledger.merged_tasks(p)
        accepted = self.ledger.commit(out.output_id, out.tasks, p, out.manifests[p])
        if first:
            # The master never sends a partial overlap: a first commit is accepted
            # unless those very tasks merged already from an earlier output.
            assert accepted == (not out.tasks <= merged_before), (message, merged_before)

    def committable(self) -> list[int]:
        bound = set(self.master_bound)
        return [i for i, o in enumerate(self.outputs)
                if i not in self.master_dropped and i not in self.lost
                and i not in self.master_bound.values() and o.tasks.isdisjoint(bound)]

    def collect(self) -> None:
        for ready in self.ledger.take_ready():
            key = (ready.output_id, ready.partition)
            assert key not in self.got_pairs, f"returned twice: {key!r}"
            self.got_pairs.add(key)
            out = next(o for o in self.outputs if o.output_id == ready.output_id)
            assert ready.tasks == out.tasks
            assert ready.payloads == tuple(out.chunks[ready.partition])
            counts: Counter[int] = Counter()
            for payload in ready.payloads:
                counts.update(decode(payload))
            assert set(counts) <= ready.tasks
            self.got_tasks[ready.partition].update(ready.tasks)
            self.got_counts[ready.partition].update(counts)

    # ---------------------------------------------------------------- rules

    @precondition(lambda self: len(self.outputs) < 10)
    @rule(data=st.data())
    def flush_output(self, data: st.DataObject) -> None:
        tasks = data.draw(st.frozensets(st.integers(0, self.num_tasks - 1), min_size=1))
        self.make_output(tasks)

    @rule(data=st.data())
    def master_commits(self, data: st.DataObject) -> None:
        candidates = self.committable()
        if candidates:
            self.send_commits(data.draw(st.sampled_from(candidates)))

    @precondition(lambda self: len(self.outputs) < 12)
    @rule(data=st.data(), drop=st.sampled_from(["before", "after", "never"]))
    def master_rebinds_lost_output(self, data: st.DataObject, drop: str) -> None:
        """The mapper of a committed output is gone: re-run its task set."""
        bound = sorted(set(self.master_bound.values()))
        if not bound:
            return
        old = data.draw(st.sampled_from(bound))
        self.lost.add(old)
        new = self.make_output(self.outputs[old].tasks)
        if drop == "before":
            self.control.append(("drop", old))
        self.send_commits(new)
        if drop == "after":  # "never": the rebind alone must abandon it
            self.control.append(("drop", old))

    @rule(data=st.data())
    def master_drops_zombie(self, data: st.DataObject) -> None:
        zombies = [i for i in range(len(self.outputs))
                   if i not in self.master_bound.values() and i not in self.lost
                   and i not in self.master_dropped]
        if zombies:
            index = data.draw(st.sampled_from(zombies))
            self.master_dropped.add(index)
            self.control.append(("drop", index))

    @rule(count=st.integers(1, 4))
    def deliver_control(self, count: int) -> None:
        for _ in range(min(count, len(self.control))):
            message = self.control.popleft()
            self.apply(message, first=True)
            self.delivered.append(message)

    @precondition(lambda self: bool(self.delivered))
    @rule(data=st.data(), stale=st.booleans())
    def resend_control(self, data: st.DataObject, stale: bool) -> None:
        """A control message again; ``stale`` prefers one about an abandoned output."""
        pool = self.delivered
        if stale:
            pool = [m for m in pool if m[1] in self.lost or m[1] in self.master_dropped] or pool
        self.apply(data.draw(st.sampled_from(pool)), first=False)

    @precondition(lambda self: bool(self.outputs))
    @rule(data=st.data(), fault=st.sampled_from(["none"] * 4 + ["corrupt", "stray"]))
    def deliver_chunk(self, data: st.DataObject, fault: str) -> None:
        out = data.draw(st.sampled_from(self.outputs))
        p = data.draw(st.sampled_from(self.parts))
        if fault == "stray":  # a seq past the output's chunk count
            self.ledger.stage(out.output_id, p, len(out.chunks[p]) + data.draw(
                st.integers(0, 2)), b"stray")
            return
        if not out.chunks[p]:
            return
        seq = data.draw(st.integers(0, len(out.chunks[p]) - 1))
        payload = out.chunks[p][seq]
        if fault == "corrupt":  # a flipped byte: crc32 always detects a burst this short
            payload = bytes([payload[0] ^ 0x20]) + payload[1:]
        self.ledger.stage(out.output_id, p, seq, payload)

    @precondition(lambda self: bool(self.outputs))
    @rule(data=st.data(), fault=st.sampled_from(["none", "none", "loss", "corrupt"]))
    def deliver_burst(self, data: st.DataObject, fault: str) -> None:
        """One output's chunks for one partition, in any order, some lost or corrupt."""
        out = data.draw(st.sampled_from(self.outputs))
        p = data.draw(st.sampled_from(self.parts))
        chunks = out.chunks[p]
        for seq in self.rng.sample(range(len(chunks)), len(chunks)):
            payload = chunks[seq]
            if fault == "loss" and self.rng.random() < 0.3:
                continue
            if fault == "corrupt" and self.rng.random() < 0.3:
                payload = bytes([payload[0] ^ 0x20]) + payload[1:]
            self.ledger.stage(out.output_id, p, seq, payload)

    @rule(data=st.data())
    def refetch_some(self, data: st.DataObject) -> None:
        for output_id, p, seqs in self.ledger.missing():
            index = int(output_id.split("-")[1])
            if index in self.lost or not data.draw(st.booleans()):
                continue  # a lost mapper cannot answer
            for seq in seqs:
                self.ledger.stage(output_id, p, seq, self.outputs[index].chunks[p][seq])

    @rule()
    def take_ready(self) -> None:
        self.collect()

    @invariant()
    def merged_matches_returned(self) -> None:
        assert self.ledger.staged_bytes() >= 0
        for p in self.parts:
            assert self.ledger.merged_tasks(p) == set(self.got_tasks[p])
            assert all(n == 1 for n in self.got_tasks[p].values())
            for t in self.got_tasks[p]:
                assert self.got_counts[p][t] == self.expected[p][t]

    # ------------------------------------------------------------- the end

    def teardown(self) -> None:
        if not self.parts:
            return
        # The master commits whatever is left, then drops every output that is not
        # the final one for its tasks (job end), in order.
        left = frozenset(range(self.num_tasks)) - set(self.master_bound)
        if left:
            self.send_commits(self.make_output(left))
        final = set(self.master_bound.values())
        while self.control:
            self.apply(self.control.popleft(), first=True)
        # Every commit is in: only the master's final outputs may still be awaited.
        for output_id, _, _ in self.ledger.missing():
            assert int(output_id.split("-")[1]) in final, "waits for abandoned " + output_id
        for index in range(len(self.outputs)):
            if index not in final:
                self.ledger.drop_output(self.outputs[index].output_id)
        # Every final chunk arrives (some again), then re-fetches close the gaps.
        for index in final:
            out = self.outputs[index]
            for p in self.parts:
                for seq in self.rng.sample(range(len(out.chunks[p])), len(out.chunks[p])):
                    self.ledger.stage(out.output_id, p, seq, out.chunks[p][seq])
        for _ in range(3):
            for output_id, p, seqs in self.ledger.missing():
                index = int(output_id.split("-")[1])
                assert index in final, f"waiting for a non-final output {output_id}"
                for seq in seqs:
                    self.ledger.stage(output_id, p, seq, self.outputs[index].chunks[p][seq])
        assert self.ledger.missing() == []
        self.collect()
        assert self.ledger.take_ready() == []
        assert self.ledger.staged_bytes() == 0
        for p in self.parts:
            assert self.got_tasks[p] == Counter(range(self.num_tasks)), p
            assert self.got_counts[p] == Counter(
                {t: n for t, n in self.expected[p].items() if n}), p
            assert self.ledger.merged_tasks(p) == frozenset(range(self.num_tasks))
        for out in self.outputs:  # job end: dropping merged outputs changes nothing
            self.ledger.drop_output(out.output_id)
        assert self.ledger.staged_bytes() == 0
        assert self.ledger.take_ready() == [] and self.ledger.missing() == []
        for p in self.parts:
            assert self.ledger.merged_tasks(p) == frozenset(range(self.num_tasks))


LedgerMachine.TestCase.settings = settings(
    max_examples=FUZZ_EXAMPLES, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestLedgerMachine = LedgerMachine.TestCase
