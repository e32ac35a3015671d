"""The library API behind ``pymr job``: run a job on given nodes or an embedded cluster."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from .cluster import LocalCluster
from .config import JobOptions
from .inputs import InputFile
from .jobs import JobSpec
from .jobs.program import JobProgram, load_program
from .master import JobSummary, Master, Reporter
from .security import ClusterKey

log = logging.getLogger(__name__)

Consumer = Callable[[Iterator[tuple[Any, Any]], JobSummary], None]


def load_job(job: JobSpec | JobProgram, params: dict[str, str]) -> JobProgram:
    """The job checked on this machine before any node is contacted (``JobLoadError``:
    exit 2); its ``setup`` runs on the nodes only."""
    if isinstance(job, JobProgram):
        return job
    return load_program(job, params, run_setup=False)


def run_job(job: JobSpec | JobProgram, inputs: list[InputFile], opts: JobOptions,
            consume: Consumer, *, local_nodes: int = 1, slots: int = 0,
            endpoints: list[str] | None = None, key: ClusterKey | None = None,
            reporter: Reporter | None = None, discover: Callable[[], list[str]] | None = None,
            shared_fs: bool = False, cluster: LocalCluster | None = None) -> JobSummary:
    """Run one job; ``consume`` gets the sorted records and the summary.

    With ``endpoints`` (and the cluster ``key``) the job runs on those nodes;
    otherwise on an embedded cluster of ``local_nodes`` nodes that read their
    splits from the input files by offset and stop when the job ends (``cluster``: one
    the caller launched already, so that its start overlapped the caller's own).
    """
    program = load_job(job, opts.params)
    if endpoints:
        if key is None:
            raise ValueError("connecting to nodes needs the cluster key")
        master = Master(key, endpoints, program, inputs, opts, local_reads=shared_fs,
                        reporter=reporter, discover=discover)
        return master.run(consume)
    with cluster or LocalCluster(nodes=local_nodes, slots=slots) as cluster:
        master = Master(cluster.key, cluster.control_endpoints, program, inputs, opts,
                        local_reads=True, reporter=reporter)
        return master.run(consume)
