"""``JobSummary``: what a job did, as ``Master.run`` returns it (and the CLI prints it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..wire import protocol as p


@dataclass
class JobSummary:
    """What a job did: its output records, its counters (``pymr.api.count``, summed over
    committed map outputs and over partitions), and how it ran."""

    job_id: str
    job_name: str = ""
    records: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    #: node name -> (bytes, runs) its reducers spilled under the memory budget
    spilled: dict[str, tuple[int, int]] = field(default_factory=dict)
    tasks: int = 0
    nodes: list[str] = field(default_factory=list)
    input_bytes: int = 0
    elapsed_s: float = 0.0
    retries: int = 0
    backups: int = 0
    cancelled: int = 0
    #: map output chunks a reducer missed and asked its mapper for again
    resends: int = 0
    #: partition windows the master asked a reducer for again after a silence
    fetches_asked_again: int = 0
    nodes_lost: list[str] = field(default_factory=list)

    def add_partitions(self, done: Iterable[tuple[str, p.PartitionComplete]]) -> list[str]:
        """Takes in what the reducers reported once every partition is complete, as (the
        owner's name, its ``PartitionComplete``): the records, the reduce counters and the
        spills per node. Returns one line per node that spilled, to tell the user."""
        done = list(done)
        self.records = sum(x.records for _, x in done)
        for name, x in done:
            add_counters(self.counters, x.counters)
            if x.spilled_runs or x.spilled_bytes:
                bytes_, runs = self.spilled.get(name, (0, 0))
                self.spilled[name] = (bytes_ + x.spilled_bytes, runs + x.spilled_runs)
        return [f"node {name} spilled {bytes_ / (1 << 20):,.1f} MiB in {runs} run(s) under "
                "its memory budget" for name, (bytes_, runs) in sorted(self.spilled.items())]


def add_counters(total: dict[str, int], more: dict[str, Any]) -> None:
    """Adds ``more`` into ``total``; a counter that comes to zero is removed."""
    for name, n in more.items():
        total[name] = total.get(name, 0) + n
        if not total[name]:
            del total[name]
