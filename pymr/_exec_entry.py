"""A light spawn target: the daemon can start executors before importing zmq, so
their start-up (imports) overlaps the daemon's own."""

from __future__ import annotations

from typing import Any


def run_executor(*args: Any) -> None:
    from .executor import executor_main

    executor_main(*args)


#: sockaddr_un.sun_path holds 108 bytes; leave room for the terminating NUL.
_IPC_PATH_MAX = 100


def make_run_dir(node_id: str) -> str:
    """A private directory for one node run's local socket and temp files."""
    import os
    import tempfile

    path = tempfile.mkdtemp(prefix=f"pymr-node-{node_id}-")
    os.chmod(path, 0o700)
    return path


def exec_endpoint(run_dir: str) -> str:
    """The daemon <-> executor socket: a file in the private run dir, or, when that path
    is too long for a Unix socket (a deep TMPDIR), a Linux abstract socket named after
    the run dir (CURVE protects it like every other socket)."""
    import os
    import sys

    path = os.path.join(run_dir, "exec.sock")
    if len(path) <= _IPC_PATH_MAX:
        return f"ipc://{path}"
    if sys.platform.startswith("linux"):
        return f"ipc://@{os.path.basename(run_dir)}"
    raise OSError(f"the temp directory path is too long for a local socket: {run_dir}; "
                  "set TMPDIR to a shorter directory")


def spawn_executors(count: int, node_id: str, endpoint: str, public: bytes, secret: bytes,
                    nice: int, log_level: int, first_index: int = 0) -> list[Any]:
    """Start ``count`` executor processes with ``spawn`` (no zmq object exists yet)."""
    import multiprocessing
    import os

    mp = multiprocessing.get_context("spawn")
    procs = []
    for i in range(first_index, first_index + count):
        proc = mp.Process(target=run_executor, name=f"pymr-executor-{i}",
                          args=(i, node_id, endpoint, public, secret, os.getpid(), nice,
                                log_level))
        proc.start()
        procs.append(proc)
    return procs
