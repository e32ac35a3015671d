"""Fault injection for the recovery tests (tests/integration/test_faults.py) and
bench/recovery.py: a master in its own process that pauses at observed events, and
SIGKILL / SIGSTOP / CPU-quota faults on the nodes of a ``LocalCluster``.

The master runs in a subprocess (``python -c "...master_main()"``, the cluster's
endpoints and key on stdin, never in argv) so that every test can bound its wait by
killing it, and so that the master itself can be killed mid-job. It reports what its
reporter sees as JSON lines on stdout; at each report it waits for one line on stdin
before going on, so a fault injected in a hook lands at that exact point of the master's
progress (after the k-th executed task, at the start of the reduce phase, after the
consumer took k records ...), the same as if the hook ran inside the master. No sleep
decides when a fault happens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import helpers

ROOT = Path(__file__).resolve().parent.parent

#: Kinds of report the master pauses at by default (all of them).
PAUSE_ALL = ("start", "advance", "phase", "event", "records")


# ====================================================================== master side


def master_main() -> int:
    """Entry point of the master subprocess; configuration as one JSON line on stdin."""
    import faulthandler
    import logging

    from pymr.config import JobOptions
    from pymr.engine.inputs import resolve_inputs
    from pymr.engine.output import write_tsv
    from pymr.errors import PymrError
    from pymr.jobs import JobSpec, builtin_spec
    from pymr.net.security import ClusterKey
    from pymr.runtime.runner import run_job

    faulthandler.register(signal.SIGUSR1)  # a hung master shows where it waits
    cfg = json.loads(sys.stdin.readline())
    logging.basicConfig(level=cfg.get("log_level", logging.WARNING),
                        format="master: %(levelname)s %(name)s: %(message)s")
    pause_on = set(cfg.get("pause_on", PAUSE_ALL))
    pause_records = set(cfg.get("pause_records", []))
    out = sys.stdout
    stdin = sys.stdin

    def emit(obj: dict[str, Any]) -> None:
        obj["at"] = time.monotonic()
        out.write(json.dumps(obj) + "\n")
        out.flush()
        if obj["t"] in pause_on:
            stdin.readline()  # "go" (EOF when the test is gone: go on)

    class PipeReporter:
        def __init__(self) -> None:
            self.advances = 0

        def start(self, total_bytes: int, nodes: list[str]) -> None:
            emit({"t": "start", "total": total_bytes, "nodes": nodes})

        def advance(self, nbytes: int) -> None:
            self.advances += 1
            emit({"t": "advance", "n": self.advances, "nbytes": nbytes})

        def phase(self, name: str) -> None:
            emit({"t": "phase", "name": name})

        def event(self, text: str) -> None:
            emit({"t": "event", "text": text})

    calls = 0

    def consume(records: Any, summary: Any) -> None:
        nonlocal calls
        calls += 1
        n = 0
        tmp = cfg["output"] + ".part"
        with open(tmp, "wb") as f:
            if cfg.get("lines"):  # each record's TSV line, formatted by its reducer
                for _, line in records.tsv_lines():
                    f.write(line)
                    n += 1
                    if n in pause_records:
                        emit({"t": "records", "n": n})
            for key, value in () if cfg.get("lines") else records:
                write_tsv([(key, value)], f)
                n += 1
                if n in pause_records:
                    emit({"t": "records", "n": n})
        os.replace(tmp, cfg["output"])

    if cfg.get("job_source"):
        spec = JobSpec.from_source(cfg.get("job_name", "custom"), cfg["job_source"])
    else:
        spec = builtin_spec(cfg.get("job_name", "wordcount"))
    key = ClusterKey(cfg["public"].encode(), cfg["secret"].encode())
    if cfg.get("lose_partition_data"):
        _lose_partition_data(cfg["lose_partition_data"], cfg.get("fetch_retry_s"))
    try:
        summary = run_job(spec, resolve_inputs(cfg["inputs"]), JobOptions(**cfg["options"]),
                          consume, endpoints=cfg["endpoints"], key=key,
                          reporter=PipeReporter())
    except PymrError as exc:
        import traceback

        err = {"t": "error", "type": type(exc).__name__, "message": str(exc),
               "consumed": calls, "master_traceback": traceback.format_exc()}
        for attr in ("node", "task", "attempt", "exc_type", "traceback"):
            if hasattr(exc, attr):
                err[attr] = getattr(exc, attr)
        emit(err)
        return 1
    emit({"t": "done", "summary": dataclasses.asdict(summary), "consumed": calls})
    return 0


MASTER_SCRIPT = "import sys; from tests.faults_helpers import master_main; " \
                "sys.exit(master_main())"


def _lose_partition_data(count: int, retry_s: float | None) -> None:
    """The master loses the first ``count`` PartitionData replies (as a connection reset
    loses what its socket still queued); ``retry_s``: how long it waits before asking
    again."""
    from pymr.engine import fetch
    from pymr.runtime import master
    from pymr.wire import protocol as p

    if retry_s is not None:
        fetch.FETCH_RETRY_S = retry_s
    handle = master.MASTER_HANDLERS[p.PartitionData]
    left = [count]

    def losing(m: Any, link: Any, msg: Any, payload: list[Any]) -> None:
        if left[0] > 0:
            left[0] -= 1
            return
        handle(m, link, msg, payload)

    master.MASTER_HANDLERS[p.PartitionData] = losing


# ====================================================================== test side


class Hooks:
    """What the master reported, and faults to inject at given reports (each fires once).

    Hooks run in the test process while the master waits for them, so a hook's fault
    happens at that point of the master's progress.
    """

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.started_at: float | None = None     # master clock at its reporter's start()
        self.advances = 0
        self.bytes_done = 0
        self.total = 0
        self.nodes: list[str] = []
        self.phases: dict[str, float] = {}       # name -> when (test clock)
        self.events: list[tuple[float, str]] = []
        self._hooks: list[tuple[Callable[[dict[str, Any]], bool],
                                Callable[[dict[str, Any]], None]]] = []

    # ---------------------------------------------------------------- registering
    def when(self, match: Callable[[dict[str, Any]], bool],
             fn: Callable[[dict[str, Any]], None]) -> None:
        self._hooks.append((match, fn))

    def at_advance(self, k: int, fn: Callable[[], None]) -> None:
        """After the master saw the k-th executed task (1-based)."""
        self.when(lambda x: x["t"] == "advance" and x["n"] >= k, lambda x: fn())

    def at_fraction(self, fraction: float, fn: Callable[[], None]) -> None:
        """When executed tasks cover ``fraction`` of the input bytes (counting re-runs)."""
        self.when(lambda x: x["t"] == "advance" and self.bytes_done >= fraction * self.total,
                  lambda x: fn())

    def at_start(self, fn: Callable[[], None]) -> None:
        """When the job started on every node, before the first task is dispatched."""
        self.when(lambda x: x["t"] == "start", lambda x: fn())

    def at_phase(self, name: str, fn: Callable[[], None]) -> None:
        self.when(lambda x: x["t"] == "phase" and x["name"] == name, lambda x: fn())

    def at_event(self, text: str, fn: Callable[[], None]) -> None:
        self.when(lambda x: x["t"] == "event" and text in x["text"], lambda x: fn())

    def at_records(self, k: int, fn: Callable[[], None]) -> None:
        """After the consumer took k records (list k in ``pause_records``)."""
        self.when(lambda x: x["t"] == "records" and x["n"] >= k, lambda x: fn())

    # ---------------------------------------------------------------- feeding
    def feed(self, line: dict[str, Any], now: float) -> None:
        self.lines.append(line)
        kind = line["t"]
        if kind == "start":
            self.started_at = line["at"]
            self.total = line["total"]
            self.nodes = line["nodes"]
        elif kind == "advance":
            self.advances = line["n"]
            self.bytes_done += line["nbytes"]
        elif kind == "phase":
            self.phases[line["name"]] = now
        elif kind == "event":
            self.events.append((now, line["text"]))
        for hook in list(self._hooks):
            match, fn = hook
            if match(line):
                self._hooks.remove(hook)
                fn(line)

    def event_texts(self) -> list[str]:
        return [text for _, text in self.events]

    def first_event(self, text: str) -> float | None:
        return next((t for t, x in self.events if text in x), None)

    def tail(self, n: int = 15) -> str:
        return "\n".join(json.dumps(x)[:300] for x in self.lines[-n:])


@dataclass
class Outcome:
    """How a master process ended."""

    kind: str                               # "done", "error", "killed"
    returncode: int | None
    elapsed_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] = field(default_factory=dict)
    consumed: int = 0
    stderr: str = ""


class MasterHung(AssertionError):
    """The master did not finish within the test's bound."""


