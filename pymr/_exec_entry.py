"""A light spawn target: the daemon can start executors before importing zmq, so
their start-up (imports) overlaps the daemon's own."""

from __future__ import annotations

from typing import Any


def run_executor(*args: Any) -> None:
    from .executor import executor_main

    executor_main(*args)


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
