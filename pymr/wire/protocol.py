"""Every wire message pymr sends, and the only module that speaks msgpack.

A message is a multipart ZeroMQ message: a msgpack header frame (a map with the
protocol version ``v``, the type ``t`` and the fields), then raw bulk frames
(split bytes, shuffle chunks) that are never re-encoded. ``decode`` raises only
``ProtocolError``; receive loops log it once per peer and reason and drop the
message.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from itertools import chain, compress
from typing import Any, ClassVar

import msgpack

from ..errors import ProtocolError
from .keys import NAN, ListKey

PROTOCOL_VERSION = 4

#: Largest header frame we accept; bulk data travels in payload frames.
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: Largest single frame a socket accepts (ZMQ_MAXMSGSIZE); splits and chunks stay below.
MAX_FRAME_BYTES = 256 * 1024 * 1024
#: Nesting limit for decoded headers: no legitimate message is deeper than this.
MAX_DEPTH = 8

_TYPES: dict[str, type[Message]] = {}
_HINTS: dict[str, dict[str, Any]] = {}


class Message:
    """Base of all messages: a frozen dataclass with a ``TYPE`` name."""

    TYPE: ClassVar[str] = ""

    def to_fields(self) -> dict[str, Any]:
        # Field names cached per class: dataclasses.fields() rebuilds its tuple on every
        # call, and the master encodes thousands of messages per second.
        cls = type(self)
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(
                f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
        return {n: getattr(self, n) for n in names}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_T = typing.TypeVar("_T", bound="type[Message]")


def _register(cls: _T) -> _T:
    """Register a message dataclass under its ``TYPE`` name."""
    if cls.TYPE in _TYPES:
        raise RuntimeError(f"duplicate message type {cls.TYPE}")
    _TYPES[cls.TYPE] = cls
    return cls


# ---------------------------------------------------------------- control: hello


@_register
@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Master or observer -> node: who are you? Sent before anything else."""

    TYPE: ClassVar[str] = "hello"
    seq: int
    client_id: str
    pymr_version: str
    unicode_version: str
    #: peer exchange: answer with the members you know (``HelloReply.peers``)
    want_peers: bool = False
    #: the sender is a node: ``{"node_id", "name", "endpoint"}`` (its control endpoint),
    #: so that the receiver can name it to others (a node joining through this one)
    member: dict[str, str] = field(default_factory=dict)


@_register
@dataclass(frozen=True, slots=True)
class HelloReply(Message):
    """Node -> client: identity, capacity and the endpoints to connect to."""

    TYPE: ClassVar[str] = "hello_reply"
    seq: int
    node_id: str
    name: str
    incarnation: str
    pymr_version: str
    unicode_version: str
    slots: int
    task_endpoint: str
    shuffle_endpoint: str
    events_endpoint: str
    builtin_only: bool = False
    python_version: str = ""
    #: with ``Hello.want_peers``: the members this node knows, each
    #: ``{"node_id", "name", "endpoint"}``; unverified: a client says hello before use
    peers: list[dict[str, str]] = field(default_factory=list)


@_register
@dataclass(frozen=True, slots=True)
class Ack(Message):
    """Receiver -> sender of an acked control message: ``seq`` arrived and was applied."""

    TYPE: ClassVar[str] = "ack"
    seq: int
    ok: bool = True
    error: str = ""


# ---------------------------------------------------------------- control: job lifecycle


@_register
@dataclass(frozen=True, slots=True)
class JobStart(Message):
    """Master -> node: the job spec, its program, and where every partition is reduced.

    The program is ``source`` (how tracebacks name it: ``filename``) plus the helper
    modules from its folder (relative path -> source); ``sha256`` covers all of them.
    """

    TYPE: ClassVar[str] = "job_start"
    seq: int
    job_id: str
    job_name: str
    source: str
    sha256: str
    num_partitions: int
    #: partition -> node id of its reducer
    partition_map: dict[int, str]
    #: node id -> that node's shuffle endpoint
    shuffle_endpoints: dict[str, str]
    epoch: int = 1
    flush_key_limit: int = 2_000_000
    #: secret of this job's master: map tasks without it are dropped (another member
    #: cannot push tasks into someone else's job)
    task_token: str = ""
    filename: str = ""
    modules: dict[str, str] = field(default_factory=dict)
    #: the job's parameters (``-p NAME=VALUE``)
    params: dict[str, str] = field(default_factory=dict)
    #: the job's memory budget per node in bytes (``--memory``; 0: the node's own)
    memory: int = 0


