"""A light spawn target: the daemon can start executors before importing zmq, so
their start-up (imports) overlaps the daemon's own."""

from __future__ import annotations

from typing import Any


def run_executor(*args: Any) -> None:
    from .executor import executor_main

    executor_main(*args)


#: sockaddr_un.sun_path holds 108 bytes; leave room for the terminating NUL.
_IPC_PATH_MAX = 100


#: Every node run's private directories start with this (in $TMPDIR, or the data dir).
RUN_DIR_PREFIX = "pymr-node-"
#: The file in a run directory that names the process owning it.
OWNER_FILE = "owner.pid"


def make_run_dir(node_id: str, parent: str | None = None) -> str:
    """A private directory for one node run's local socket and spilled outputs, marked
    with its owner's pid; stale ones of dead runs (a SIGKILLed node) are swept first."""
    import os
    import tempfile

    sweep_stale_run_dirs(parent or tempfile.gettempdir())
    path = tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{node_id}-", dir=parent)
    os.chmod(path, 0o700)
    with open(os.path.join(path, OWNER_FILE), "w") as f:
        f.write(f"{os.getpid()}\n")
    return path


def sweep_stale_run_dirs(parent: str) -> list[str]:
    """Remove this user's run directories whose owning process is gone. A directory
    without an owner file (being created right now, or not ours) is left alone."""
    import os
    import shutil

    removed: list[str] = []
    try:
        names = [n for n in os.listdir(parent) if n.startswith(RUN_DIR_PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
            with open(os.path.join(path, OWNER_FILE)) as f:
                pid = int(f.read().strip() or "0")
        except (OSError, ValueError):
            continue
        if pid <= 0 or _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
                    nice: int, log_level: int, first_index: int = 0,
                    method: str = "spawn") -> list[Any]:
    """Start ``count`` executor processes (no zmq object exists yet). ``fork`` is for a
    caller that is still single-threaded and light (the embedded node at its start): it
    skips an interpreter start per executor; otherwise ``spawn``."""
    import multiprocessing
    import os

    mp: Any = multiprocessing.get_context(method)
    procs = []
    for i in range(first_index, first_index + count):
        proc = mp.Process(target=run_executor, name=f"pymr-executor-{i}",
                          args=(i, node_id, endpoint, public, secret, os.getpid(), nice,
                                log_level))
        proc.start()
        procs.append(proc)
    return procs
