"""The master's committed map outputs and the ``Commit`` batches for the reducer nodes;
no sockets.

An output the scheduler commits is queued here and sent, once per master turn, as one
acked ``Commit`` per reducer node holding each output's manifest slice for that node's
partitions. Outputs stay retained until the job ends: a moved partition is refilled from
them, and an output whose mapper is lost is dropped (its tasks run again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter

from ..wire import protocol as p
from .partitions import PartitionBook, Send

#: Most outputs in one Commit message (keeps a header far below MAX_HEADER_BYTES).
COMMIT_BATCH = 512

#: (output id, its tasks, a manifest: partition -> chunk counts)
_Entry = tuple[str, list[int], dict[int, list[int]]]


@dataclass
class CommittedOutput:
    node_id: str
    tasks: list[int]
    manifest: dict[int, list[int]]
    counters: dict[str, int] = field(default_factory=dict)


class Commits:
    """Committed outputs (``outputs``) and the commits not yet sent to their reducers."""

    def __init__(self, job_id: str, next_seq: Callable[[], int], book: PartitionBook
                 ) -> None:
        self.job_id = job_id
        self._next_seq = next_seq
        self.book = book
        self.outputs: dict[str, CommittedOutput] = {}
        self._buf: dict[str, list[_Entry]] = {}
        #: outputs committed this turn with a manifest of every partition (split at flush)
        self._turn: list[_Entry] = []

    def add(self, output_id: str, node_id: str, tasks: list[int],
            manifest: dict[int, list[int]], counters: dict[str, int]) -> None:
        """A committed output: kept, and queued for its reducers. An output with a
        manifest of every partition (what executors send) is split at ``flush`` in C; any
        other manifest is split here."""
        self.outputs[output_id] = CommittedOutput(node_id, tasks, manifest, dict(counters))
        pmap = self.book.partition_map
        if manifest.keys() == pmap.keys():
            self._turn.append((output_id, tasks, manifest))
        else:
            owners = {pmap[part] for part in manifest if part in pmap}
            for owner in owners:
                self.commit_to(owner, output_id, tasks, manifest)

    def commit_to(self, node_id: str, output_id: str, tasks: list[int],
                  manifest: dict[int, list[int]]) -> None:
        """Queue a commit for a reducer node (its partitions' part of ``manifest``)."""
        pmap = self.book.partition_map
        mine = {part: man for part, man in manifest.items() if pmap.get(part) == node_id}
        if mine:
            self._buf.setdefault(node_id, []).append((output_id, tasks, mine))

    def flush(self, alive: Callable[[str], bool]) -> list[Send]:
        """One acked Commit per live reducer node for everything queued since the last
        flush (more when over ``COMMIT_BATCH``); a dead node's are dropped (its partitions
        move, and ``refill`` re-commits to the new owners).

        This is the master's work per (output, reducer node), M x N per job. For the
        outputs with complete manifests, a node's slices are cut by one C pipeline: its
        partitions' entries gathered (itemgetter), zipped with the partition numbers and
        made dicts, with no Python step per output."""
        buf, self._buf = self._buf, {}
        turn, self._turn = self._turn, []
        # node -> (output ids, task lists, manifest slices): columns, as Commit has them
        cols: dict[str, tuple[list[str], list[list[int]], list[dict[int, list[int]]]]] = {}
        if turn:
            ids = [e[0] for e in turn]
            tasks = [e[1] for e in turn]
            manifests = [e[2] for e in turn]
            for node_id, parts in self.book.by_node().items():
                if len(parts) == 1:
                    part = parts[0]
                    slices: list[dict[int, list[int]]] = [{part: m[part]} for m in manifests]
                else:
                    slices = list(map(dict, map(zip, repeat(parts),
                                                map(itemgetter(*parts), manifests))))
                cols[node_id] = (ids, tasks, slices)
        for node_id, entries in buf.items():
            col = cols.get(node_id)
            col = cols[node_id] = ([], [], []) if col is None else (
                list(col[0]), list(col[1]), col[2])
            for output_id, task_list, mine in entries:
                col[0].append(output_id)
                col[1].append(task_list)
                col[2].append(mine)
        sends: list[Send] = []
        for node_id, (ids, tasks, slices) in cols.items():
            if not alive(node_id):
                continue
            for i in range(0, len(ids), COMMIT_BATCH):
                sends.append(Send(node_id, p.Commit(
                    seq=self._next_seq(), job_id=self.job_id,
                    output_ids=ids[i:i + COMMIT_BATCH], tasks=tasks[i:i + COMMIT_BATCH],
                    manifests=slices[i:i + COMMIT_BATCH], epoch=self.book.epoch)))
        return sends

    def of_node(self, node_id: str) -> list[str]:
        """The outputs a node mapped (lost with it)."""
        return [o for o, x in self.outputs.items() if x.node_id == node_id]

    def lose(self, output_id: str) -> CommittedOutput | None:
        """An output whose data is gone is no longer committed."""
        return self.outputs.pop(output_id, None)

    def refill(self, parts: list[int], shuffle_of: Callable[[str], str]) -> list[Send]:
        """Every live node runs a new epoch: the committed outputs are committed again to
        the moved partitions' new owners, and their mappers asked to send those chunks
        (``shuffle_of``: a node's shuffle endpoint)."""
        sends: list[Send] = []
        for output_id, out in list(self.outputs.items()):
            for part in parts:
                owner = self.book.partition_map[part]
                endpoint = shuffle_of(owner)
                if part not in out.manifest:
                    continue
                self.commit_to(owner, output_id, out.tasks, {part: out.manifest[part]})
                sends.append(Send(out.node_id, p.ResendChunks(
                    seq=self._next_seq(), job_id=self.job_id, output_id=output_id,
                    partition=part, endpoint=endpoint, epoch=self.book.epoch)))
        return sends
