"""``python -m pymr.runtime._embedded_node``: one node of the embedded cluster.

Reads its configuration (with the run's fresh key) as one JSON line on stdin,
prints its control endpoint as one JSON line on stdout, serves until SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys


def main() -> int:
    from ._exec_entry import exec_endpoint, make_run_dir, spawn_executors

    # Ctrl-C and a closed terminal (SIGHUP to the whole group) are the job process's to
    # handle: it cancels the job and stops this node.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = json.loads(sys.stdin.readline())
    # Executors first, before the heavy imports: their start-up overlaps ours.
    run_dir = make_run_dir(config["node_id"])
    procs = spawn_executors(config["slots"], config["node_id"], exec_endpoint(run_dir),
                            config["public"].encode(), config["secret"].encode(), 5,
                            config.get("log_level", logging.WARNING), method="fork")

    from ..config import NodeOptions
    from ..net.security import ClusterKey
    from .node import NodeDaemon

    logging.basicConfig(level=config.get("log_level", logging.WARNING),
                        format="pymr node: %(levelname)s: %(message)s")
    opts = NodeOptions(name=config["name"], slots=config["slots"], host="127.0.0.1",
                       embedded=True, read_paths=True,
                       **{k: config[k] for k in ("retain_memory", "lease_timeout_s",
                                                 "builtin_only") if k in config})
    key = ClusterKey(config["public"].encode(), config["secret"].encode())
    daemon = NodeDaemon(opts, key, node_id=config["node_id"], run_dir=run_dir, executors=procs)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    try:
        endpoints = daemon.start()
        sys.stdout.write(json.dumps({"control": endpoints.control}) + "\n")
        sys.stdout.flush()
        daemon.run()
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    code = main()
    # The daemon closed everything it held (executors joined, sockets, run dir): skip the
    # interpreter's teardown, which the job process waits for (~25 ms of every job).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
