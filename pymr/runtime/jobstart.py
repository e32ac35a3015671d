"""Which nodes run the master's job, and the ``JobStart`` each gets.

At the start, a user job leaves out the nodes that run only built-in jobs
(``--builtin-only``), and fails when none is left; the partitions are placed on the others
and each gets an acked ``JobStart``: the program, the partition map and its epoch, every
node's shuffle endpoint and the task token. A node that answers a hello during the job
gets the current map and epoch the same way, and map tasks once it has acked (it reduces
no partition unless one moves to it). ``JobStarter`` sends; the master waits for the acks.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import JobOptions
from ..engine.control import ControlChannel
from ..engine.partitions import PartitionBook
from ..engine.scheduler import Scheduler
from ..engine.summary import JobSummary
from ..errors import ClusterLost, JobError
from ..jobs import builtin_hashes
from ..jobs.program import JobProgram
from ..wire import protocol as p
from ..wording import count_of
from .links import NodeLink, NodeLinks


class JobStarter:
    """Admits nodes to the job (at its start, or late) and sends each its JobStart."""

    def __init__(self, job_id: str, task_token: str, program: JobProgram, opts: JobOptions,
                 nodes: NodeLinks, control: ControlChannel, book: PartitionBook,
                 summary: JobSummary, scheduler: Callable[[], Scheduler | None],
                 report: Callable[[str], None]) -> None:
        self.job_id = job_id
        self.task_token = task_token    # travels only on the acked control channel
        self.program = program
        self.spec = program.spec
        self.opts = opts
        self.nodes = nodes
        self.control = control
        self.book = book
        self.summary = summary
        self.scheduler = scheduler      # the master's, None before the start and at the end
        self.report = report            # an event for the user and observers

    def is_builtin(self) -> bool:
        return not self.spec.modules and self.spec.sha256 in builtin_hashes()

    def message(self, shuffle: dict[str, str]) -> p.JobStart:
        """The JobStart every node gets, at the start or when it joins later: the
        program, the current partition map and epoch, and the nodes' shuffle endpoints."""
        return p.JobStart(
            seq=self.control.next_seq(), job_id=self.job_id, job_name=self.spec.name,
            source=self.spec.source, sha256=self.spec.sha256,
            num_partitions=len(self.book.partition_map), partition_map=self.book.partition_map,
            shuffle_endpoints=shuffle, epoch=self.book.epoch,
            flush_key_limit=self.opts.flush_key_limit, task_token=self.task_token,
            filename=self.spec.filename, modules=self.spec.modules,
            params=self.program.params, memory=self.opts.memory)

    def start(self) -> None:
        """The nodes that said hello take the job: the partitions are placed on them and
        each is sent its JobStart (acked)."""
        links = self.nodes.links
        if not links:
            raise ClusterLost("no node is available to run the job")
        if not self.is_builtin():
            refusing = [x for x in links.values() if x.builtin_only]
            if len(refusing) == len(links):
                raise JobError("no node accepts this job: refused by " + ", ".join(
                    sorted(x.name for x in refusing)) + ", which run only built-in jobs "
                    "(--builtin-only); run a built-in job, or start nodes without "
                    "--builtin-only")
            for link in refusing:
                self.report(f"node {link.name} not used: it runs only built-in jobs "
                            "(--builtin-only)")
                self.nodes.forget(link)
        self.book.place({x.node_id: x.slots for x in links.values()},
                        self.opts.num_partitions)
        shuffle = {x.node_id: x.shuffle_endpoint for x in links.values()}
        for link in links.values():
            self.control.send(link.node_id, self.message(shuffle))

    def late_hello(self, link: NodeLink, msg: p.HelloReply) -> None:
        """A node answered a hello during the job: it gets a JobStart unless it is a
        second link to a live node, or it runs only built-in jobs and this is not one."""
        live = self.nodes.links.get(msg.node_id)
        if live is not None and live.alive:
            self.nodes.close(link)
            return
        try:
            self.nodes.accept_hello(link, msg)
            if link.builtin_only and not self.is_builtin():
                raise JobError("it runs only built-in jobs (--builtin-only)")
        except JobError as exc:
            self.report(f"node {msg.name} not used: {exc}")
            self.nodes.forget(link)
            return
        shuffle = {x.node_id: x.shuffle_endpoint for x in self.nodes.live()}
        self.control.send(link.node_id, self.message(shuffle), lambda: self.joined(link))

    def joined(self, link: NodeLink) -> None:
        """A late node acked its JobStart: it gets map tasks from now on (unless it was
        lost meanwhile, or the job is ending)."""
        sched = self.scheduler()
        if sched is not None and link.alive:
            sched.add_node(link.node_id, link.slots)
            self.summary.nodes.append(link.name)
            self.report(f"node {link.name} joined the job ({count_of(link.slots, 'slot')})")
