"""The node's job table: which jobs run here, for which master, and where their messages go.

Sans-I/O, like the scheduler: the daemon asks whether to admit a job or a map task, which
executor reduces a partition, what each executor is told and what a master must hear when
an executor dies; the answers are messages, and the daemon sends them. The node never runs
a job's program: admission only checks the message and the program's hash.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import NodeOptions, executor_share
from ..jobs import bundle_sha256
from ..wire import protocol as p

log = logging.getLogger(__name__)

#: A task attempt as the node tracks it: (job id, task id, attempt).
TaskKey = tuple[str, int, int]

#: A message and where it goes: an executor's index, or a master's identity (its peer on
#: the control socket).
Send = tuple[int | bytes, p.Message]

#: Why a map task naming a file is refused on a node that reads none (its master is told).
PATH_REFUSED = "map task naming a file on a node that reads none"


def job_start_problem(msg: p.JobStart) -> str:
    """Why a JobStart cannot run here (a member's malformed job), or ""."""
    if not 1 <= msg.num_partitions <= 1_000_000:
        return f"bad partition count {msg.num_partitions}"
    if sorted(msg.partition_map) != list(range(msg.num_partitions)):
        return "the partition map does not name every partition exactly once"
    for node, endpoint in msg.shuffle_endpoints.items():
        if not endpoint.startswith("tcp://") or ":" not in endpoint[6:]:
            return f"bad shuffle endpoint for node {node}"
    if any(node not in msg.shuffle_endpoints for node in msg.partition_map.values()):
        return "the partition map names a node without a shuffle endpoint"
    if bundle_sha256(msg.source, msg.modules) != msg.sha256:
        return "the job's program does not match its sha256"
    return ""


@dataclass
class NodeJob:
    """What the daemon keeps of a job: routing, not data."""

    job_id: str
    master: bytes
    spec: p.JobStart
    owners: dict[int, int]                 # partition -> executor index
    last_lease: float
    queue: deque[tuple[p.MapTask, list[Any]]] = field(default_factory=deque)
    num_tasks: int = -1


class JobTable:
    """The running jobs of one node and the routing decisions about them."""

    def __init__(self, opts: NodeOptions, node_id: str, name: str, spill_root: Path,
                 builtin_hashes: set[str]) -> None:
        self.opts = opts
        self.node_id = node_id
        self.name = name
        self.spill_root = spill_root
        self.builtin_hashes = builtin_hashes   # empty: any program may run here
        self.executors = 1                     # set by the daemon once they are started
        self.jobs: dict[str, NodeJob] = {}
        self.rr: deque[str] = deque()          # round-robin order of jobs with queued tasks

    # ---------------------------------------------------------------- admission
    def start(self, peer: bytes, msg: p.JobStart, now: float) -> list[Send]:
        """A JobStart: each executor is told of a new job, then the master gets its ack."""
        ack, job = self.admit(peer, msg, now)
        if job is None:
            return [(peer, ack)]
        log.info("job %s started by a master; reducing partitions %s", msg.job_id,
                 sorted(job.owners))
        return [*self.to_executors(job, index=None), (peer, ack)]

    def admit(self, peer: bytes, msg: p.JobStart, now: float
              ) -> tuple[p.Ack, NodeJob | None]:
        """The ack for a JobStart, and the job if it was added now (a re-sent JobStart of a
        running job is acked again and changes nothing)."""
        if msg.job_id in self.jobs:
            return p.Ack(seq=msg.seq), None
        problem = self.refusal(msg)
        if problem:
            return p.Ack(seq=msg.seq, ok=False, error=problem), None
        mine = self.my_partitions(msg.partition_map)
        owners = {part: i % self.executors for i, part in enumerate(mine)}
        job = NodeJob(job_id=msg.job_id, master=peer, spec=msg, owners=owners,
                      last_lease=now)
        self.jobs[msg.job_id] = job
        return p.Ack(seq=msg.seq), job

    def refusal(self, msg: p.JobStart) -> str:
        """Why this node refuses the job, or "": only built-in programs (byte for byte, no
        helper modules) under --builtin-only, and only well-formed jobs."""
        if self.builtin_hashes and (msg.sha256 not in self.builtin_hashes or msg.modules
                                    or bundle_sha256(msg.source, {}) != msg.sha256):
            return f"node {self.name} runs only built-in jobs (--builtin-only)"
        problem = job_start_problem(msg)
        if problem:
            return problem
        if any(not msg.shuffle_endpoints.get(node, "") for node in msg.partition_map.values()):
            return "partition map names an unknown node"
        return ""

    def my_partitions(self, partition_map: dict[int, str]) -> list[int]:
        return sorted(part for part, node in partition_map.items() if node == self.node_id)

    def exec_job(self, job: NodeJob, index: int, map_only: bool = False,
                 num_tasks: int = -1) -> p.ExecJob:
        """What executor ``index`` is told of a job: its program, its partitions (none when
        ``map_only``: a replacement gets no partitions of its own), where to shuffle."""
        spec = job.spec
        parts = [] if map_only else [part for part, idx in job.owners.items() if idx == index]
        endpoints = {part: spec.shuffle_endpoints[node]
                     for part, node in spec.partition_map.items()}
        return p.ExecJob(
            job_id=spec.job_id, job_name=spec.job_name, source=spec.source,
            sha256=spec.sha256, filename=spec.filename, modules=spec.modules,
            params=spec.params,
            memory=executor_share(self.opts.memory, spec.memory, self.executors),
            num_partitions=spec.num_partitions, partitions=parts,
            shuffle_endpoints=endpoints, flush_key_limit=spec.flush_key_limit,
            num_tasks=num_tasks, epoch=spec.epoch,
            spill_dir=str(self.spill_root / f"{spec.job_id}.{index}"),
            retain_memory=self.opts.retain_memory)

    def to_executors(self, job: NodeJob, index: int | None, num_tasks: int = -1
                     ) -> list[Send]:
        """Each executor's ``ExecJob`` (``index`` None: every executor, else only that one)."""
        indexes = range(self.executors) if index is None else [index]
        return [(i, self.exec_job(job, i, num_tasks=num_tasks)) for i in indexes]

    def replay(self, index: int) -> list[Send]:
        """What a replacement executor is told: every running job, to map only."""
        return [(index, self.exec_job(job, index, map_only=True)) for job in self.jobs.values()]

    # ---------------------------------------------------------------- masters
    def owned(self, peer: bytes, job_id: str) -> NodeJob | None:
        """The job, if it runs here and ``peer`` is its master."""
        job = self.jobs.get(job_id)
        return job if job is not None and job.master == peer else None

    def renew(self, peer: bytes, job_id: str, now: float) -> None:
        """The job's master still wants it (anyone else's lease is ignored)."""
        job = self.owned(peer, job_id)
        if job is not None:
            job.last_lease = now

    def update(self, job: NodeJob, msg: p.JobUpdate) -> bool:
        """Partitions moved: adopt the new map and give new partitions to the executors
        that own the fewest. False for a stale update re-sent late (nothing changes)."""
        if msg.epoch < job.spec.epoch:
            return False
        job.spec = dataclasses.replace(job.spec, partition_map=msg.partition_map,
                                       shuffle_endpoints=msg.shuffle_endpoints, epoch=msg.epoch)
        if msg.num_tasks >= 0:
            job.num_tasks = msg.num_tasks
        mine = self.my_partitions(msg.partition_map)
        owners = {part: idx for part, idx in job.owners.items() if part in mine}
        for part in mine:
            if part not in owners:
                load = dict.fromkeys(range(self.executors), 0)
                for idx in owners.values():
                    load[idx] += 1
                owners[part] = min(load, key=lambda i: (load[i], i))
        job.owners = owners
        return True

    def end(self, job: NodeJob, reason: str) -> list[Send]:
        """Forget the job (JobEnd, or its lease expired) and its queued tasks; every
        executor is told."""
        self.jobs.pop(job.job_id, None)
        if job.job_id in self.rr:
            self.rr.remove(job.job_id)
        log.info("job %s ended (%s)", job.job_id, reason)
        return self.broadcast(p.ExecJobEnd(job_id=job.job_id))

    def broadcast(self, msg: p.Message) -> list[Send]:
        """The message to every executor."""
        return [(i, msg) for i in range(self.executors)]

    def expired(self, now: float) -> list[NodeJob]:
        """Jobs whose master stopped renewing the lease."""
        return [job for job in self.jobs.values()
                if now - job.last_lease > self.opts.lease_timeout_s]

    # ---------------------------------------------------------------- routing
    def owner(self, job_id: str, partition: int) -> int | None:
        """The executor that reduces the partition, if the job runs here and it is ours."""
        job = self.jobs.get(job_id)
        return None if job is None else job.owners.get(partition)

    def route_commit(self, job: NodeJob, msg: p.Commit) -> dict[int, p.Commit]:
        """A batch of commits split by the executor that reduces each partition: each gets
        the outputs that touch its partitions, with only its partitions' manifests."""
        per_exec: dict[int, tuple[list[str], list[list[int]], list[dict[int, list[int]]]]] = {}
        for output_id, tasks, manifest in msg.entries():
            by_exec: dict[int, dict[int, list[int]]] = {}
            for part, man in manifest.items():
                if part in job.owners:
                    by_exec.setdefault(job.owners[part], {})[part] = man
            for idx, subset in by_exec.items():
                ids, task_lists, manifests = per_exec.setdefault(idx, ([], [], []))
                ids.append(output_id)
                task_lists.append(tasks)
                manifests.append(subset)
        return {idx: p.Commit(seq=msg.seq, job_id=msg.job_id, output_ids=ids, tasks=task_lists,
                              manifests=manifests, epoch=msg.epoch)
                for idx, (ids, task_lists, manifests) in per_exec.items()}

    def fetch_route(self, job: NodeJob, msg: p.FetchPartition) -> list[Send]:
        """To the executor that reduces the partition (none if it is not ours)."""
        index = job.owners.get(msg.partition)
        return [] if index is None else [(index, msg)]

    # ---------------------------------------------------------------- a master's acked messages
    # The daemon checks that the job runs here and that the sender is its master, sends
    # what these return, then acks.
    def on_commit(self, job: NodeJob, msg: p.Commit) -> list[Send]:
        return list(self.route_commit(job, msg).items())

    def on_update(self, job: NodeJob, msg: p.JobUpdate) -> list[Send]:
        """Partitions moved: every executor gets the new map and its partitions."""
        if not self.update(job, msg):
            return []
        return self.to_executors(job, index=None, num_tasks=job.num_tasks)

    def on_resend(self, job: NodeJob, msg: p.ResendChunks) -> list[Send]:
        """To the executor that retains the output; when it is gone, the output is lost."""
        index = p.output_executor(msg.output_id)
        if 0 <= index < self.executors:
            return [(index, msg)]
        return [(job.master, p.OutputLost(job_id=job.job_id, node_id=self.node_id,
                                          output_id=msg.output_id))]

    def on_input_complete(self, job: NodeJob, msg: p.InputComplete) -> list[Send]:
        """Kept for executors started later (replacements), and told to every executor."""
        job.num_tasks = msg.num_tasks
        return self.broadcast(msg)

    def on_broadcast(self, job: NodeJob, msg: p.Message) -> list[Send]:
        return self.broadcast(msg)

    def on_end(self, job: NodeJob, msg: p.JobEnd) -> list[Send]:
        return self.end(job, msg.reason)

    # ---------------------------------------------------------------- map tasks
    def task_refusal(self, msg: p.MapTask) -> str:
        """Why a map task from the task socket is dropped, or "". Only nodes that share the
        master's files (the embedded cluster, or --shared-fs) read splits by path: never
        let a member name a local file. Only the job's master knows its task token."""
        job = self.jobs.get(msg.job_id)
        if job is None:
            return "map task for an unknown job"
        if msg.path and not self.opts.read_paths:
            return PATH_REFUSED
        if not hmac.compare_digest(msg.token, job.spec.task_token):
            return "map task without this job's token (not its master)"
        return ""

    def take_task(self, msg: p.MapTask, frames: list[Any]) -> tuple[str, list[Send]]:
        """Queue the task, or say why it is dropped; a task naming a file on a node that
        reads none is also refused to its master, which runs it elsewhere."""
        why = self.task_refusal(msg)
        if why == PATH_REFUSED:
            return why, [(self.jobs[msg.job_id].master, p.TaskFailedReport(
                job_id=msg.job_id, node_id=self.node_id, task_id=msg.task_id,
                attempt=msg.attempt, exc_type="Refused",
                message="this node does not read input files by path (no --shared-fs)"))]
        if not why:
            self.enqueue(msg, frames)
        return why, []

    def enqueue(self, msg: p.MapTask, frames: list[Any]) -> None:
        """Queue an admitted task (see ``task_refusal``) behind its job's others."""
        job = self.jobs[msg.job_id]
        job.queue.append((msg, frames))
        if job.job_id not in self.rr:
            self.rr.append(job.job_id)

    def has_tasks(self) -> bool:
        return bool(self.rr)

    def next_task(self) -> tuple[p.MapTask, list[Any]] | None:
        """The next queued task, taking jobs in turn (round-robin) so that no job starves
        another; None when the job whose turn it was has none left."""
        job_id = self.rr.popleft()
        job = self.jobs.get(job_id)
        if job is None or not job.queue:
            return None
        task = job.queue.popleft()
        if job.queue:
            self.rr.append(job_id)
        return task

    def unqueue(self, job: NodeJob, task_id: int, attempt: int) -> bool:
        """Drop a queued attempt (it lost to another); False if it is not queued here."""
        for item in job.queue:
            if (item[0].task_id, item[0].attempt) == (task_id, attempt):
                job.queue.remove(item)
                return True
        return False

    # ---------------------------------------------------------------- executor deaths
    def lost_reports(self, index: int, tasks: Iterable[TaskKey], unflushed: set[TaskKey],
                     why: str) -> list[Send]:
        """What the masters hear when executor ``index`` dies, as (master, message): its
        partitions are lost, and so are its tasks (those executed but not flushed as
        ``LOST``: their output is gone too)."""
        out: list[Send] = []
        for job in self.jobs.values():
            for part, idx in job.owners.items():
                if idx == index:
                    out.append((job.master, p.PartitionLost(
                        job_id=job.job_id, node_id=self.node_id, partition=part, reason=why)))
        for job_id, task_id, attempt in list(tasks) + sorted(unflushed):
            running = self.jobs.get(job_id)
            if running is not None:
                out.append((running.master, p.TaskFailedReport(
                    job_id=job_id, node_id=self.node_id, task_id=task_id, attempt=attempt,
                    exc_type=p.LOST if (job_id, task_id, attempt) in unflushed
                    else "ExecutorCrashed", message=why)))
        return out
