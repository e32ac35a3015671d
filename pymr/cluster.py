"""The embedded local cluster: node daemons on 127.0.0.1 started by ``pymr job``.

They run the same daemon code as LAN nodes, in their own processes, with a
fresh cluster key per run, and stop when the job ends (also on error and
Ctrl-C), leaving no process behind.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass
from typing import Any

from .config import NodeOptions
from .errors import ClusterLost
from .security import ClusterKey

log = logging.getLogger(__name__)

#: How long an embedded node may take to start its executors and bind.
START_TIMEOUT_S = 60.0


def _node_main(opts: NodeOptions, public: bytes, secret: bytes, node_id: str, conn: Any,
               log_level: int) -> None:
    """Entry point of an embedded node process."""
    from .node import NodeDaemon

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the master's to handle
    logging.basicConfig(level=log_level, format="%(levelname)s node: %(message)s")
    daemon = NodeDaemon(opts, ClusterKey(public, secret), node_id=node_id)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    try:
        ep = daemon.start()
        conn.send({"control": ep.control})
        conn.close()
        daemon.run()
    finally:
        daemon.close()


@dataclass
class LocalNode:
    process: Any
    control: str


class LocalCluster:
    """Start N embedded nodes; ``close()`` stops them and reaps every process."""

    def __init__(self, nodes: int = 1, slots: int = 0, key: ClusterKey | None = None) -> None:
        self.key = key or ClusterKey.generate()
        self.count = nodes
        self.slots = slots or max(1, (os.cpu_count() or 1) // nodes)
        self.nodes: list[LocalNode] = []

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def control_endpoints(self) -> list[str]:
        return [n.control for n in self.nodes]

    def start(self) -> None:
        mp = multiprocessing.get_context("spawn")
        pending = []
        level = logging.getLogger().level or logging.WARNING
        try:
            for i in range(self.count):
                parent, child = mp.Pipe(duplex=False)
                opts = NodeOptions(name=f"local{i}", slots=self.slots, host="127.0.0.1",
                                   embedded=True)
                proc = mp.Process(target=_node_main, name=f"pymr-node-{i}",
                                  args=(opts, self.key.public, self.key.secret, f"local{i}",
                                        child, level))
                proc.start()
                child.close()
                pending.append((proc, parent))
            for proc, conn in pending:
                if not conn.poll(START_TIMEOUT_S):
                    raise ClusterLost("an embedded node did not start in time")
                try:
                    info = conn.recv()
                except EOFError as exc:
                    raise ClusterLost(f"an embedded node failed to start (exit code "
                                      f"{proc.exitcode}); run with --debug for details") from exc
                self.nodes.append(LocalNode(proc, info["control"]))
        except BaseException:
            for proc, _ in pending:
                if proc not in [n.process for n in self.nodes]:
                    self.nodes.append(LocalNode(proc, ""))
            self.close()
            raise

    def close(self) -> None:
        for n in self.nodes:
            if n.process.is_alive():
                n.process.terminate()
        for n in self.nodes:
            n.process.join(timeout=10)
            if n.process.is_alive():
                log.warning("embedded node %s did not stop; killing it", n.process.pid)
                n.process.kill()
                n.process.join(timeout=5)
        self.nodes = []