@_register
@dataclass(frozen=True, slots=True)
class MapTask(Message):
    """Master -> node (task PUSH/PULL): run map+combine on one split.

    Either ``path``/``offset``/``length`` name a byte range to read locally, or
    the split bytes ride as the payload frame (``path`` empty).
    """

    TYPE: ClassVar[str] = "map_task"
    job_id: str
    task_id: int
    attempt: int
    path: str = ""
    offset: int = 0
    length: int = 0
    alone: bool = False
    token: str = ""
    #: for jobs whose map takes a position: the input's name and the 1-based number of the
    #: split's first line (0: not counted)
    file: str = ""
    first_line: int = 0


@_register
@dataclass(frozen=True, slots=True)
class TaskExecuted(Message):
    """Node -> master: a task was processed (frees credit); its output is not flushed yet."""

    TYPE: ClassVar[str] = "task_executed"
    job_id: str
    node_id: str
    task_id: int
    attempt: int
    nbytes: int


@_register
@dataclass(frozen=True, slots=True)
class TaskFailedReport(Message):
    """Node -> master (and on PUB as ``error``): a task raised or its executor crashed."""

    TYPE: ClassVar[str] = "task_failed"
    job_id: str
    node_id: str
    task_id: int
    attempt: int
    exc_type: str
    message: str
    traceback: str = ""
    #: the frames of the job's own files only, with their source lines
    user_traceback: str = ""
    #: the failing record: its 0-based line within the split (-1: not known)
    record: int = -1
    #: what raised: "map", "combine", "load" (the program), "" (the engine)
    stage: str = ""
    #: not worth another attempt (the program does not load, a value cannot travel)
    fatal: bool = False


#: ``exc_type`` of reports that are not the task's fault: they never count as attempts.
LOST = "Lost"            # its output was discarded with a batch, or its node lost it
CANCELLED = "Cancelled"  # the master cancelled this attempt (another one won)


@_register
@dataclass(frozen=True, slots=True)
class CancelTask(Message):
    """Master -> node -> executor: another attempt of this task won; stop this one.

    Not acked: a cancel that arrives too late only means the loser's output is refused
    at commit, as it would have been without one.
    """

    TYPE: ClassVar[str] = "cancel_task"
    job_id: str
    task_id: int
    attempt: int


@_register
@dataclass(frozen=True, slots=True)
class Flush(Message):
    """Master -> node: executors flush combined map outputs now (all tasks executed)."""

    TYPE: ClassVar[str] = "flush"
    seq: int
    job_id: str


@_register
@dataclass(frozen=True, slots=True)
class OutputDone(Message):
    """Node -> master: a map output (one flush of a task set) was sent to the reducers.

    ``manifest`` maps every partition to ``[chunks, records, checksum]``.
    ``tasks`` is a list of ``[task_id, attempt]``.
    """

    TYPE: ClassVar[str] = "output_done"
    job_id: str
    node_id: str
    output_id: str
    tasks: list[list[int]]
    manifest: dict[int, list[int]]
    #: the job's counters (``pymr.api.count``) of the tasks in this output
    counters: dict[str, int] = field(default_factory=dict)
    #: the partition map's epoch the chunks were sent under (0: unknown)
    epoch: int = 0


@_register
@dataclass(frozen=True, slots=True)
class Commit(Message):
    """Master -> reducer node: these outputs count for these tasks, for these partitions.

    Batched: one message per reducer node carries every output the master committed since
    its last loop turn, so control traffic per task does not grow with the number of
    reducer nodes (M x R single commits would dominate past a few dozen nodes).
    """

    TYPE: ClassVar[str] = "commit"
    seq: int
    job_id: str
    output_ids: list[str]
    tasks: list[list[int]]
    #: per output: partition -> [chunks, records, checksum], only this node's partitions
    manifests: list[dict[int, list[int]]]
    epoch: int = 1

    def __post_init__(self) -> None:
        if not len(self.output_ids) == len(self.tasks) == len(self.manifests):
            raise ValueError("output_ids, tasks and manifests differ in length")

    def entries(self) -> typing.Iterator[tuple[str, list[int], dict[int, list[int]]]]:
        return zip(self.output_ids, self.tasks, self.manifests, strict=True)


