"""The dashboard's bookkeeping, fed by hand: node states, job progress, errors, bounds."""

from __future__ import annotations

import threading

from pymr.dashboard import state as st
from pymr.dashboard.state import DashboardState
from pymr.net.status import Event, NodeStatus
from pymr.wire import protocol as p


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hello(node_id: str, name: str) -> p.HelloReply:
    return p.HelloReply(seq=1, node_id=node_id, name=name, incarnation="i",
                        pymr_version="0.1.0", unicode_version="15", slots=2,
                        task_endpoint="tcp://127.0.0.1:1", shuffle_endpoint="tcp://127.0.0.1:2",
                        events_endpoint="tcp://127.0.0.1:3")


def status(node_id: str, name: str, busy: int = 0) -> p.StatusReply:
    return p.StatusReply(seq=2, node_id=node_id, name=name, incarnation="i",
                         pymr_version="0.1.0", slots=2, busy=busy, tasks_done=7,
                         bytes_processed=1 << 20, uptime_s=60.0,
                         addresses=["tcp://127.0.0.1:7372"], cpu_percent=12.5,
                         mem_percent=40.0, mem_used=4 << 30, mem_total=10 << 30)


def answered(node_id: str, name: str, endpoint: str, busy: int = 0) -> NodeStatus:
    return NodeStatus(endpoint=endpoint, hello=hello(node_id, name),
                      status=status(node_id, name, busy))


def progress(job_id: str, number: int, elapsed: float, done: int, *, state: str = "running",
             phase: str = "map", total: int = 8, error: str = "") -> p.JobProgress:
    return p.JobProgress(job_id=job_id, job_name="wordcount", number=number, elapsed_s=elapsed,
                         state=state, phase=phase, inputs=["big.txt"], bytes_total=8 << 20,
                         bytes_done=done << 20, tasks_total=total, tasks_done=done,
                         tasks_committed=done // 2, partitions=4, nodes=["a", "b"],
                         error=error)


def by_name(s: DashboardState) -> dict[str, dict]:
    return {n["name"]: n for n in s.nodes_json()}


def test_nodes_up_busy_lost_and_unreachable() -> None:
    # Given one node that answers, one busy, and one that never answered,
    clock = Clock()
    s = DashboardState(fingerprint="f", clock=clock)
    s.on_probe([answered("a1", "alpha", "tcp://h1:1"), answered("b1", "beta", "tcp://h2:1", 1),
                NodeStatus(endpoint="tcp://h3:1", error="no answer in 1.5 s")])
    nodes = by_name(s)
    # then each has its state and the machine's figures from its status,
    assert nodes["alpha"]["state"] == "up" and nodes["beta"]["state"] == "busy"
    assert nodes["tcp://h3:1"]["state"] == "unreachable"
    assert nodes["tcp://h3:1"]["error"] == "no answer in 1.5 s"
    a = nodes["alpha"]
    assert (a["cpu_percent"], a["mem_percent"], a["mem_total"]) == (12.5, 40.0, 10 << 30)
    assert a["addresses"] == ["127.0.0.1:7372"] and a["version"] == "0.1.0"
    assert s.cluster_json()["reachable"] is True
    # when alpha keeps heartbeating and beta falls silent past the death timeout,
    clock.now += st.LOST_AFTER_S + 1
    s.on_event(Event("alpha", "hb", p.Heartbeat(node_id="a1", incarnation="i", slots=2, busy=2,
                                                tasks_done=9, bytes_processed=5 << 20,
                                                cpu_percent=99.0, mem_percent=50.0,
                                                mem_used=5 << 30, mem_total=10 << 30)))
    nodes = by_name(s)
    # then alpha is busy with its new figures, and beta is lost (it was seen before).
    assert nodes["alpha"]["state"] == "busy" and nodes["alpha"]["tasks_done"] == 9
    assert nodes["alpha"]["cpu_percent"] == 99.0
    assert nodes["alpha"]["bytes_processed"] == 5 << 20
    assert nodes["beta"]["state"] == "lost"
    assert nodes["alpha"]["uptime_s"] == 60.0 + st.LOST_AFTER_S + 1


def test_the_cluster_says_plainly_when_it_cannot_be_reached() -> None:
    clock = Clock()
    s = DashboardState(clock=clock)
    s.set_source("mDNS on 192.168.1.5", searched=False)
    assert s.cluster_json()["reachable"] is None        # still looking
    s.set_source("mDNS on 192.168.1.5", searched=True)
    c = s.cluster_json()
    assert c["reachable"] is False and "cannot be reached: no node found" in c["text"]
    s.on_probe([NodeStatus(endpoint="tcp://h1:1", error="no answer")])
    c = s.cluster_json()
    assert c["reachable"] is False and "none of the 1 node(s) answers" in c["text"]


