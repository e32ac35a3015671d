"""Many simulated pymr nodes in one process, speaking the real protocol to a real master.

Started by ``run_scale.py`` (``python simnodes.py`` with a JSON config line on stdin).  Each
simulated node binds, through ``pymr.net.security.secure_bind`` and the process's one
``Authenticator`` (CURVE, cluster key checked by ZAP), the sockets a real node daemon binds
and the master connects to:

* control ROUTER: Hello -> HelloReply; JobStart, Flush, Commit, DropOutput, InputComplete,
  JobUpdate, ResendChunks, JobEnd -> Ack (every acked message is acked); Lease (counted);
  FetchPartition -> PartitionData.  Node -> master reports (TaskExecuted, OutputDone,
  PartitionComplete, PartitionData) go on this socket, as from a real daemon.
* task PULL (rcvhwm 4, as a real node): MapTask frames, decoded with ``pymr.wire.protocol``.
* events PUB: a Heartbeat every second per node (staggered), a Progress per task (the master
  does not subscribe to it: it is filtered at the PUB, as in a real node).

The shuffle is not opened: the shuffle endpoint in the HelloReply is a placeholder, and every
PUSH connection a real executor would open (one per reducer node it sends a partition to)
and every chunk it would send are counted instead.

A node has ``slots`` simulated executors.  A map task occupies one for ``task_fixed_us +
length * cost_ns_per_byte`` of simulated time (a timer: no CPU is burnt) and then reports
TaskExecuted; its output stays unflushed until the master's Flush, when every executor
holding tasks sends one OutputDone (one map output: its task set, and a manifest of one
one-record chunk for every partition).  A reducer node counts the tasks of the outputs
committed to it; when it has them all (InputComplete gave the number) it reports
PartitionComplete for each partition it owns, and answers FetchPartition with one record per
partition, ``(b"p%06d" % partition, tasks committed)``: the master's merged answer then proves
that every task was committed exactly once to every reducer.

On EOF of stdin the process prints its counters as one JSON line on stdout and exits.
"""

from __future__ import annotations

import heapq
import json
import os
import resource
import sys
import time
import zlib
from collections import Counter, deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import zmq  # noqa: E402

from pymr import __version__  # noqa: E402
from pymr.config import UNICODE_VERSION  # noqa: E402
from pymr.net.security import Authenticator, ClusterKey, secure_bind  # noqa: E402
from pymr.net.transport import make_socket, send_nowait  # noqa: E402
from pymr.wire import protocol as p  # noqa: E402

ACKED = (p.JobStart, p.Flush, p.Commit, p.DropOutput, p.InputComplete, p.JobUpdate,
         p.ResendChunks, p.JobEnd)


class Stats:
    def __init__(self) -> None:
        self.msgs_in: Counter[str] = Counter()      # master -> nodes, by type
        self.bytes_in: Counter[str] = Counter()
        self.msgs_out: Counter[str] = Counter()     # nodes -> master, by type
        self.bytes_out: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()   # acked messages seen again (re-sends)
        self.shuffle_connections = 0                # (executor, reducer node) pairs
        self.shuffle_node_pairs: set[tuple[int, str]] = set()
        self.shuffle_chunks = 0
        self.dropped_sends = 0
        self.tasks_done = 0
        self.late_ms_max = 0.0                      # how late a timer fired, worst case