@_register
@dataclass(frozen=True, slots=True)
class DropOutput(Message):
    """Master -> reducer node: this output will never be committed; free its chunks."""

    TYPE: ClassVar[str] = "drop_output"
    seq: int
    job_id: str
    output_id: str


@_register
@dataclass(frozen=True, slots=True)
class InputComplete(Message):
    """Master -> node: the job has exactly ``num_tasks`` map tasks."""

    TYPE: ClassVar[str] = "input_complete"
    seq: int
    job_id: str
    num_tasks: int


@_register
@dataclass(frozen=True, slots=True)
class PartitionComplete(Message):
    """Reducer node -> master: every task is merged into this partition."""

    TYPE: ClassVar[str] = "partition_complete"
    job_id: str
    node_id: str
    partition: int
    records: int
    chunks: int
    #: counters of the job's reduce for this partition
    counters: dict[str, int] = field(default_factory=dict)
    #: names of the types of the partition's keys and values (the merge picks its order)
    key_types: list[str] = field(default_factory=list)
    value_types: list[str] = field(default_factory=list)
    #: what the partition spilled to its node's disk under the memory budget
    spilled_bytes: int = 0
    spilled_runs: int = 0


@_register
@dataclass(frozen=True, slots=True)
class ReduceFailed(Message):
    """Reducer node -> master: the job's reduce raised for a key (fails the job at once:
    every key of the partition would be merged again on another attempt, for the same
    answer)."""

    TYPE: ClassVar[str] = "reduce_failed"
    job_id: str
    node_id: str
    partition: int
    key: str
    exc_type: str
    message: str
    traceback: str = ""
    user_traceback: str = ""


@_register
@dataclass(frozen=True, slots=True)
class JobUpdate(Message):
    """Master -> every node: partitions moved (a reducer was lost); a new epoch."""

    TYPE: ClassVar[str] = "job_update"
    seq: int
    job_id: str
    partition_map: dict[int, str]
    shuffle_endpoints: dict[str, str]
    epoch: int
    num_tasks: int = -1


@_register
@dataclass(frozen=True, slots=True)
class ResendChunks(Message):
    """Master -> mapper node: send a retained output's chunks for a partition again."""

    TYPE: ClassVar[str] = "resend_chunks"
    seq: int
    job_id: str
    output_id: str
    partition: int
    endpoint: str
    epoch: int = 1
    seqs: list[int] = field(default_factory=list)   # empty: all of them


@_register
@dataclass(frozen=True, slots=True)
class ChunksMissing(Message):
    """Reducer node -> master: a committed output's chunks have not all arrived."""

    TYPE: ClassVar[str] = "chunks_missing"
    job_id: str
    node_id: str
    output_id: str
    partition: int
    seqs: list[int]


@_register
@dataclass(frozen=True, slots=True)
class OutputLost(Message):
    """Mapper node -> master: a retained output it was asked for is gone."""

    TYPE: ClassVar[str] = "output_lost"
    job_id: str
    node_id: str
    output_id: str


@_register
@dataclass(frozen=True, slots=True)
class PartitionLost(Message):
    """Reducer node -> master: an executor holding this partition crashed."""

    TYPE: ClassVar[str] = "partition_lost"
    job_id: str
    node_id: str
    partition: int
    reason: str = ""
    #: the node's disk refused a spill: the partition moves to a node that has not failed it
    disk: bool = False


@_register
@dataclass(frozen=True, slots=True)
class FetchPartition(Message):
    """Master -> reducer node: send sorted chunks ``start`` .. ``start+count-1``: as
    ``[keys, values]``, or with ``lines`` as ``[keys, TSV lines]`` (the reducer formats
    the output; the master merges by key and writes the lines as they are)."""

    TYPE: ClassVar[str] = "fetch_partition"
    job_id: str
    partition: int
    start: int
    count: int
    lines: bool = False