def test_job_progress_copies_are_dropped_and_history_gives_throughput_and_eta() -> None:
    clock = Clock()
    s = DashboardState(clock=clock)
    # Given progress relayed by two nodes (each message twice) over 4 s of the job,
    for number in range(1, 9):
        msg = progress("j1", number, number * 0.5, number if number < 8 else 7)
        s.on_event(Event("a", "job", msg))
        s.on_event(Event("b", "job", msg))
        clock.now += 0.5
    s.on_event(Event("a", "job", progress("j1", 3, 1.5, 3)))   # a late one
    job = s.jobs_json()[0]
    # then the latest counts, a throughput point per half second, and an estimate,
    assert (job["name"], job["state"], job["phase"]) == ("wordcount", "running", "map")
    assert (job["tasks_done"], job["tasks_total"]) == (7, 8)
    assert job["phases"]["map"] == {"done": 7, "total": 8, "fraction": 0.875}
    assert job["progress"] == round(0.875 * 0.7 + 3 / 8 * 0.1, 4)
    assert job["phases"]["shuffle"]["done"] == 3
    assert [t for t, _ in job["throughput"]] == [x / 2 for x in range(2, 9)]
    assert [r for _, r in job["throughput"]] == [2 << 20] * 6 + [0]   # 2 MiB/s, then none
    assert job["eta_s"] is not None and job["eta_s"] > 0
    assert 0 < job["progress"] < 1
    # when the master says it is done,
    s.on_event(Event("a", "job", progress("j1", 9, 4.5, 8, state="done", phase="done")))
    job = s.jobs_json()[0]
    # then every phase is full and one event says so.
    assert job["state"] == "done" and job["progress"] == 1.0 and job["eta_s"] is None
    assert len(job["throughput"]) == 7                  # the end is not a drop to zero
    assert all(ph["fraction"] == 1.0 for ph in job["phases"].values())
    assert [e["text"] for e in s.events_json()["events"]] == ["job wordcount done in 4.5 s"]


def test_a_task_error_merges_the_nodes_event_and_the_masters_notice() -> None:
    s = DashboardState(clock=Clock())
    s.on_event(Event("alpha", "error", p.ErrorEvent(
        job_id="j1", node_id="a1", task_id=3, attempt=1, exc_type="ValueError",
        message="boom", traceback="Traceback (whole)\n  engine frames\nValueError: boom\n")))
    for relay in ("alpha", "beta"):   # every node relays the master's notice
        s.on_event(Event(relay, "progress", p.JobNotice(
            job_id="j1", text="task 3 attempt 1 failed on alpha: ValueError: boom",
            task_id=3, attempt=1, failed_on="alpha", where="big.txt:42",
            exc_type="ValueError", message="boom",
            traceback="  File \"job.py\", line 5, in map\nValueError: boom\n")))
    doc = s.events_json()
    assert len(doc["errors"]) == 1
    e = doc["errors"][0]
    assert (e["node"], e["task_id"], e["attempt"], e["where"]) == ("alpha", 3, 1, "big.txt:42")
    assert e["exc_type"] == "ValueError" and e["message"] == "boom"
    assert 'File "job.py", line 5' in e["traceback"]      # the job's own frames win
    notices = [x for x in doc["events"] if x["kind"] == "notice"]
    assert len(notices) == 1                               # shown once, not once per node


def test_history_is_bounded() -> None:
    clock = Clock()
    s = DashboardState(clock=clock)
    for i in range(st.MAX_EVENTS + 50):
        s.on_event(Event("a", "progress", p.Progress(job_id="j", node_id="a1", task_id=i,
                                                     attempt=1, nbytes=10)))
    for i in range(st.MAX_ERRORS + 10):
        s.on_event(Event("a", "error", p.ErrorEvent(job_id="j", node_id="a1", task_id=i,
                                                    attempt=1, exc_type="E", message="m",
                                                    traceback="x" * (st.TRACEBACK_MAX * 2))))
    for i in range(st.MAX_FINISHED_JOBS + 5):
        s.on_event(Event("a", "job", progress(f"done{i}", 1, 1.0, 8, state="done")))
    doc = s.events_json()
    assert len(doc["events"]) == st.MAX_EVENTS
    assert len(doc["errors"]) == st.MAX_ERRORS
    assert doc["errors"][0]["task_id"] == st.MAX_ERRORS + 9        # newest first
    assert len(doc["errors"][0]["traceback"]) <= st.TRACEBACK_MAX + 3
    jobs = s.jobs_json()
    assert sum(1 for j in jobs if j["state"] == "done") == st.MAX_FINISHED_JOBS
    assert any(j["job_id"] == "j" and j["state"] == "running" for j in jobs)


def test_a_job_whose_master_went_silent_is_gone() -> None:
    clock = Clock()
    s = DashboardState(clock=clock)
    s.on_event(Event("a", "job", progress("j1", 1, 0.5, 1)))
    clock.now += st.JOB_SILENT_S + 1
    s.tick()
    assert s.jobs_json()[0]["state"] == "gone"


def test_wait_change_wakes_on_a_change_and_on_release() -> None:
    s = DashboardState(clock=Clock())
    version = s.version
    t = threading.Timer(0.05, lambda: s.set_source("x", True))
    t.start()
    assert s.wait_change(version, 10.0) != version
    t.join()
    version = s.version
    t = threading.Timer(0.05, s.wake)
    t.start()
    assert s.wait_change(version, 10.0) == version        # released, not timed out
    t.join()
