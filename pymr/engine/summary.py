"""``JobSummary``: what a job did, as ``Master.run`` returns it (and the CLI prints it)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    nodes_lost: list[str] = field(default_factory=list)
