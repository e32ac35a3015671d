"""What the dashboard knows: nodes, jobs, events and errors, in memory, with bounded history.

Bookkeeping only (no sockets, no threads of its own): the collector feeds it what it
hears, the server reads JSON snapshots. One lock guards it; ``wait_change`` lets a server
thread sleep until something changed (server-sent events). Everything from the nodes is
kept as data and shown as text by the page: nothing here is markup.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import DEATH_TIMEOUT_S
from ..net.status import Event, NodeStatus
from ..wire import protocol as p

#: Latest events kept (task done, notices, job start and end), and latest task errors
#: (kept apart, so that a flood of progress events never pushes an error out).
MAX_EVENTS = 200
MAX_ERRORS = 50
#: Finished jobs kept; nodes kept (lost ones stay listed until this many are known).
MAX_FINISHED_JOBS = 20
MAX_NODES = 500
#: Throughput points kept per job (a few minutes at JobProgress's pace).
THROUGHPUT_POINTS = 240
#: A node silent this long (no heartbeat, no status answer) is lost: the master's default.
LOST_AFTER_S = DEATH_TIMEOUT_S
#: A running job that nothing was heard of for this long: its master is gone.
JOB_SILENT_S = 15.0
#: Longest text kept from a message (names, messages) and traceback.
TEXT_MAX = 1000
TRACEBACK_MAX = 20_000
#: Throughput is averaged over at least this much of the job's time (smooths the chart).
RATE_WINDOW_S = 0.5
#: The estimate of the time left uses the rate of about the last this many seconds.
ETA_WINDOW_S = 5.0

#: The phases of a job and their weight in its overall progress: about the share of a
#: job's time each takes (the map phase, which reads and counts the input, is the bulk).
PHASES = {"map": 0.7, "shuffle": 0.1, "reduce": 0.1, "fetch": 0.1}


def _cut(text: str, limit: int = TEXT_MAX) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class NodeView:
    """One node as the dashboard knows it (``key``: node id, or endpoint until one answers)."""

    key: str
    endpoint: str = ""
    node_id: str = ""
    name: str = ""
    addresses: list[str] = field(default_factory=list)
    version: str = ""
    slots: int = 0
    busy: int = 0
    tasks_done: int = 0
    bytes_processed: int = 0
    cpu_percent: float = -1.0
    mem_percent: float = -1.0
    mem_used: int = 0
    mem_total: int = 0
    uptime_s: float = 0.0
    uptime_at: float = 0.0
    jobs: list[str] = field(default_factory=list)
    last_heard: float = 0.0       # monotonic; 0: never answered
    error: str = ""

    def state(self, now: float) -> str:
        """up, busy, unreachable (never answered) or lost (silent past the death timeout)."""
        if not self.last_heard:
            return "unreachable"
        if now - self.last_heard > LOST_AFTER_S:
            return "lost"
        return "busy" if self.busy > 0 else "up"

    def to_json(self, now: float) -> dict[str, Any]:
        state = self.state(now)
        return {
            "node_id": self.node_id, "name": self.name or self.endpoint,
            "endpoint": self.endpoint, "addresses": list(self.addresses),
            "version": self.version, "state": state, "slots": self.slots, "busy": self.busy,
            "tasks_done": self.tasks_done, "bytes_processed": self.bytes_processed,
            "cpu_percent": self.cpu_percent if self.cpu_percent >= 0 else None,
            "mem_percent": self.mem_percent if self.mem_percent >= 0 else None,
            "mem_used": self.mem_used or None, "mem_total": self.mem_total or None,
            "uptime_s": round(self.uptime_s + now - self.uptime_at, 1)
            if self.uptime_at and state in ("up", "busy") else None,
            "jobs": list(self.jobs),
            "last_heard_s": round(now - self.last_heard, 1) if self.last_heard else None,
            "error": self.error or None,
        }


@dataclass
class JobView:
    """One job: the master's latest ``JobProgress``, and its history for the chart."""

    job_id: str
    name: str = ""
    progress: p.JobProgress | None = None
    state: str = "running"
    first_heard: float = 0.0      # wall clock
    heard_at: float = 0.0         # monotonic
    samples: deque[tuple[float, int]] = field(
        default_factory=lambda: deque(maxlen=THROUGHPUT_POINTS + 1))
    tasks_seen: set[int] = field(default_factory=set)   # from Progress events, before any
    bytes_seen: int = 0                                 # JobProgress arrived

    def phases(self) -> dict[str, dict[str, Any]]:
        m = self.progress
        if m is None:
            return {name: {"done": 0, "total": None, "fraction": 0.0} for name in PHASES}
        over = self.state == "done"
        input_known = m.tasks_total >= 0

        def phase(done: int, total: int | None, fallback: float = 0.0) -> dict[str, Any]:
            if over:
                fraction = 1.0
            elif total:
                fraction = min(1.0, done / total)
            elif total == 0:
                fraction = 1.0
            else:
                fraction = fallback
            return {"done": done, "total": total, "fraction": round(fraction, 4)}

        reduced = m.partitions and m.partitions_done == m.partitions
        mapped = phase(m.tasks_done, m.tasks_total if input_known else None)
        if m.bytes_total > 0 and not over:
            # By bytes where known: splits differ in size, and the count of splits is
            # known only once the input is cut (switching would make the bar step back).
            mapped["fraction"] = round(min(1.0, m.bytes_done / m.bytes_total), 4)
        return {
            "map": mapped,
            "shuffle": phase(m.tasks_committed, m.tasks_total if input_known else None),
            "reduce": phase(m.partitions_done, m.partitions or None),
            "fetch": phase(m.chunks_fetched, m.chunks_total if reduced else None),
        }

    def throughput(self) -> list[list[float]]:
        """``[elapsed s, bytes/s]`` points, each over at least RATE_WINDOW_S of the job."""
        out: list[list[float]] = []
        base: tuple[float, int] | None = None
        for t, b in self.samples:
            if base is None:
                base = (t, b)
                continue
            if t - base[0] >= RATE_WINDOW_S:
                out.append([round(t, 2), round((b - base[1]) / (t - base[0]))])
                base = (t, b)
        return out

    def eta_s(self) -> float | None:
        """Time left in the map phase at the recent rate (the bulk of a job); None after it
        or while the rate is not known."""
        m = self.progress
        if m is None or self.state != "running" or m.phase != "map" or m.bytes_total <= 0:
            return None
        recent = [s for s in self.samples if s[0] >= m.elapsed_s - ETA_WINDOW_S]
        if len(recent) < 2 or recent[-1][0] <= recent[0][0]:
            return None
        rate = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
        if rate <= 0:
            return None
        return round(max(0.0, m.bytes_total - m.bytes_done) / rate, 1)

    def to_json(self) -> dict[str, Any]:
        m = self.progress
        phases = self.phases()
        overall = 1.0 if self.state == "done" else sum(
            phases[name]["fraction"] * weight for name, weight in PHASES.items())
        out: dict[str, Any] = {
            "job_id": self.job_id, "name": self.name, "state": self.state,
            "phase": m.phase if m is not None else "map", "progress": round(overall, 4),
            "phases": phases, "started": round(self.first_heard, 3),
            "throughput": self.throughput(), "eta_s": self.eta_s(),
        }
        if m is None:
            out.update(inputs=[], elapsed_s=None, tasks_done=len(self.tasks_seen),
                       tasks_total=None, bytes_done=self.bytes_seen, bytes_total=None,
                       retries=0, backups=0, nodes=[], nodes_lost=[], error=None)
        else:
            out.update(inputs=list(m.inputs), elapsed_s=m.elapsed_s, tasks_done=m.tasks_done,
                       tasks_total=m.tasks_total if m.tasks_total >= 0 else None,
                       bytes_done=m.bytes_done,
                       bytes_total=m.bytes_total if m.bytes_total >= 0 else None,
                       partitions=m.partitions, partitions_done=m.partitions_done,
                       records=m.records, retries=m.retries, backups=m.backups,
                       nodes=list(m.nodes), nodes_lost=list(m.nodes_lost),
                       error=m.error or None)
        return out