@_register
@dataclass(frozen=True, slots=True)
class PartitionData(Message):
    """Reducer node -> master: one sorted chunk of a partition, as the payload frame."""

    TYPE: ClassVar[str] = "partition_data"
    job_id: str
    partition: int
    seq: int
    last: bool


@_register
@dataclass(frozen=True, slots=True)
class Lease(Message):
    """Master -> node, every second: the job is still wanted."""

    TYPE: ClassVar[str] = "lease"
    job_id: str


@_register
@dataclass(frozen=True, slots=True)
class JobEnd(Message):
    """Master -> node: the job is over (done, failed or cancelled); free everything."""

    TYPE: ClassVar[str] = "job_end"
    seq: int
    job_id: str
    reason: str = "done"


@_register
@dataclass(frozen=True, slots=True)
class StatusRequest(Message):
    """Observer -> node: report your state."""

    TYPE: ClassVar[str] = "status_request"
    seq: int


@_register
@dataclass(frozen=True, slots=True)
class StatusReply(Message):
    """Node -> observer: counters for ``pymr status``."""

    TYPE: ClassVar[str] = "status_reply"
    seq: int
    node_id: str
    name: str
    incarnation: str
    pymr_version: str
    slots: int
    busy: int
    tasks_done: int
    bytes_processed: int
    uptime_s: float
    jobs: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    ready: int = -1     # executors started and connected (-1: not reported)
    #: the machine's CPU use (percent of all cores) and memory (-1 / 0: not measured yet)
    cpu_percent: float = -1.0
    mem_percent: float = -1.0
    mem_used: int = 0
    mem_total: int = 0


# ---------------------------------------------------------------- shuffle


@_register
@dataclass(frozen=True, slots=True)
class ShuffleChunk(Message):
    """Mapper -> reducer node (shuffle PUSH/PULL): one numbered chunk, payload frame."""

    TYPE: ClassVar[str] = "shuffle_chunk"
    job_id: str
    output_id: str
    partition: int
    seq: int
    epoch: int = 1


# ---------------------------------------------------------------- node <-> executor


@_register
@dataclass(frozen=True, slots=True)
class ExecutorReady(Message):
    """Executor -> its daemon: started and connected."""

    TYPE: ClassVar[str] = "executor_ready"
    index: int
    pid: int


@_register
@dataclass(frozen=True, slots=True)
class ExecJob(Message):
    """Daemon -> executor: a job starts; ``partitions`` are the ones this executor reduces."""

    TYPE: ClassVar[str] = "exec_job"
    job_id: str
    job_name: str
    source: str
    sha256: str
    num_partitions: int
    partitions: list[int]
    shuffle_endpoints: dict[int, str]
    flush_key_limit: int = 2_000_000
    num_tasks: int = -1
    epoch: int = 1
    #: where this executor spills the map outputs it retains ("" = keep them in memory)
    spill_dir: str = ""
    #: bytes of retained outputs kept in memory before the oldest spill (-1: the default)
    retain_memory: int = -1
    filename: str = ""
    modules: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    #: this executor's memory share in bytes (0: no budget): a quarter for the map side,
    #: half for the partitions it reduces, a quarter for retained map outputs
    memory: int = 0


@_register
@dataclass(frozen=True, slots=True)
class ExecJobEnd(Message):
    """Daemon -> executor: drop every trace of the job."""

    TYPE: ClassVar[str] = "exec_job_end"
    job_id: str


@_register
@dataclass(frozen=True, slots=True)
class ExecStop(Message):
    """Daemon -> executor: exit now."""

    TYPE: ClassVar[str] = "exec_stop"


# ---------------------------------------------------------------- events (PUB)


