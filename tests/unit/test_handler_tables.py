"""The master and the node daemon dispatch messages through tables (type -> handler).

Every registered message type must be placed by each role: handled, ignored on purpose, or
never received there. A new message type fails these tests until someone decides what the
master and the daemon do with it (instead of it being dropped as "unexpected" at run time).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import zmq

from pymr.config import JobOptions, NodeOptions
from pymr.jobs import builtin_spec
from pymr.net.security import ClusterKey
from pymr.runtime import master, node
from pymr.runtime.links import NodeLink
from pymr.wire import protocol as p

ALL_TYPES = set(p.message_types().values())


def assert_partition(role: str, groups: dict[str, Iterable[type[p.Message]]]) -> None:
    """Each registered type is in exactly one group, and the groups hold only those."""
    seen: dict[type[p.Message], str] = {}
    for name, types in groups.items():
        for cls in types:
            assert cls in ALL_TYPES, f"{role}: {name} names {cls}, not a registered message"
            assert cls not in seen, f"{role}: {cls.TYPE} is in both {seen[cls]} and {name}"
            seen[cls] = name
    missing = sorted(cls.TYPE for cls in ALL_TYPES - set(seen))
    assert not missing, f"{role}: no handler and not declared ignored: {missing}"


def test_registry_is_not_empty() -> None:
    assert {p.Ack, p.Hello, p.MapTask, p.JobEnd} <= ALL_TYPES


def test_every_message_type_has_a_place_at_the_master() -> None:
    assert_partition("master", {
        "MASTER_HANDLERS": master.MASTER_HANDLERS,
        "MASTER_IGNORED": master.MASTER_IGNORED,
        "MASTER_NEVER_RECEIVES": master.MASTER_NEVER_RECEIVES,
    })


def test_every_message_type_has_a_place_on_the_node_control_socket() -> None:
    assert_partition("node control", {
        "CONTROL_HANDLERS": node.CONTROL_HANDLERS,
        "NOT_ON_CONTROL": node.NOT_ON_CONTROL,
    })


def test_job_control_table_covers_what_control_routes_to_it() -> None:
    routed = {cls for cls, handler in node.CONTROL_HANDLERS.items()
              if handler is node.NodeDaemon._on_job_control}
    assert routed == set(node.JOB_CONTROL_HANDLERS)
    # Each is acked, so it must carry the seq the ack answers, and name its job.
    for cls in routed:
        assert {"seq", "job_id"} <= set(cls.__dataclass_fields__), cls.TYPE


def test_every_message_type_has_a_place_on_the_executor_link() -> None:
    assert_partition("node executor link", {
        "EXECUTOR_HANDLERS": node.EXECUTOR_HANDLERS,
        "EXECUTOR_RELAYED": node.EXECUTOR_RELAYED,
        "NEVER_FROM_EXECUTOR": node.NEVER_FROM_EXECUTOR,
    })


def test_what_executors_relay_the_master_handles() -> None:
    relayed = node.EXECUTOR_RELAYED | (set(node.EXECUTOR_HANDLERS) - {p.ExecutorReady})
    assert relayed <= set(master.MASTER_HANDLERS)


# ------------------------------------------------------------------ drops keep their texts


def a_master() -> tuple[master.Master, NodeLink, list[str]]:
    m = master.Master(ClusterKey.generate(), [], builtin_spec("wordcount"), [], JobOptions(),
                      local_reads=True)
    link = NodeLink(endpoint="tcp://127.0.0.1:9", control=None,  # type: ignore[arg-type]
                    node_id="n1", name="n1")
    m.nodes.links["n1"] = link
    dropped: list[str] = []
    m.drop = lambda who, why: dropped.append(why)  # type: ignore[method-assign]
    return m, link, dropped


def test_master_drops_unexpected_and_foreign_messages_while_running() -> None:
    m, link, dropped = a_master()
    m.dispatch.sched = object()  # type: ignore[assignment]  # running: only "is not None" is looked at
    m._handle(link, p.Lease(job_id=m.job_id), [])
    m._handle(link, p.OutputLost(job_id="other", node_id="n1", output_id="o"), [])
    m._handle(link, p.Heartbeat(node_id="n1", incarnation="i", slots=1, busy=0,
                                tasks_done=0), [])
    assert dropped == ["unexpected lease", "message for another job"]


def test_master_ending_drops_nothing_of_its_job() -> None:
    m, link, dropped = a_master()
    m.dispatch.stop()
    m._handle(link, p.Lease(job_id=m.job_id), [])
    m._handle(link, p.TaskExecuted(job_id=m.job_id, node_id="n1", task_id=0, attempt=1,
                                   nbytes=1), [])
    assert dropped == []


def test_node_drops_unexpected_control_messages(tmp_path: Path) -> None:
    daemon = node.NodeDaemon(NodeOptions(embedded=True), ClusterKey.generate(),
                             run_dir=str(tmp_path / "run"))
    dropped: list[str] = []
    daemon.drop = lambda who, why: dropped.append(why)  # type: ignore[method-assign]
    frames: list[Any] = [zmq.Frame(b"peer"), *p.encode(p.Ack(seq=1))]
    try:
        daemon._on_control(frames)
    finally:
        daemon.close()
    assert dropped == ["unexpected ack on control"]