class DashboardState:
    """Thread-safe; every change bumps ``version`` and wakes ``wait_change``."""

    def __init__(self, *, fingerprint: str = "", title: str = "pymr",
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.fingerprint = fingerprint
        self.title = title
        self.clock = clock
        self.wall = wall
        self.version = 0
        self.nodes: dict[str, NodeView] = {}
        self.jobs: OrderedDict[str, JobView] = OrderedDict()
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.errors: OrderedDict[tuple[str, int, int], dict[str, Any]] = OrderedDict()
        self.source = ""              # how nodes are found: "mDNS on ...", "--nodes ..."
        self.searched = False         # the first search for nodes is over
        self._notices: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._cond = threading.Condition()
        self._released = False        # wake() was called: readers stop waiting
        self._node_states: dict[str, str] = {}

    # ---------------------------------------------------------------- feeding
    def set_source(self, text: str, searched: bool) -> None:
        with self._cond:
            if (text, searched) != (self.source, self.searched):
                self.source, self.searched = text, searched
                self._changed()

    def on_probe(self, statuses: list[NodeStatus]) -> None:
        """What ``status.probe`` found: hello and status answers, or the error."""
        now = self.clock()
        with self._cond:
            for st in statuses:
                view = self._node_for(st)
                if view is None:
                    continue
                view.endpoint = st.endpoint
                if st.record is not None:
                    view.addresses = list(st.record.addresses)
                    view.name = view.name or st.record.name
                if st.hello is not None:
                    h = st.hello
                    view.node_id, view.name, view.version = h.node_id, _cut(h.name), \
                        h.pymr_version
                    view.slots = h.slots
                view.error = _cut(st.error)
                if st.status is not None and not st.error:
                    s = st.status
                    view.last_heard = now
                    view.slots, view.busy, view.tasks_done = s.slots, s.busy, s.tasks_done
                    view.bytes_processed = s.bytes_processed
                    view.uptime_s, view.uptime_at = s.uptime_s, now
                    view.jobs = [_cut(j, 64) for j in s.jobs[:50]]
                    if s.addresses and st.record is None:
                        view.addresses = [a.removeprefix("tcp://") for a in s.addresses[:8]]
                    if s.mem_total:
                        view.cpu_percent, view.mem_percent = s.cpu_percent, s.mem_percent
                        view.mem_used, view.mem_total = s.mem_used, s.mem_total
                elif st.hello is not None and not st.error:
                    view.last_heard = now
            self._changed()

    def _node_for(self, st: NodeStatus) -> NodeView | None:
        node_id = st.hello.node_id if st.hello is not None else (
            st.record.node_id if st.record is not None else "")
        key = node_id or st.endpoint
        view = self.nodes.get(key)
        if view is None and node_id:
            # It was known by its endpoint until it answered: keep one entry.
            view = self.nodes.pop(st.endpoint, None)
            if view is not None:
                view.key = key
                self.nodes[key] = view
        if view is None:
            if len(self.nodes) >= MAX_NODES:
                return None
            view = self.nodes[key] = NodeView(key=key, endpoint=st.endpoint)
        return view

    def on_event(self, ev: Event) -> None:
        """One message from a node's PUB socket."""
        m = ev.msg
        now = self.clock()
        with self._cond:
            if isinstance(m, p.Heartbeat):
                self._on_heartbeat(m, now)
            elif isinstance(m, p.JobProgress):
                self._on_job_progress(m, ev, now)
            elif isinstance(m, p.Progress):
                job = self._job(m.job_id, ev.received, now)
                if m.task_id not in job.tasks_seen and len(job.tasks_seen) < 1_000_000:
                    job.tasks_seen.add(m.task_id)
                    job.bytes_seen += m.nbytes
                self._event(ev.received, ev.node, "progress", m.job_id,
                            f"task {m.task_id} (attempt {m.attempt}) mapped, "
                            f"{m.nbytes:,} bytes")
            elif isinstance(m, p.JobNotice):
                self._on_notice(m, ev, now)
            elif isinstance(m, p.ErrorEvent):
                self._error(m.job_id, m.task_id, m.attempt, ev.received, node=ev.node,
                            exc_type=m.exc_type, message=m.message, traceback=m.traceback,
                            full=True)
                self._event(ev.received, ev.node, "error", m.job_id,
                            f"task {m.task_id} attempt {m.attempt} failed: "
                            f"{m.exc_type}: {m.message}")
            else:
                return
            self._changed()

    def _on_heartbeat(self, m: p.Heartbeat, now: float) -> None:
        view = self.nodes.get(m.node_id)
        if view is None:
            return  # not probed yet: the collector adds it with its name and addresses
        view.last_heard = now
        view.slots, view.busy, view.tasks_done = m.slots, m.busy, m.tasks_done
        view.bytes_processed = max(view.bytes_processed, m.bytes_processed)
        view.jobs = [_cut(j, 64) for j in m.jobs[:50]]
        view.error = ""
        if m.mem_total:
            view.cpu_percent, view.mem_percent = m.cpu_percent, m.mem_percent
            view.mem_used, view.mem_total = m.mem_used, m.mem_total
        for job_id in view.jobs:
            job = self.jobs.get(job_id)
            if job is not None and job.state == "running":
                job.heard_at = now

    def _on_job_progress(self, m: p.JobProgress, ev: Event, now: float) -> None:
        job = self._job(m.job_id, ev.received, now)
        if job.progress is not None and m.number <= job.progress.number:
            return  # the same message relayed by another node, or a late one
        was = job.state
        m = p.JobProgress(**{**m.to_fields(), "inputs": [_cut(x, 300) for x in m.inputs[:21]],
                             "nodes": [_cut(x, 100) for x in m.nodes[:200]],
                             "nodes_lost": [_cut(x, 100) for x in m.nodes_lost[:200]],
                             "job_name": _cut(m.job_name, 200), "error": _cut(m.error)})
        job.progress, job.name, job.state, job.heard_at = m, m.job_name, m.state, now
        if m.state == "running" and (not job.samples or m.elapsed_s > job.samples[-1][0]):
            job.samples.append((m.elapsed_s, m.bytes_done))
        if was != m.state and m.state != "running":
            took = f" in {m.elapsed_s:.1f} s" if m.elapsed_s else ""
            self._event(ev.received, ev.node, "job", m.job_id,
                        f"job {m.job_name} {m.state}{took}"
                        + (f": {m.error}" if m.error else ""))
            self._trim_jobs()

    def _on_notice(self, m: p.JobNotice, ev: Event, now: float) -> None:
        job = self._job(m.job_id, ev.received, now)
        if m.task_id >= 0:
            self._error(m.job_id, m.task_id, m.attempt, ev.received, node=m.failed_on,
                        exc_type=m.exc_type, message=m.message, where=m.where,
                        traceback=m.traceback, job_name=job.name)
        # Every node relays the master's notice: show it once.
        key = (m.job_id, m.text)
        for old, at in list(self._notices.items()):
            if now - at < 10.0:
                break
            del self._notices[old]
        if key in self._notices:
            return
        self._notices[key] = now
        self._event(ev.received, "", "notice", m.job_id, m.text)

    def _job(self, job_id: str, wall: float, now: float) -> JobView:
        job = self.jobs.get(job_id)
        if job is None:
            job = self.jobs[job_id] = JobView(job_id=_cut(job_id, 64), first_heard=wall,
                                              heard_at=now)
            self._trim_jobs()
        return job

    def _trim_jobs(self) -> None:
        finished = [j for j, v in self.jobs.items() if v.state != "running"]
        for job_id in finished[:max(0, len(finished) - MAX_FINISHED_JOBS)]:
            del self.jobs[job_id]

    def _event(self, wall: float, node: str, kind: str, job_id: str, text: str) -> None:
        self.events.append({"time": round(wall, 3), "node": _cut(node, 200), "kind": kind,
                            "job_id": _cut(job_id, 64), "text": _cut(text)})

    def _error(self, job_id: str, task_id: int, attempt: int, wall: float, *, node: str,
               exc_type: str, message: str, traceback: str, where: str = "",
               job_name: str = "", full: bool = False) -> None:
        """A task's error, from the node's ErrorEvent (``full``: the whole traceback) and
        the master's notice (where in the input; the job's own frames): merged."""
        key = (job_id, task_id, attempt)
        entry = self.errors.get(key)
        if entry is None:
            entry = self.errors[key] = {
                "time": round(wall, 3), "job_id": _cut(job_id, 64), "job_name": "",
                "node": "", "task_id": task_id, "attempt": attempt, "exc_type": "",
                "message": "", "where": "", "traceback": ""}
            while len(self.errors) > MAX_ERRORS:
                self.errors.popitem(last=False)
        for name, value in (("node", node), ("exc_type", exc_type), ("message", message),
                            ("where", where), ("job_name", job_name)):
            if value and not entry[name]:
                entry[name] = _cut(value)
        # The job's own frames (the master's notice) read best; the whole one otherwise.
        if traceback and (not entry["traceback"] or not full):
            entry["traceback"] = _cut(traceback, TRACEBACK_MAX)

    def tick(self) -> None:
        """Time passing changes states (a node goes silent, a master disappears)."""
        now = self.clock()
        with self._cond:
            states = {k: v.state(now) for k, v in self.nodes.items()}
            changed = states != self._node_states
            self._node_states = states
            busy_jobs = {j for v in self.nodes.values() if states[v.key] in ("up", "busy")
                         for j in v.jobs}
            for job in self.jobs.values():
                if job.state == "running" and job.job_id not in busy_jobs \
                        and now - job.heard_at > JOB_SILENT_S:
                    job.state = "gone"
                    self._event(self.wall(), "", "job", job.job_id,
                                f"job {job.name or job.job_id}: nothing heard for "
                                f"{JOB_SILENT_S:g} s (its master stopped?)")
                    changed = True
            if changed:
                self._trim_jobs()
                self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._cond.notify_all()

    # ---------------------------------------------------------------- reading
    def wait_change(self, version: int, timeout_s: float) -> int:
        """Block until ``version`` is stale or ``timeout_s`` passed; the current version."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != version or self._released, timeout_s)
            return self.version

    def wake(self) -> None:
        """Release every waiting reader, now and from now on (the server is closing)."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def nodes_json(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self._cond:
            views = sorted(self.nodes.values(), key=lambda v: (v.name or v.endpoint, v.key))
            return [v.to_json(now) for v in views]

    def jobs_json(self) -> list[dict[str, Any]]:
        """Running jobs first, then the others, newest first."""
        with self._cond:
            jobs = [j.to_json() for j in reversed(self.jobs.values())]
        return sorted(jobs, key=lambda j: j["state"] != "running")

    def events_json(self, limit: int = MAX_EVENTS) -> dict[str, Any]:
        """The latest ``limit`` events, and the latest errors, newest first."""
        with self._cond:
            return {"events": list(reversed(self.events))[:limit],
                    "errors": [dict(e) for e in reversed(self.errors.values())]}

    def cluster_json(self) -> dict[str, Any]:
        """Whether the cluster can be reached, said plainly."""
        now = self.clock()
        with self._cond:
            states = [v.state(now) for v in self.nodes.values()]
            source, searched = self.source, self.searched
        live = sum(1 for s in states if s in ("up", "busy"))
        if live:
            text = f"{live} of {len(states)} node(s) up"
            reachable: bool | None = True
        elif not states and not searched:
            text, reachable = f"looking for nodes ({source})", None
        elif not states:
            text, reachable = (f"The cluster cannot be reached: no node found ({source}). Is "
                               "'pymr node' running on the other machines? Where multicast is "
                               "blocked, start the dashboard with --nodes HOST:PORT."), False
        else:
            text, reachable = (f"The cluster cannot be reached: none of the {len(states)} "
                               "node(s) answers (stopped, unreachable, or another cluster "
                               f"key); {source}."), False
        return {"reachable": reachable, "text": text, "source": source,
                "fingerprint": self.fingerprint, "title": self.title,
                "nodes": len(states), "nodes_up": live,
                "busy": sum(1 for s in states if s == "busy")}

    def snapshot(self, events: int = MAX_EVENTS) -> dict[str, Any]:
        """Everything the page shows, in one document (what the event stream sends, with
        fewer events: it is sent at every change)."""
        with self._cond:  # reentrant: one consistent view
            return {"version": self.version, "time": round(self.wall(), 3),
                    "cluster": self.cluster_json(), "nodes": self.nodes_json(),
                    "jobs": self.jobs_json(), **self.events_json(events)}
