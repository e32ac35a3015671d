"""The embedded local cluster: node daemons on 127.0.0.1 started by ``pymr job``.

They run the same daemon code as LAN nodes, in their own processes (started as
``python -m pymr.runtime._embedded_node`` so a caller's script is never re-imported),
with a fresh cluster key per run handed over on stdin (never in argv), and stop
when the job ends, also on error and Ctrl-C, leaving no process behind.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import subprocess
import sys
import time
from dataclasses import dataclass

from ..errors import ClusterLost
from ..net.security import ClusterKey

log = logging.getLogger(__name__)

#: How long an embedded node may take to start its executors and bind.
START_TIMEOUT_S = 60.0
#: How long a node may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """``proc.wait(timeout)`` that returns as soon as the process ends.

    ``Popen.wait`` with a timeout sleeps in steps of up to 50 ms; every embedded job waits
    for its node to stop, so it paid ~25 ms on average. A pidfd (Linux 5.3+) is readable
    the moment the process exits; without one this falls back to ``Popen.wait``."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):   # no pidfd here, or already reaped
        return proc.wait(timeout=timeout)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait(timeout=timeout)


def _child_env() -> dict[str, str]:
    """The environment of a node process: this very pymr importable, whatever the cwd."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class LocalNode:
    process: subprocess.Popen[bytes]
    control: str


class LocalCluster:
    """Start N embedded nodes; ``close()`` stops them and reaps every process."""

    def __init__(self, nodes: int = 1, slots: int = 0, key: ClusterKey | None = None, *,
                 retain_memory: int | None = None,
                 lease_timeout_s: float | None = None, builtin_only: bool = False,
                 names: list[str] | None = None) -> None:
        self.key = key or ClusterKey.generate()
        #: node names (default local0, local1, ...): tests and screenshots name them
        self.names = list(names or [])
        # Node options tests and benchmarks tune (None: the node's default).
        self.node_options = {k: v for k, v in (("retain_memory", retain_memory),
                                               ("lease_timeout_s", lease_timeout_s),
                                               ("builtin_only", builtin_only or None))
                             if v is not None}
        self.count = nodes
        self.slots = slots or max(1, (os.cpu_count() or 1) // nodes)
        self.nodes: list[LocalNode] = []
        self._launched: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LocalCluster:
        if self._launched:
            self.wait_started()
        elif not self.nodes:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def control_endpoints(self) -> list[str]:
        return [n.control for n in self.nodes]

    def start(self) -> None:
        """Launch the nodes and wait until each has bound its sockets."""
        self.launch()
        self.wait_started()

    def launch(self) -> None:
        """Start the node processes without waiting for them: a caller can do its own
        start-up (imports, reading the input) while they boot. ``wait_started`` next."""
        level = logging.getLogger().getEffectiveLevel()
        procs = self._launched
        try:
            for i in range(self.count):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pymr.runtime._embedded_node"], env=_child_env(),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
                procs.append(proc)
                name = self.names[i] if i < len(self.names) else f"local{i}"
                config = {"name": name, "node_id": f"local{i}-{secrets.token_hex(3)}",
                          "slots": self.slots,
                          "public": self.key.public.decode(), "secret": self.key.secret.decode(),
                          "log_level": level, **self.node_options}
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(config).encode() + b"\n")
                proc.stdin.close()
        except BaseException:
            self.close()
            raise

    def wait_started(self) -> None:
        """Read each launched node's endpoint (it has bound and proved its security)."""
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            for proc in self._launched:
                line = self._read_line(proc, deadline)
                info = json.loads(line)
                self.nodes.append(LocalNode(proc, info["control"]))
            self._launched = []
        except BaseException:
            self.close()
            raise

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until every node's executors are started (nodes answer before that)."""
        import zmq

        from ..net.security import secure_connect
        from ..net.transport import make_socket
        from ..wire import protocol as p

        ctx = zmq.Context()
        try:
            deadline = time.monotonic() + timeout_s
            for node in self.nodes:
                sock = make_socket(ctx, zmq.DEALER)
                sock.immediate = False
                secure_connect(sock, node.control, self.key)
                try:
                    while True:
                        sock.send_multipart(p.encode(p.StatusRequest(seq=1)))
                        if sock.poll(200):
                            msg, _ = p.decode(sock.recv_multipart())
                            if isinstance(msg, p.StatusReply) and msg.ready >= msg.slots:
                                break
                        if time.monotonic() > deadline:
                            raise ClusterLost("embedded nodes did not start their executors")
                finally:
                    sock.close(linger=0)
        finally:
            ctx.destroy(linger=0)

    @staticmethod
    def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterLost("an embedded node did not start in time")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise ClusterLost(f"an embedded node failed to start (exit code "
                                      f"{proc.wait()}); run with --debug for details")
                buf += chunk
        return buf

    def close(self) -> None:
        # Launched and not (or not all) waited for: stop those too.
        known = {id(n.process) for n in self.nodes}
        self.nodes.extend(LocalNode(pr, "") for pr in self._launched if id(pr) not in known)
        self._launched = []
        for n in self.nodes:
            if n.process.poll() is None:
                n.process.terminate()
        for n in self.nodes:
            try:
                wait_exit(n.process, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("embedded node %s did not stop; killing it", n.process.pid)
                n.process.kill()
                n.process.wait(timeout=5)
            if n.process.stdout is not None:
                n.process.stdout.close()
        self.nodes = []
