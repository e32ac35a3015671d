"""Settings as frozen dataclasses with defaults; the environment is read only in ``from_env``."""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

MiB = 1 << 20

#: How often a node publishes a heartbeat and the master renews its lease.
HEARTBEAT_INTERVAL_S = 1.0
#: A node silent for this long is considered dead (first heartbeat starts the timer).
DEATH_TIMEOUT_S = 4.0
#: An executor stopped (SIGSTOP, a freezer) this long is killed and replaced by its node:
#: its heartbeats come from the node, so the master would never see it as lost.
EXECUTOR_STOPPED_S = DEATH_TIMEOUT_S
#: A node drops a job whose master's lease has not been renewed for this long.
LEASE_TIMEOUT_S = 10.0
#: Unacked control messages are re-sent after this long.
RESEND_INTERVAL_S = 1.0
#: CURVE handshakes that do not finish in this time are dropped.
HANDSHAKE_IVL_MS = 5000
#: Socket linger on close: bounded so nothing hangs at exit.
LINGER_MS = 200
#: Default browse window of ``pymr job`` / ``pymr status``. Measured in the namespace lab
#: (nodes/lab.sh, tests/lan, 3 nodes): a fresh browser has every node's answer after
#: 0.1-0.25 s (median 0.17 s; it waits 20-120 ms before asking, responders 20-120 ms
#: before answering). A node that multicast its record less than 1 s before (it just
#: started, or answered another browser) may not multicast it again (RFC 6762 rate limit)
#: and answers only the browser's second question, sent at 1 s: seen at 1.1-1.25 s.
#: 1.5 s covers both rounds.
DEFAULT_DISCOVER_S = 1.5
#: How long ``pymr node`` without a key looks for an existing cluster before founding one.
FOUND_DISCOVER_S = 3.0
#: Default base port of a node (task, shuffle, control, events = base..base+3).
DEFAULT_BASE_PORT = 7370
#: The control port of a node on the default ports: ``--nodes HOST`` means HOST:7372.
DEFAULT_CONTROL_PORT = DEFAULT_BASE_PORT + 2

UNICODE_VERSION = unicodedata.unidata_version


def default_home() -> Path:
    """Where a machine's pymr state (key, node id, data dir) lives."""
    return Path.home() / ".pymr"


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What ``pymr job`` was asked to do.

    Not here: the job's name (its program's) and ``--binary`` (inputs are accepted or
    refused by ``resolve_inputs`` before a job exists)."""

    #: the job's parameters (``-p NAME=VALUE``), checked against the job's ``PARAMS``
    params: dict[str, str] = field(default_factory=dict)
    split_size: int = 16 * MiB
    max_token: int = 64 * MiB
    num_partitions: int = 0          # 0: one per reducer slot
    prefetch: int = 1                # tasks in flight per slot beyond the running one
    byte_budget: int = 256 * MiB     # split bytes in flight, all nodes together
    max_attempts: int = 4
    flush_key_limit: int = 2_000_000
    fetch_credit: int = 4            # partition chunks in flight per partition
    death_timeout_s: float = DEATH_TIMEOUT_S
    memory: int = 0                  # per node, all its executors (0: each node's own)

    def __post_init__(self) -> None:
        _check_memory(self.memory)


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """What ``pymr node`` (or the embedded cluster) runs with."""

    name: str = ""
    slots: int = 0                   # 0: one per core
    host: str = "127.0.0.1"
    base_port: int = 0               # 0: free ports
    home: Path = field(default_factory=default_home)
    builtin_only: bool = False
    embedded: bool = False           # started by a ``pymr job`` for itself
    read_paths: bool = False         # may read splits by path (embedded, or --shared-fs)
    nice: int = 5
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    lease_timeout_s: float = LEASE_TIMEOUT_S
    retain_memory: int = 256 * MiB   # map outputs an executor keeps in memory, then spills
    memory: int = 0                  # the node's memory budget for jobs (0: default_memory())

    def __post_init__(self) -> None:
        _check_memory(self.memory)


#: The smallest memory budget a job or a node may be given.
MIN_BUDGET = 1 * MiB


def _check_memory(memory: int) -> None:
    if memory and memory < MIN_BUDGET:
        raise UsageError(f"--memory {memory} bytes is too small: give at least 1M (or leave "
                         "it out for each node's default, a quarter of its machine's memory)")


#: The default memory budget of a node: this fraction of the machine's memory, shared by
#: its executors. Each pymr process also needs a fixed overhead beyond its share (the
#: interpreter, pyzmq, msgpack and pymr loaded: about 40-60 MiB measured per executor).
DEFAULT_MEMORY_FRACTION = 0.25
#: Least default budget: below it every task would spill.
MIN_MEMORY = 16 * MiB
#: The smallest share of one executor (a node with many executors and a small budget).
MIN_SHARE = 256 << 10
#: What a pymr process needs beyond its share of the budget: the interpreter, pyzmq,
#: msgpack and pymr loaded (about 35-40 MiB idle), the split being mapped, one chunk being
#: packed, sockets' buffers. Measured: executors peaked at 60-80 MiB with a 4 MiB share.
PROCESS_OVERHEAD = 96 * MiB


def default_memory() -> int:
    """A quarter of this machine's physical memory (256 MiB if it cannot be read)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 256 * MiB
    return max(MIN_MEMORY, int(total * DEFAULT_MEMORY_FRACTION))


def executor_share(node_memory: int, job_memory: int, executors: int) -> int:
    """One executor's share of a job's memory: the smaller of the node's budget and the
    job's, divided among the node's executors."""
    budget = node_memory or default_memory()
    if job_memory:
        budget = min(budget, job_memory)
    return max(MIN_SHARE, budget // max(1, executors))


def home_from_env(explicit: str | None = None) -> Path:
    """The state directory: ``--home`` wins, then ``PYMR_HOME``, then ``~/.pymr``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("PYMR_HOME")
    return Path(env).expanduser() if env else default_home()


def parse_nodes(text: str | list[str], option: str = "--nodes") -> list[str]:
    """``HOST[:PORT],...`` (or a list of them): the control endpoints of the nodes to use.

    A bare HOST means a node on the default ports (control port ``DEFAULT_CONTROL_PORT``).
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in (x.strip() for x in items):
        if not item:
            continue
        bare = item.removeprefix("tcp://")
        host, sep, port = bare.rpartition(":")
        if not sep and bare and _HOST_RE.match(bare):
            host, port = bare, str(DEFAULT_CONTROL_PORT)
        if not host or not _HOST_RE.match(host.strip("[]")) or not port.isdigit() \
                or not 0 < int(port) < 65536:
            raise UsageError(f"{option}: {item!r} is not HOST or HOST:PORT (a node's address, "
                             f"and its control port if not {DEFAULT_CONTROL_PORT}, shown by "
                             "'pymr status')")
        out.append(f"tcp://{host.strip('[]')}:{int(port)}")
    if not out:
        raise UsageError(f"{option} names no node")
    return out


#: A host name or an IPv4 address (no spaces, slashes or other URL syntax).
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?$")
_ENDPOINT_RE = re.compile(r"^tcp://([A-Za-z0-9.\-]{1,253}):([0-9]{1,5})$")


def split_endpoint(endpoint: str) -> tuple[str, int] | None:
    """``tcp://HOST:PORT`` -> (host, port); None for anything else (peer lists are checked
    with it before anyone dials what another machine named)."""
    m = _ENDPOINT_RE.match(endpoint)
    if m is None or not 0 < int(m.group(2)) < 65536 or not _HOST_RE.match(m.group(1)):
        return None
    return m.group(1), int(m.group(2))