class SimNode:
    def __init__(self, proc: SimProcess, index: int, node_id: str, slots: int) -> None:
        self.proc = proc
        self.index = index
        self.node_id = node_id
        self.slots = slots
        self.incarnation = os.urandom(4).hex()
        self.control: zmq.Socket = None  # type: ignore[assignment]
        self.task: zmq.Socket = None  # type: ignore[assignment]
        self.events: zmq.Socket = None  # type: ignore[assignment]
        self.endpoints: dict[str, str] = {}
        self.queue: deque[tuple[str, int, int, int]] = deque()   # (job, task, attempt, length)
        self.free = list(range(slots))
        self.unflushed: list[list[list[int]]] = [[] for _ in range(slots)]
        self.tasks_done = 0
        self.seen_seqs: set[int] = set()
        self.job: dict[str, Any] | None = None
        self.pushes: list[set[str]] = [set() for _ in range(slots)]   # reducers per executor

    # ------------------------------------------------------------------ sending
    def to_master(self, msg: p.Message, *payload: Any) -> None:
        job = self.job
        peer = job["master"] if job else None
        if peer is None:
            return
        self.reply(peer, msg, *payload)

    def reply(self, peer: bytes, msg: p.Message, *payload: Any) -> None:
        frames = p.encode(msg, *payload)
        st = self.proc.stats
        st.msgs_out[msg.TYPE] += 1
        st.bytes_out[msg.TYPE] += sum(len(f) for f in frames)
        if not send_nowait(self.control, [peer, *frames]):
            st.dropped_sends += 1

    def publish(self, topic: bytes, msg: p.Message) -> None:
        send_nowait(self.events, p.encode_topic(topic, msg))
        if topic == p.TOPIC_HEARTBEAT:
            st = self.proc.stats
            st.msgs_out[msg.TYPE] += 1

    def heartbeat(self) -> None:
        self.publish(p.TOPIC_HEARTBEAT, p.Heartbeat(
            node_id=self.node_id, incarnation=self.incarnation, slots=self.slots,
            busy=self.slots - len(self.free), tasks_done=self.tasks_done,
            jobs=[self.job["job_id"]] if self.job else []))

    # ------------------------------------------------------------------ control
    def on_control(self, frames: list[Any]) -> None:
        peer = frames[0].bytes
        st = self.proc.stats
        try:
            msg, _ = p.decode(frames[1:])
        except p.ProtocolError as exc:  # type: ignore[attr-defined]
            st.msgs_in["undecodable:" + str(exc)[:40]] += 1
            return
        st.msgs_in[msg.TYPE] += 1
        st.bytes_in[msg.TYPE] += sum(len(f.buffer) for f in frames[1:])
        if isinstance(msg, ACKED):
            if msg.seq in self.seen_seqs:
                st.duplicates[msg.TYPE] += 1
            self.seen_seqs.add(msg.seq)
        if isinstance(msg, p.Hello):
            self.reply(peer, p.HelloReply(
                seq=msg.seq, node_id=self.node_id, name=f"sim{self.index}",
                incarnation=self.incarnation, pymr_version=__version__,
                unicode_version=UNICODE_VERSION, slots=self.slots,
                task_endpoint=self.endpoints["task"], shuffle_endpoint=self.endpoints["shuffle"],
                events_endpoint=self.endpoints["events"]))
        elif isinstance(msg, p.JobStart):
            if self.job is None or self.job["job_id"] != msg.job_id:
                mine = sorted(part for part, n in msg.partition_map.items()
                              if n == self.node_id)
                self.job = {"job_id": msg.job_id, "master": peer, "parts": mine,
                            "pmap": msg.partition_map, "num_tasks": -1,
                            "seen": {part: set() for part in mine},
                            "committed": {part: 0 for part in mine}, "complete": set(),
                            "flushes": 0, "epoch": msg.epoch}
            self.reply(peer, p.Ack(seq=msg.seq))
        elif isinstance(msg, p.Lease):
            pass
        elif isinstance(msg, p.FetchPartition):
            job = self.job
            if job is not None and msg.partition in job["parts"]:
                chunk = p.pack_chunk([b"p%06d" % msg.partition],
                                     [job["committed"][msg.partition]])
                self.reply(peer, p.PartitionData(job_id=msg.job_id, partition=msg.partition,
                                                 seq=0, last=True), chunk)
        elif isinstance(msg, ACKED):
            job = self.job
            if job is not None and msg.job_id == job["job_id"]:
                if isinstance(msg, p.Flush):
                    self.flush()
                elif isinstance(msg, p.Commit):
                    for output_id, tasks, manifest in msg.entries():
                        for part in manifest:
                            seen = job["seen"].get(part)
                            if seen is not None and output_id not in seen:
                                seen.add(output_id)
                                job["committed"][part] += len(tasks)
                    self.check_complete()
                elif isinstance(msg, p.JobUpdate):
                    # Partitions moved (the master lost a node): adopt the new map; a new
                    # partition is rebuilt from the commits the master re-sends for it.
                    if msg.epoch >= job["epoch"]:
                        job["epoch"] = msg.epoch
                        job["pmap"] = msg.partition_map
                        mine = sorted(part for part, n in msg.partition_map.items()
                                      if n == self.node_id)
                        for part in mine:
                            job["seen"].setdefault(part, set())
                            job["committed"].setdefault(part, 0)
                        for part in [x for x in job["seen"] if x not in mine]:
                            del job["seen"][part]
                            del job["committed"][part]
                            job["complete"].discard(part)
                        job["parts"] = mine
                        if msg.num_tasks >= 0:
                            job["num_tasks"] = msg.num_tasks
                        self.check_complete()
                elif isinstance(msg, p.DropOutput):
                    pass    # nothing staged: chunks are never sent
                elif isinstance(msg, p.InputComplete):
                    job["num_tasks"] = msg.num_tasks
                    self.check_complete()
                elif isinstance(msg, p.JobEnd):
                    self.job = None
                    self.queue.clear()
            self.reply(peer, p.Ack(seq=msg.seq))

    def check_complete(self) -> None:
        job = self.job
        if job is None or job["num_tasks"] < 0:
            return
        for part in job["parts"]:
            n = job["committed"][part]
            if part in job["complete"] or n < job["num_tasks"]:
                continue
            job["complete"].add(part)
            self.to_master(p.PartitionComplete(
                job_id=job["job_id"], node_id=self.node_id, partition=part, records=1,
                chunks=1, counters={"words": n}, key_types=["bytes"], value_types=["int"]))

    def flush(self) -> None:
        job = self.job
        assert job is not None
        st = self.proc.stats
        pmap = job["pmap"]
        for slot in range(self.slots):
            tasks = self.unflushed[slot]
            if not tasks:
                continue
            self.unflushed[slot] = []
            job["flushes"] += 1
            output_id = f"{self.node_id}.{slot}.{os.getpid()}.{job['flushes']}"
            manifest = {}
            pushes = self.pushes[slot]
            for part, reducer in pmap.items():
                crc = zlib.crc32(b"p%06d" % part)
                manifest[part] = [1, 1, crc]
                st.shuffle_chunks += 1
                if reducer not in pushes:
                    pushes.add(reducer)
                    st.shuffle_connections += 1
                st.shuffle_node_pairs.add((self.index, reducer))
            self.to_master(p.OutputDone(job_id=job["job_id"], node_id=self.node_id,
                                        output_id=output_id, tasks=tasks, manifest=manifest,
                                        counters={"words": len(tasks)}))

    # ------------------------------------------------------------------ tasks
    def pull_tasks(self) -> None:
        st = self.proc.stats
        while True:
            try:
                frames = self.task.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            msg, payload = p.decode(frames)
            st.msgs_in[msg.TYPE] += 1
            st.bytes_in[msg.TYPE] += sum(len(f.buffer) for f in frames)
            if isinstance(msg, p.MapTask) and self.job is not None:
                # Split bytes shipped by the master ride as the payload frame (path empty).
                length = msg.length if msg.path else sum(len(f.buffer) for f in payload)
                self.queue.append((msg.job_id, msg.task_id, msg.attempt, length))
        self.start_tasks()

    def start_tasks(self) -> None:
        proc = self.proc
        while self.free and self.queue:
            slot = self.free.pop()
            job_id, task_id, attempt, length = self.queue.popleft()
            due = time.monotonic() + proc.fixed_s + length * proc.per_byte_s
            heapq.heappush(proc.timers, (due, proc.next_timer_id(), self, slot,
                                         (job_id, task_id, attempt, length)))

    def task_done(self, slot: int, job_id: str, task_id: int, attempt: int, length: int) -> None:
        self.free.append(slot)
        self.tasks_done += 1
        self.proc.stats.tasks_done += 1
        if self.job is not None and self.job["job_id"] == job_id:
            self.unflushed[slot].append([task_id, attempt])
            self.to_master(p.TaskExecuted(job_id=job_id, node_id=self.node_id,
                                          task_id=task_id, attempt=attempt, nbytes=length))
            self.publish(p.TOPIC_PROGRESS, p.Progress(job_id=job_id, node_id=self.node_id,
                                                      task_id=task_id, attempt=attempt,
                                                      nbytes=length))
        self.start_tasks()


