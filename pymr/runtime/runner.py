"""The library API behind ``pymr job``: run a job on given nodes or an embedded cluster."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, Union

from ..config import JobOptions
from ..engine.inputs import InputFile
from ..engine.results import JobRecords
from ..engine.summary import JobSummary
from ..errors import UsageError
from ..jobs import JobSpec
from ..jobs.program import JobProgram, load_program
from ..net.security import ClusterKey
from .cluster import LocalCluster
from .master import Master, Reporter

log = logging.getLogger(__name__)

Consumer = Callable[[JobRecords, JobSummary], None]
#: What ``pymr.run`` takes as an input path: a str, bytes (a file name as the OS has it) or
#: any ``os.PathLike`` (``pathlib.Path``).
PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def load_job(job: JobSpec | JobProgram, params: dict[str, str]) -> JobProgram:
    """The job checked on this machine before any node is contacted (``JobLoadError``:
    exit 2), ``setup`` included (it checks the parameters), then on every node."""
    if isinstance(job, JobProgram):
        return job
    return load_program(job, params)


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


class Result(list):  # type: ignore[type-arg]
    """The records of a job, in the job's order, as ``(key, value)`` tuples; ``summary``
    says what the job did (records, counters, splits, nodes, time)."""

    summary: JobSummary


def input_paths(paths: PathArg | Iterable[PathArg]) -> list[str]:
    """``pymr.run``'s ``paths`` as the str paths the inputs are resolved from: one path or
    an iterable of them, each a str, bytes or ``os.PathLike`` (bytes through
    ``os.fsdecode``, so a file name that is not UTF-8 keeps its bytes)."""
    kinds = "a str, bytes or os.PathLike (pathlib.Path)"
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    try:
        items = list(paths)
    except TypeError:
        raise UsageError(f"paths must be a path or a list of paths ({kinds}), not "
                         f"{type(paths).__name__}") from None
    out = []
    for item in items:
        if not isinstance(item, (str, bytes, os.PathLike)):
            raise UsageError(f"paths: {item!r} is not a path; give {kinds}")
        out.append(os.fsdecode(item))
    return out


def run(job: Any, paths: PathArg | Iterable[PathArg], *, params: dict[str, Any] | None = None,
        nodes: str | list[str] | None = None, home: str | None = None,
        local: int | None = None, slots: int = 0, split_size: int | None = None,
        partitions: int = 0, max_attempts: int | None = None, binary: bool = False,
        tokenizer: str | None = None, memory: int = 0) -> Result:
    """Run a job and return its records: ``pymr.run("bigrams.py", ["book.txt"])``.

    ``job`` is a built-in name, the path of a job file, or a module object defined in a
    file. ``paths`` is one input path or a list of them (str, bytes or ``os.PathLike``).
    By default the job runs on an embedded cluster of one node on this machine; ``local``
    asks for that many embedded nodes (``slots`` executors each; default: one per core).
    ``nodes`` (``"HOST:PORT,..."`` or a list) runs it on those nodes, with the cluster key
    of this machine's pymr ``home``, unless ``local`` is given: as with ``pymr job``,
    ``local`` wins over ``nodes`` (``placement.place`` decides for both).
    ``params`` are the job's parameters (``-p NAME=VALUE``); ``memory`` the budget per node
    in bytes (``--memory``). Errors are ``PymrError``
    subclasses whose ``str()`` is the one-line message the CLI prints.
    """
    from ..engine.inputs import release_inputs, resolve_inputs
    from ..jobs.program import resolve_job
    from ..wire.keys import thaw
    from .placement import OnNodes, PlacementRequest, place

    given = {k: str(v) for k, v in (params or {}).items()}
    if tokenizer is not None:
        given.setdefault("tokenizer", tokenizer)
    program = load_job(resolve_job(job), given)
    defaults = JobOptions()
    opts = JobOptions(params=program.params,
                      split_size=split_size or defaults.split_size,
                      num_partitions=partitions, memory=memory,
                      max_attempts=max_attempts or defaults.max_attempts)
    result = Result()

    def consume(records: JobRecords, summary: JobSummary) -> None:
        result.extend((thaw(k), thaw(v)) for k, v in records)

    inputs = resolve_inputs(input_paths(paths), binary_ok=binary)
    try:
        placement = place(PlacementRequest(local=local or 0, slots=slots,
                                           nodes=nodes or None, home=home))
        if isinstance(placement, OnNodes):
            result.summary = run_job(program, inputs, opts, consume,
                                     endpoints=placement.endpoints, key=placement.key)
        else:
            result.summary = run_job(program, inputs, opts, consume,
                                     local_nodes=placement.nodes, slots=placement.slots)
    finally:
        release_inputs(inputs)
    return result