@_register
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Node -> PUB ``hb``: alive, and how busy."""

    TYPE: ClassVar[str] = "heartbeat"
    node_id: str
    incarnation: str
    slots: int
    busy: int
    tasks_done: int
    jobs: list[str] = field(default_factory=list)
    bytes_processed: int = 0
    #: the machine's CPU use (percent of all cores) and memory (-1 / 0: not measured yet)
    cpu_percent: float = -1.0
    mem_percent: float = -1.0
    mem_used: int = 0
    mem_total: int = 0


@_register
@dataclass(frozen=True, slots=True)
class Progress(Message):
    """Node -> PUB ``progress``: a task finished."""

    TYPE: ClassVar[str] = "progress"
    job_id: str
    node_id: str
    task_id: int
    attempt: int
    nbytes: int


@_register
@dataclass(frozen=True, slots=True)
class ErrorEvent(Message):
    """Node -> PUB ``error``: a task raised (observers; the master has the report)."""

    TYPE: ClassVar[str] = "error"
    job_id: str
    node_id: str
    task_id: int
    attempt: int
    exc_type: str
    message: str
    traceback: str = ""


@_register
@dataclass(frozen=True, slots=True)
class JobNotice(Message):
    """Master -> nodes (control) -> PUB ``progress``: what the master decided (a lost
    node, a retry, a backup), so that ``pymr events`` shows it too."""

    TYPE: ClassVar[str] = "job_notice"
    job_id: str
    text: str
    node_id: str = ""
    #: a task's failure as the master saw it (``task_id`` -1: the notice is not one): the
    #: node it failed on, where in the input, and the job's own frames of its traceback
    task_id: int = -1
    attempt: int = 0
    failed_on: str = ""
    where: str = ""
    exc_type: str = ""
    message: str = ""
    traceback: str = ""


@_register
@dataclass(frozen=True, slots=True)
class JobProgress(Message):
    """Master -> nodes (control, unacked) -> PUB ``job``: how far the job is, for dashboards.

    Sent a few times a second, at each phase change and once at the end (``state``), through
    every live node, so an observer that follows any node sees every job; ``number`` rises
    with each one, so copies and late ones are told apart. Phases: ``map`` (splits run),
    ``shuffle`` (map outputs committed to the reducers), ``reduce`` (partitions merged),
    ``fetch`` (sorted partitions fetched and merged into the output).
    """

    TYPE: ClassVar[str] = "job_progress"
    job_id: str
    job_name: str
    number: int
    elapsed_s: float
    state: str = "running"           # running, done, failed, cancelled
    phase: str = "map"
    inputs: list[str] = field(default_factory=list)
    bytes_total: int = -1            # -1: not known yet (stdin, pipes, compressed input)
    bytes_done: int = 0
    tasks_total: int = -1            # -1: the input is still being cut into splits
    tasks_done: int = 0              # splits mapped (each counted once)
    tasks_committed: int = 0
    partitions: int = 0
    partitions_done: int = 0
    chunks_total: int = 0            # sorted chunks to fetch (known once reduced)
    chunks_fetched: int = 0
    records: int = 0
    retries: int = 0
    backups: int = 0
    nodes: list[str] = field(default_factory=list)
    nodes_lost: list[str] = field(default_factory=list)
    error: str = ""
    node_id: str = ""                # the node that relayed it


TOPIC_HEARTBEAT = b"hb"
TOPIC_PROGRESS = b"progress"
TOPIC_ERROR = b"error"
#: Job progress for dashboards (``pymr events`` does not follow it: several a second).
TOPIC_JOB = b"job"


# ---------------------------------------------------------------- codec


def encode(msg: Message, *payload: bytes | bytearray | memoryview) -> list[Any]:
    """Header frame, then the payload frames untouched (send with ``copy=False``)."""
    header = {"v": PROTOCOL_VERSION, "t": msg.TYPE}
    header.update(msg.to_fields())
    try:
        return [msgpack.packb(header, use_bin_type=True), *payload]
    except UnicodeEncodeError:  # a file name that is not UTF-8 (kept as surrogates)
        return [msgpack.packb(_mark_surrogates(header), use_bin_type=True), *payload]


#: Header extension type: a ``str`` with lone surrogates (the undecodable bytes of a file
#: name, PEP 383), which UTF-8 cannot hold, as its ``surrogatepass`` bytes.
_EXT_SURROGATE_TEXT = 1


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def _mark_surrogates(obj: Any) -> Any:
    """Strings with lone surrogates as ``_EXT_SURROGATE_TEXT``: decoded as the same str,
    so a file name travels byte for byte (``os.fsencode`` of it is the name on disk)."""
    if isinstance(obj, str):
        return msgpack.ExtType(_EXT_SURROGATE_TEXT, obj.encode("utf-8", "surrogatepass")) \
            if _has_surrogates(obj) else obj
    if isinstance(obj, dict):
        return {_mark_surrogates(k): _mark_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mark_surrogates(x) for x in obj]
    return obj


def _header_ext(code: int, data: bytes) -> str:
    """The only extension a header may hold; a marked string must need the mark (one
    encoding per message)."""
    if code != _EXT_SURROGATE_TEXT:
        raise ValueError(f"unknown header extension {code}")
    text = data.decode("utf-8", "surrogatepass")
    if not _has_surrogates(text):
        raise ValueError("a marked string without surrogates")
    return text


def encode_topic(topic: bytes, msg: Message) -> list[Any]:
    """A PUB message: short topic frame first."""
    return [topic, *encode(msg)]


_CONTAINER_TYPES = frozenset((dict, list, tuple))
_is_container = _CONTAINER_TYPES.__contains__


def _check_depth(obj: Any) -> None:
    """Level by level, the containers of each level picked out in C (``compress``): a
    manifest of many small lists costs a loop turn per list, no call per int or per list."""
    level = [obj]
    for _ in range(MAX_DEPTH + 1):
        below: list[Any] = []
        for o in level:
            if type(o) is dict:
                keys, values = o.keys(), o.values()
                below.extend(compress(values, map(_is_container, map(type, values))))
                below.extend(compress(keys, map(_is_container, map(type, keys))))
            else:
                below.extend(compress(o, map(_is_container, map(type, o))))
        if not below:
            return
        level = below
    raise ProtocolError("message nested too deeply")


def _depth_ok(value: Any) -> bool:
    _check_depth([value])  # raises ProtocolError; the list stands for the header map
    return True


_VALIDATORS: dict[Any, typing.Callable[[Any], bool]] = {}
_LIST_ONLY = frozenset([list])


def _validator(hint: Any) -> typing.Callable[[Any], bool]:
    """A type check built once per field annotation (the master decodes thousands of
    headers per second; walking the typing objects for every value cost ~20 us each).
    Decoded msgpack values have exact types (int, bool, float, str, bytes, list, dict,
    None), so ``type(x) is int`` means what ``_conforms`` says with isinstance."""
    check = _VALIDATORS.get(hint)
    if check is None:
        check = _VALIDATORS[hint] = _build_validator(hint)
    return check


def _build_validator(hint: Any) -> typing.Callable[[Any], bool]:
    origin = typing.get_origin(hint)
    if hint is Any:
        # Anything, but not nested past the limit (a checked type bounds the nesting of
        # every other field; undeclared fields are walked in decode_header).
        return _depth_ok
    if origin is None:
        if hint is float:
            return lambda x: type(x) is float or type(x) is int
        if hint in (int, bool, str, bytes):
            exact = frozenset([hint])
            return lambda x: type(x) in exact
        return lambda x: _conforms(x, hint)
    args = typing.get_args(hint)
    scalars = (int, str, bytes)
    if origin is list:
        if args[0] in scalars:
            only = frozenset([args[0]])
            return lambda x: type(x) is list and only.issuperset(map(type, x))
        if typing.get_origin(args[0]) is list and typing.get_args(args[0])[0] in scalars:
            # list[list[int]] (task lists): both levels checked in C
            inner_only = frozenset([typing.get_args(args[0])[0]])
            return lambda x: (type(x) is list and _LIST_ONLY.issuperset(map(type, x))
                              and inner_only.issuperset(map(type, chain.from_iterable(x))))
        inner = _validator(args[0])
        return lambda x: type(x) is list and all(map(inner, x))
    if origin is dict:
        key, value = _validator(args[0]), _validator(args[1])
        if args[0] in (int, str):
            keys = frozenset([args[0]])
            if typing.get_origin(args[1]) is list and typing.get_args(args[1])[0] in scalars:
                # dict[int, list[int]] (manifests): keys, values and their items in C
                items = frozenset([typing.get_args(args[1])[0]])
                return lambda x: (type(x) is dict and keys.issuperset(map(type, x))
                                  and _LIST_ONLY.issuperset(map(type, x.values()))
                                  and items.issuperset(
                                      map(type, chain.from_iterable(x.values()))))
            return lambda x: (type(x) is dict and keys.issuperset(map(type, x))
                              and all(map(value, x.values())))
        return lambda x: type(x) is dict and all(map(key, x)) and all(map(value, x.values()))
    return lambda x: _conforms(x, hint)


def _conforms(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is None:
        if hint is bool:
            return isinstance(value, bool)
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool)
        if hint is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        return isinstance(value, hint)
    args = typing.get_args(hint)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items())
    if origin is typing.Union or str(origin) == "types.UnionType":
        return any(_conforms(value, a) for a in args)
    return isinstance(value, origin)


_FIELDS: dict[str, list[tuple[str, bool, typing.Callable[[Any], bool]]]] = {}


def _fields_of(name: str, cls: type[Message], hints: dict[str, Any]
               ) -> list[tuple[str, bool, typing.Callable[[Any], bool]]]:
    """(name, required, type check) of each field of a message type, built once."""
    fields = _FIELDS.get(name)
    if fields is None:
        fields = _FIELDS[name] = [
            (f.name, f.default is dataclasses.MISSING
             and f.default_factory is dataclasses.MISSING, _validator(hints[f.name]))
            for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return fields


def decode_header(frame: bytes | memoryview) -> Message:
    """Decode and validate one header frame; raises only ``ProtocolError``."""
    if len(frame) > MAX_HEADER_BYTES:
        raise ProtocolError("header frame too large")
    try:
        raw = msgpack.unpackb(
            frame, raw=False, strict_map_key=False, use_list=True,
            max_bin_len=MAX_HEADER_BYTES,
            # Declared lengths can exceed the frame (decoder bombs): cap them by its size.
            max_str_len=MAX_HEADER_BYTES, max_array_len=min(1_000_000, len(frame)),
            max_map_len=min(1_000_000, len(frame) // 2),
            max_ext_len=len(frame), ext_hook=_header_ext)
    except Exception as exc:  # msgpack raises many types on junk
        raise ProtocolError(f"undecodable header: {type(exc).__name__}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("header is not a map")
    version = raw.pop("v", None)
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r}, expected {PROTOCOL_VERSION}")
    name = raw.pop("t", None)
    cls = _TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {name!r}")
    hints = _HINTS.get(name)
    if hints is None:  # resolved lazily: get_type_hints for every type costs start-up time
        hints = _HINTS[name] = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field_name, required, check in _fields_of(name, cls, hints):
        if field_name in raw:
            value = raw.pop(field_name)
            if not check(value):
                raise ProtocolError(f"{name}: field {field_name} has the wrong type")
            kwargs[field_name] = value
        elif required:
            raise ProtocolError(f"{name}: missing field {field_name}")
    # Unknown extra fields are ignored (newer peers may add fields with defaults), but not
    # nested past the limit: what is left of the header now is only those fields.
    if raw:
        _check_depth(raw)
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise ProtocolError(f"{name}: {exc}") from exc


def decode(frames: list[Any]) -> tuple[Message, list[Any]]:
    """``(message, payload frames)``; raises only ``ProtocolError``."""
    if not frames:
        raise ProtocolError("empty message")
    first = frames[0]
    buf = first.buffer if hasattr(first, "buffer") else first
    return decode_header(buf), list(frames[1:])


def message_types() -> dict[str, type[Message]]:
    """Every registered message type, for tests."""
    return dict(_TYPES)


# ---------------------------------------------------------------- records
#
# Records are a job's keys and values: str, bytes, int, float, bool, None, and tuples /
# lists of them. msgpack keeps str and bytes apart (use_bin_type) and, with strict_types,
# hands tuples and list keys to ``_pack_ext``, so each comes back as the type it was.

_EXT_TUPLE = 1
_EXT_LIST_KEY = 2
_EXT_BIG_INT = 3


def _pack_ext(obj: Any, errors: str | None = None) -> msgpack.ExtType:
    t = type(obj)
    if t is tuple:
        return msgpack.ExtType(_EXT_TUPLE, _packb(list(obj), errors))
    if t is ListKey:
        return msgpack.ExtType(_EXT_LIST_KEY, _packb(list(obj), errors))
    if t is int:  # beyond 64 bits: two's complement, big-endian (no decimal digit limit)
        return msgpack.ExtType(_EXT_BIG_INT, obj.to_bytes(obj.bit_length() // 8 + 1, "big",
                                                          signed=True))
    raise TypeError(f"a value of type {t.__name__} cannot travel (use str, bytes, int, "
                    "float, bool, None, or tuples / lists of them)")


def _pack_ext_surrogates(obj: Any) -> msgpack.ExtType:
    return _pack_ext(obj, "surrogatepass")


def _packb(obj: Any, errors: str | None = None) -> bytes:
    if errors is None:
        try:  # msgpack's fast path for str
            return msgpack.packb(obj, use_bin_type=True, strict_types=True,
                                 default=_pack_ext)
        except UnicodeEncodeError:  # a str with lone surrogates: a name that is not UTF-8
            errors = "surrogatepass"
    return msgpack.packb(obj, use_bin_type=True, strict_types=True,
                         default=_pack_ext_surrogates, unicode_errors=errors)


#: How records decode a str: strict UTF-8, except that the lone surrogates of a file
#: name's undecodable bytes (``pos.file`` of a name that is not UTF-8) come back as they
#: were sent (``surrogatepass``), so the name stays distinct and ``os.fsencode`` gives it.
_RECORD_TEXT_ERRORS = "surrogatepass"


def _unpack_ext(code: int, data: bytes) -> Any:
    if code == _EXT_BIG_INT:
        return int.from_bytes(data, "big", signed=True)
    items = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True,
                            ext_hook=_unpack_ext, unicode_errors=_RECORD_TEXT_ERRORS)
    if float in set(map(type, items)):  # NaN != NaN: the one NAN, so equal keys meet
        items = [NAN if type(x) is float and x != x else x for x in items]
    if code == _EXT_TUPLE:
        return tuple(items)
    if code == _EXT_LIST_KEY:
        return ListKey(items)
    raise ValueError(f"unknown record extension {code}")


def pack_records(records: Any) -> bytes:
    """Bulk records (a dict key -> value, or a list of [key, value]) for a payload frame.
    Raises ``TypeError`` naming the type of a value that cannot travel."""
    return _packb(records)


def make_output_id(node_id: str, executor: int, pid: int, flush: int) -> str:
    """The id of one map output: unique per node, executor process and flush."""
    return f"{node_id}.{executor}.{pid}.{flush}"


def output_executor(output_id: str) -> int:
    """The executor index inside an output id (``make_output_id``); -1 if it has none."""
    parts = output_id.split(".")
    try:
        return int(parts[-3]) if len(parts) >= 4 else -1
    except ValueError:
        return -1


def pack_chunk(keys: list[Any], values: list[Any]) -> bytes:
    """A chunk of records (a map output's, a sorted run's, a spilled run's) as two arrays,
    ``[keys, values]``: packed and unpacked without a tuple or a dict entry per record."""
    return _packb([keys, values])


def unpack_chunk(data: bytes | memoryview) -> tuple[list[Any], list[Any]]:
    """Inverse of ``pack_chunk``; raises ``ProtocolError`` on anything else."""
    chunk = unpack_records(data)
    if (type(chunk) is not list or len(chunk) != 2 or type(chunk[0]) is not list
            or type(chunk[1]) is not list or len(chunk[0]) != len(chunk[1])):
        raise ProtocolError("a records chunk must be [keys, values] of equal length")
    return chunk[0], chunk[1]


def unpack_records(data: bytes | memoryview) -> Any:
    """Inverse of ``pack_records``; raises ``ProtocolError`` on junk."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True,
                               ext_hook=_unpack_ext, unicode_errors=_RECORD_TEXT_ERRORS)
    except Exception as exc:
        raise ProtocolError(f"undecodable records: {type(exc).__name__}") from exc