class SimProcess:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.key = ClusterKey(cfg["public"].encode(), cfg["secret"].encode())
        self.fixed_s = cfg["task_fixed_us"] / 1e6
        self.per_byte_s = cfg["cost_ns_per_byte"] / 1e9
        self.stats = Stats()
        self.timers: list[Any] = []
        self._timer_id = 0
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 16384)
        self.auth = Authenticator(self.ctx, self.key).start()
        self.nodes = [SimNode(self, i, f"sim{i:04d}-{os.urandom(2).hex()}", cfg["slots"])
                      for i in cfg["indices"]]
        self.by_sock: dict[zmq.Socket, tuple[SimNode, str]] = {}
        self.poller = zmq.Poller()
        host = "127.0.0.1"
        for n in self.nodes:
            n.control = make_socket(self.ctx, zmq.ROUTER, sndhwm=100_000, rcvhwm=100_000)
            n.task = make_socket(self.ctx, zmq.PULL, rcvhwm=4)
            n.events = make_socket(self.ctx, zmq.PUB, sndhwm=1000)
            n.endpoints = {
                "control": secure_bind(n.control, f"tcp://{host}:*", self.auth),
                "task": secure_bind(n.task, f"tcp://{host}:*", self.auth),
                "events": secure_bind(n.events, f"tcp://{host}:*", self.auth),
                # Never bound nor connected: shuffle traffic is counted, not sent.
                "shuffle": f"tcp://{host}:9/{n.node_id}",
            }
            for s, kind in ((n.control, "control"), (n.task, "task")):
                self.poller.register(s, zmq.POLLIN)
                self.by_sock[s] = (n, kind)
        self.stdin_fd = sys.stdin.fileno()
        self.poller.register(self.stdin_fd, zmq.POLLIN)
        interval = cfg.get("heartbeat_s", 1.0)
        self.heartbeat_s = interval
        now = time.monotonic()
        count = max(1, cfg.get("total_nodes", len(self.nodes)))
        self.hb: list[tuple[float, int]] = [
            (now + interval * (n.index % count) / count, k) for k, n in enumerate(self.nodes)]
        heapq.heapify(self.hb)

    def next_timer_id(self) -> int:
        self._timer_id += 1
        return self._timer_id

    def run(self) -> None:
        timers = self.timers
        hb = self.hb
        poll = self.poller.poll
        st = self.stats
        while True:
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                due, _, node, slot, t = heapq.heappop(timers)
                late = (now - due) * 1000
                if late > st.late_ms_max:
                    st.late_ms_max = late
                node.task_done(slot, *t)
            while hb and hb[0][0] <= now:
                due, k = heapq.heappop(hb)
                self.nodes[k].heartbeat()
                heapq.heappush(hb, (due + self.heartbeat_s, k))
            nxt = min(timers[0][0] if timers else now + 0.05, hb[0][0] if hb else now + 0.05)
            timeout = max(0, min(50, int((nxt - time.monotonic()) * 1000)))
            for sock, _ in poll(timeout):
                if sock == self.stdin_fd:
                    if not os.read(self.stdin_fd, 4096):
                        return
                    continue
                node, kind = self.by_sock[sock]
                if kind == "task":
                    node.pull_tasks()
                    continue
                for _ in range(10_000):
                    try:
                        frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    node.on_control(frames)

    def report(self) -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        st = self.stats
        return {
            "nodes": len(self.nodes), "msgs_in": dict(st.msgs_in), "bytes_in": dict(st.bytes_in),
            "msgs_out": dict(st.msgs_out), "bytes_out": dict(st.bytes_out),
            "duplicates": dict(st.duplicates), "shuffle_connections": st.shuffle_connections,
            "shuffle_node_pairs": len(st.shuffle_node_pairs), "shuffle_chunks": st.shuffle_chunks,
            "dropped_sends": st.dropped_sends, "tasks_done": st.tasks_done,
            "late_ms_max": round(st.late_ms_max, 2),
            "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mib": ru.ru_maxrss / 1024,
        }

    def close(self) -> None:
        self.auth.stop()
        self.ctx.destroy(linger=0)


def main() -> int:
    cfg = json.loads(sys.stdin.readline())
    sim = SimProcess(cfg)
    print(json.dumps({"pid": os.getpid(), "nodes": [n.endpoints["control"] for n in sim.nodes]}),
          flush=True)
    try:
        sim.run()
    finally:
        print(json.dumps(sim.report()), flush=True)
        sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