class MasterProcess:
    """One job's master in a subprocess, driven line by line."""

    def __init__(self, cluster: Any, inputs: list[Path | str], output: Path, *,
                 options: dict[str, Any] | None = None, job_source: str | None = None,
                 job_name: str = "wordcount", pause_on: Iterable[str] = PAUSE_ALL,
                 pause_records: Iterable[int] = (), endpoints: list[str] | None = None,
                 log_level: int | None = None, lines: bool = False,
                 lose_partition_data: int = 0, fetch_retry_s: float | None = None) -> None:
        self.output = Path(output)
        self.config: dict[str, Any] = {
            "endpoints": endpoints if endpoints is not None else cluster.control_endpoints,
            "public": cluster.key.public.decode(), "secret": cluster.key.secret.decode(),
            "inputs": [str(x) for x in inputs], "output": str(self.output),
            "options": options or {}, "job_source": job_source, "job_name": job_name,
            "pause_on": list(pause_on), "pause_records": sorted(pause_records),
            "lines": lines, "lose_partition_data": lose_partition_data,
            "fetch_retry_s": fetch_retry_s}
        if log_level is not None:
            self.config["log_level"] = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._buf = b""
        self.started_at = 0.0

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> MasterProcess:
        env = helpers.subprocess_env()
        self._stderr = tempfile.TemporaryFile()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-c", MASTER_SCRIPT], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, cwd=str(ROOT))
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(self.config).encode() + b"\n")
        self.proc.stdin.flush()
        return self

    def __enter__(self) -> MasterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        """Kill if still running, reap, close the pipes."""
        if self.proc is None:
            return
        self.kill()
        try:
            self.proc.wait(timeout=10)
        finally:
            for f in (self.proc.stdin, self.proc.stdout):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass  # broken pipe on the flush of a killed reader
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None

    def stderr_text(self, limit: int = 4000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        data = self._stderr.read()
        return data[-limit:].decode("utf-8", "replace")

    # ---------------------------------------------------------------- driving
    def _read_line(self, deadline: float) -> dict[str, Any] | None:
        """The next report, or None at EOF; raises MasterHung past the deadline."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MasterHung("deadline passed")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _dump_stacks(self) -> None:
        """Ask a hung master for its threads' stacks (faulthandler, on its stderr)."""
        assert self.proc is not None
        if self.proc.poll() is not None or self._stderr is None:
            return
        before = os.fstat(self._stderr.fileno()).st_size
        try:
            os.kill(self.proc.pid, signal.SIGUSR1)
        except ProcessLookupError:
            return
        proc, stderr = self.proc, self._stderr

        def size() -> int:
            return os.fstat(stderr.fileno()).st_size

        if not helpers.wait_until(lambda: proc.poll() is not None or size() > before, 2.0,
                                  interval_s=0.02):
            return
        # The dump is written in pieces (diagnostics only): until its size holds still.
        sizes = [-1]

        def settled() -> bool:
            sizes.append(size())
            return sizes[-1] == sizes[-2]

        helpers.wait_until(settled, 1.0, interval_s=0.1)

    def _go(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the master was killed by the hook

    def run(self, hooks: Hooks, timeout_s: float) -> Outcome:
        """Feed reports to ``hooks`` until the master ends; kill it past ``timeout_s``."""
        assert self.proc is not None
        deadline = self.started_at + timeout_s
        pause_on = set(self.config["pause_on"])
        final: dict[str, Any] | None = None
        try:
            while True:
                line = self._read_line(deadline)
                if line is None:
                    break
                hooks.feed(line, time.monotonic())
                if line["t"] in ("done", "error"):
                    final = line
                if line["t"] in pause_on:
                    self._go()
        except MasterHung:
            self._dump_stacks()
            self.kill()
            self.proc.wait(timeout=10)
            raise MasterHung(
                f"the master did not finish within {timeout_s:.0f} s; last reports:\n"
                f"{hooks.tail()}\nmaster stderr:\n{self.stderr_text()}") from None
        code = self.proc.wait(timeout=10)
        elapsed = time.monotonic() - self.started_at
        if final is None:
            return Outcome("killed", code, elapsed, stderr=self.stderr_text())
        return Outcome(final["t"], code, elapsed, summary=final.get("summary", {}),
                       error=final if final["t"] == "error" else {},
                       consumed=final.get("consumed", 0), stderr=self.stderr_text())


def run_master(cluster: Any, inputs: list[Path | str], output: Path, hooks: Hooks | None = None,
               *, timeout_s: float = 90.0, **kwargs: Any) -> Outcome:
    """Start a master, drive it to its end (bounded), reap it."""
    hooks = hooks or Hooks()
    with MasterProcess(cluster, inputs, output, **kwargs) as master:
        return master.run(hooks, timeout_s)


# ====================================================================== heartbeats


class HeartbeatWatch:
    """Follows the nodes' heartbeats (their events PUB), as an observer does."""

    def __init__(self, cluster: Any) -> None:
        from pymr.net.status import probe

        found = probe([(ep, None) for ep in cluster.control_endpoints], cluster.key,
                      timeout_s=5.0, want_status=False)
        missing = [st.endpoint for st in found if st.hello is None]
        if missing:
            raise AssertionError(f"nodes did not answer a hello: {missing}")
        self.key = cluster.key
        self.events = {st.hello.name: st.hello.events_endpoint
                       for st in found if st.hello is not None}

    def wait_beats(self, count: int, timeout_s: float) -> None:
        """Wait until every node has published ``count`` heartbeats from now on (a fresh
        subscription each time: heartbeats queued earlier do not count)."""
        from pymr.net.status import EventStream
        from pymr.wire import protocol as p

        stream = EventStream(self.key, topics=(p.TOPIC_HEARTBEAT,))
        try:
            for name, endpoint in self.events.items():
                stream.add(name, endpoint)
            seen = dict.fromkeys(self.events, 0)
            deadline = time.monotonic() + timeout_s
            while min(seen.values()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"heartbeats seen in {timeout_s:g} s: {seen}")
                for event in stream.events(left):
                    seen[event.node] = seen.get(event.node, 0) + 1
                    if min(seen.values()) >= count:
                        break
        finally:
            stream.close()

    def close(self) -> None:
        pass

    def __enter__(self) -> HeartbeatWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ====================================================================== node faults


class RunDirSweeper:
    """Removes the run directories (``$TMPDIR/pymr-node-<node id>-*``: the executors' ipc
    socket) that nodes killed with SIGKILL leave behind; a node that stops normally removes
    its own. Learn the node ids while every node is alive, sweep after the cluster closed."""

    def __init__(self, cluster: Any) -> None:
        from pymr.net.status import probe

        found = probe([(ep, None) for ep in cluster.control_endpoints], cluster.key,
                      timeout_s=5.0, want_status=False)
        self.node_ids = [st.hello.node_id for st in found if st.hello is not None]

    def sweep(self) -> list[str]:
        import glob
        import shutil

        removed = []
        for node_id in self.node_ids:
            pattern = os.path.join(tempfile.gettempdir(), f"pymr-node-{node_id}-*")
            for path in glob.glob(pattern):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed



_stat = helpers._stat_fields


def descendants(pid: int) -> list[int]:
    """Live (non-zombie) processes below ``pid``."""
    return helpers.descendants_of(pid, live=True)


def node_pids(cluster: Any, index: int) -> list[int]:
    """The node daemon's pid, then every process below it (executors, resource tracker)."""
    pid = cluster.nodes[index].process.pid
    return [pid, *descendants(pid)]


def executor_pids(cluster: Any, index: int) -> list[int]:
    """The node's live executors."""
    return helpers.executor_children(cluster.nodes[index].process.pid)


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_node(cluster: Any, index: int, *, daemon_only: bool = False) -> list[int]:
    """SIGKILL a node as if its machine died (daemon and executors at once)."""
    pids = node_pids(cluster, index)
    if daemon_only:
        pids = pids[:1]
    signal_all(pids, signal.SIGKILL)
    return pids


def wait_gone(pids: Iterable[int], timeout_s: float) -> list[int]:
    """Wait (polling /proc) until no pid is alive; return those still alive."""
    pids = list(pids)

    def left() -> list[int]:
        return [p for p in pids if alive(p)]

    helpers.wait_until(lambda: not left(), timeout_s)
    return left()


class Freezer:
    """SIGSTOP processes; every stopped process gets SIGCONT on ``thaw`` or exit."""

    def __init__(self) -> None:
        self.stopped: list[int] = []

    def freeze(self, pids: Iterable[int]) -> None:
        pids = list(pids)
        self.stopped.extend(pids)
        signal_all(pids, signal.SIGSTOP)

    def thaw(self) -> None:
        pids, self.stopped = self.stopped, []
        signal_all(pids, signal.SIGCONT)

    def __enter__(self) -> Freezer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.thaw()


# ---------------------------------------------------------------------- slow node

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")


def cgroup_cpu_available() -> bool:
    if not (CGROUP_CPU / "cgroup.procs").exists() or os.geteuid() != 0:
        return False
    probe = CGROUP_CPU / f"pymr-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


def _cpu_cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "cpu" in controllers.split(","):
                return path
    return "/"


class SlowNode:
    """Make one node ``factor`` times slower than its fair CPU share, for a bounded time.

    With cgroup v1 (``/sys/fs/cgroup/cpu``, as root): the node's processes go into a new
    cgroup whose ``cpu.cfs_quota_us`` is ``share / factor`` of one CPU; executors started
    later inherit it. Otherwise a thread duty-cycles SIGSTOP / SIGCONT (stopped
    ``1 - 1/factor`` of each period). Leaving the block restores everything: processes go
    back to their cgroup (which is removed), stopped processes get SIGCONT.
    """

    PERIOD_US = 100_000

    def __init__(self, cluster: Any, index: int, factor: float = 10.0, *,
                 share_cpus: float = 1.0, method: str = "auto",
                 max_duration_s: float = 300.0) -> None:
        self.cluster = cluster
        self.index = index
        self.factor = factor
        self.share_cpus = share_cpus
        self.method = method
        if method == "auto":
            self.method = "cgroup" if cgroup_cpu_available() else "sigstop"
        self.max_duration_s = max_duration_s
        self.cgroup: Path | None = None
        self.home: Path = CGROUP_CPU
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frozen = Freezer()
        self._lock = threading.Lock()

    def __enter__(self) -> SlowNode:
        pids = node_pids(self.cluster, self.index)
        if self.method == "cgroup":
            self.home = CGROUP_CPU / _cpu_cgroup_of(pids[0]).lstrip("/")
            self.cgroup = CGROUP_CPU / f"pymr-slow-{uuid.uuid4().hex[:8]}"
            self.cgroup.mkdir()
            quota = max(1000, int(self.PERIOD_US * self.share_cpus / self.factor))
            (self.cgroup / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (self.cgroup / "cpu.cfs_quota_us").write_text(str(quota))
            for pid in pids:
                self._move(pid, self.cgroup)
        else:
            self._thread = threading.Thread(target=self._duty_cycle, name="slow-node",
                                            daemon=True)
            self._thread.start()
        return self

    @staticmethod
    def _move(pid: int, group: Path) -> None:
        try:
            (group / "cgroup.procs").write_text(str(pid))
        except (ProcessLookupError, OSError):
            pass  # gone already

    def _duty_cycle(self) -> None:
        period = self.PERIOD_US / 1e6
        run_s = period / self.factor
        end = time.monotonic() + self.max_duration_s
        while not self._stop.is_set() and time.monotonic() < end:
            with self._lock:
                self._frozen.freeze(node_pids(self.cluster, self.index))
            self._stop.wait(period - run_s)
            with self._lock:
                self._frozen.thaw()
            self._stop.wait(run_s)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self._frozen.thaw()
        if self.cgroup is not None:
            for _ in range(3):
                try:
                    left = [int(x) for x in (self.cgroup / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not left:
                    break
                for pid in left:
                    self._move(pid, self.home)
            try:
                self.cgroup.rmdir()
            except OSError:
                pass
