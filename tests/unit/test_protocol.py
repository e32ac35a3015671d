"""pymr.wire.protocol: every message type round-trips; junk of every kind raises only ProtocolError.

Strategies are derived from each type's annotations, so a new message type or field is
covered without touching this file.
"""

from __future__ import annotations

import dataclasses
import os
import time
import types
import typing
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pymr.errors import ProtocolError
from pymr.wire import protocol as p

FUZZ_EXAMPLES = int(os.environ.get("PYMR_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

TYPES = p.message_types()
TYPE_NAMES = sorted(TYPES)

#: msgpack's integer range: anything a peer can put on the wire.
WIRE_INT = st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)


def hints_of(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def fields_of(cls: type) -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(cls))  # type: ignore[arg-type]


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    """A strategy of wire-valid values for one field annotation."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return WIRE_INT
    if hint is float:
        return st.floats(allow_nan=False)
    if hint is str:
        return st.text(max_size=20)
    if hint is bytes:
        return st.binary(max_size=20)
    if hint is Any:
        return st.none() | st.booleans() | WIRE_INT | st.text(max_size=5)
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=4)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=4)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of([strategy_for(a) for a in args])
    raise AssertionError(f"no strategy for field annotation {hint!r}: extend strategy_for")


def message_strategy(cls: type) -> st.SearchStrategy[p.Message]:
    hints = hints_of(cls)
    if cls is p.Commit:  # parallel lists: one entry per committed output
        entry = st.tuples(strategy_for(str), strategy_for(list[int]),
                          strategy_for(dict[int, list[int]]))
        return st.builds(
            lambda seq, job_id, entries, epoch: p.Commit(
                seq=seq, job_id=job_id, output_ids=[e[0] for e in entries],
                tasks=[e[1] for e in entries], manifests=[e[2] for e in entries], epoch=epoch),
            strategy_for(int), strategy_for(str), st.lists(entry, max_size=4),
            strategy_for(int))
    return st.builds(cls, **{f.name: strategy_for(hints[f.name]) for f in fields_of(cls)})


@pytest.mark.parametrize("lengths", [(1, 0, 0), (0, 1, 1), (2, 1, 2), (2, 2, 1)])
def test_commit_lists_of_different_lengths_are_rejected(lengths: tuple[int, int, int]) -> None:
    ids, tasks, manifests = lengths
    fields = {"v": p.PROTOCOL_VERSION, "t": "commit", "seq": 1, "job_id": "j",
              "output_ids": ["o"] * ids, "tasks": [[0]] * tasks,
              "manifests": [{0: [1, 1, 0]}] * manifests}
    exc = assert_rejected([msgpack.packb(fields, use_bin_type=True)])
    assert "length" in str(exc)


ANY_MESSAGE = st.one_of([message_strategy(TYPES[name]) for name in TYPE_NAMES])


def sample(cls: type) -> p.Message:
    """A hand-made instance with every required field set to a plain valid value."""
    hints = hints_of(cls)
    plain: dict[Any, Any] = {bool: True, int: 7, float: 1.5, str: "x", bytes: b"x"}

    def value(hint: Any) -> Any:
        if hint in plain:
            return plain[hint]
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is list:
            return [value(args[0])]
        if origin is dict:
            return {value(args[0]): value(args[1])}
        if origin is typing.Union or origin is types.UnionType:
            return value(args[0])
        raise AssertionError(f"no sample for {hint!r}")

    return cls(**{f.name: value(hints[f.name]) for f in fields_of(cls)})


def header(**fields: Any) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def valid_header_fields(name: str) -> dict[str, Any]:
    msg = sample(TYPES[name])
    return {"v": p.PROTOCOL_VERSION, "t": name, **msg.to_fields()}


def assert_rejected(frames: list[Any]) -> ProtocolError:
    """decode() raises ProtocolError, and nothing else."""
    try:
        p.decode(frames)
    except ProtocolError as exc:
        assert str(exc), "a ProtocolError must say what was wrong"
        return exc
    except BaseException as exc:  # noqa: BLE001 - that is the point of the test
        pytest.fail(f"decode raised {type(exc).__name__}: {exc!r}, not ProtocolError")
    pytest.fail(f"decode accepted junk: {frames!r:.200}")


def decode_or_protocol_error(frames: list[Any]) -> p.Message | None:
    try:
        msg, _ = p.decode(frames)
    except ProtocolError:
        return None
    except BaseException as exc:  # noqa: BLE001
        pytest.fail(f"decode raised {type(exc).__name__}: {exc!r} on {frames!r:.200}")
    assert isinstance(msg, p.Message)
    return msg


# ------------------------------------------------------------------ the registry


def test_registry_is_complete_and_consistent() -> None:
    assert TYPE_NAMES, "no message types registered"
    for name, cls in TYPES.items():
        assert cls.TYPE == name
        assert dataclasses.is_dataclass(cls)
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen, f"{name} must be frozen"
        assert hasattr(cls, "__slots__"), f"{name} must be slotted"
        assert "TYPE" not in {f.name for f in fields_of(cls)}, f"{name}: TYPE became a field"
        for f in fields_of(cls):
            strategy_for(hints_of(cls)[f.name])  # every annotation is a wire type we know
    # the messages the data flow relies on (docs/ARCHITECTURE.md, "A job, step by step")
    for needed in ("hello", "hello_reply", "ack", "job_start", "map_task", "output_done",
                   "commit", "input_complete", "partition_complete", "fetch_partition",
                   "partition_data", "lease", "job_end", "shuffle_chunk", "heartbeat"):
        assert needed in TYPES, f"message type {needed} is missing"


def test_message_types_returns_a_copy() -> None:
    got = p.message_types()
    got.pop(TYPE_NAMES[0])
    assert TYPE_NAMES[0] in p.message_types()


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name", TYPE_NAMES)
def test_hand_made_instance_round_trips(name: str) -> None:
    msg = sample(TYPES[name])
    frames = p.encode(msg)
    assert len(frames) == 1 and isinstance(frames[0], bytes)
    raw = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    assert raw["v"] == p.PROTOCOL_VERSION and raw["t"] == name
    back, payload = p.decode(frames)
    assert back == msg and type(back) is type(msg) and payload == []


@pytest.mark.parametrize("name", TYPE_NAMES)
def test_defaults_may_be_omitted_on_the_wire(name: str) -> None:
    """New fields get defaults: an older peer that does not send them is still understood."""
    cls = TYPES[name]
    fields = valid_header_fields(name)
    for f in fields_of(cls):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            del fields[f.name]
    msg, _ = p.decode([header(**fields)])
    assert type(msg) is cls


@pytest.mark.parametrize("name", TYPE_NAMES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_generated_instances_round_trip(name: str, data: st.DataObject) -> None:
    msg = data.draw(message_strategy(TYPES[name]))
    back, payload = p.decode(p.encode(msg))
    assert back == msg and type(back) is type(msg) and payload == []


def test_payload_frames_pass_through_untouched() -> None:
    msg = p.ShuffleChunk(job_id="j", output_id="o", partition=3, seq=0)
    bulk = [b"\x00\xff" * 1000, bytearray(b"abc"), memoryview(b"xyz")]
    frames = p.encode(msg, *bulk)
    assert frames[1] is bulk[0] and frames[2] is bulk[1] and frames[3] is bulk[2]
    back, payload = p.decode(frames)
    assert back == msg and payload == bulk


def test_decode_accepts_zmq_frames_and_memoryviews() -> None:
    msg = p.MapTask(job_id="j", task_id=1, attempt=2, path="/x", offset=3, length=4)
    head, = p.encode(msg)
    back, payload = p.decode([zmq.Frame(head), zmq.Frame(b"data")])
    assert back == msg
    assert bytes(payload[0].buffer if hasattr(payload[0], "buffer") else payload[0]) == b"data"
    assert p.decode([memoryview(head)])[0] == msg
    assert p.decode([bytearray(head)])[0] == msg


def test_topic_messages_put_the_topic_first() -> None:
    hb = p.Heartbeat(node_id="n", incarnation="i", slots=2, busy=1, tasks_done=5)
    frames = p.encode_topic(p.TOPIC_HEARTBEAT, hb)
    assert frames[0] == p.TOPIC_HEARTBEAT
    assert p.decode(frames[1:])[0] == hb


def test_unknown_extra_fields_are_ignored() -> None:
    fields = valid_header_fields("ack")
    fields["added_in_v2"] = [1, 2, 3]
    msg, _ = p.decode([header(**fields)])
    assert msg == sample(p.Ack)


def test_records_round_trip_and_junk() -> None:
    records = [[b"word", 3], [b"\xff\xfe", 1]]
    assert p.unpack_records(p.pack_records(records)) == records
    counts = {b"a": 1, b"b": 2}
    assert p.unpack_records(p.pack_records(counts)) == counts
    for junk in (b"", b"\xc1", b"\xdd\xff\xff\xff\xff", b"\x92\x01"):
        with pytest.raises(ProtocolError):
            p.unpack_records(junk)


def test_file_names_that_are_not_utf8_travel_byte_for_byte() -> None:
    # Given two names that differ only in bytes UTF-8 cannot decode (PEP 383 surrogates)
    a, b = os.fsdecode(b"dir/a\xff.txt"), os.fsdecode(b"dir/a\xfe.txt")
    for name in (a, b):
        # When a map task and a job's progress carry the name
        task = p.MapTask(job_id="j", task_id=1, attempt=1, file=name, first_line=3)
        progress = p.JobProgress(job_id="j", job_name="invert", number=1, elapsed_s=0.5,
                                 inputs=[name, "plain.txt"])
        back, _ = p.decode(p.encode(task))
        again, _ = p.decode(p.encode(progress))
        # Then each arrives as the same str, whose bytes are the name on disk
        assert back == task and again == progress
        assert os.fsencode(back.file) == os.fsencode(name)  # type: ignore[attr-defined]
    assert p.decode(p.encode(p.MapTask(job_id="j", task_id=1, attempt=1, file=a)))[0] != \
        p.decode(p.encode(p.MapTask(job_id="j", task_id=1, attempt=1, file=b)))[0]
    # And the records a map(line, pos) emits from it come back distinct and whole
    records = [[f"{a}:1", [a, (b, 2)]], [f"{b}:1", 1]]
    assert p.unpack_records(p.pack_records(records)) == records


def test_a_header_extension_other_than_a_needed_surrogate_mark_is_refused() -> None:
    fields = valid_header_fields("map_task")
    for ext in (msgpack.ExtType(1, b"plain"), msgpack.ExtType(9, b"x"),
                msgpack.ExtType(1, b"\xff")):
        fields["file"] = ext
        frame = msgpack.packb(fields, use_bin_type=True)
        assert_rejected([frame])


# ------------------------------------------------------------------ junk frames


def test_empty_message() -> None:
    assert_rejected([])


@pytest.mark.parametrize("frame", [
    b"", b"\xc1", b"\x00", b"\xff" * 64, b"garbage that is not msgpack",
    b"\x81",                                  # map of one with nothing after it
    b"\x82\xa1v\x01",                         # truncated map
    b"\xa5hel",                               # truncated str
], ids=repr)
def test_undecodable_bytes(frame: bytes) -> None:
    assert_rejected([frame])


@pytest.mark.parametrize("value", [None, 1, -1, 1.5, True, "hello", b"bytes", [1, 2],
                                   [{"v": 1, "t": "ack", "seq": 1}]], ids=repr)
def test_header_that_is_not_a_map(value: Any) -> None:
    assert_rejected([msgpack.packb(value, use_bin_type=True)])


@pytest.mark.parametrize("version", [None, 0, p.PROTOCOL_VERSION - 1, p.PROTOCOL_VERSION + 1,
                                     -1, 1 << 40, "1", b"\x01", [1], {"v": 1},
                                     True, 1.0], ids=repr)
def test_wrong_or_missing_version(version: Any) -> None:
    fields = valid_header_fields("ack")
    if version is None:
        del fields["v"]
    else:
        fields["v"] = version
    exc = assert_rejected([header(**fields)])
    assert "version" in str(exc)


@pytest.mark.parametrize("name", [None, "", "no_such_type", "ACK", 1, b"ack", ["ack"],
                                  "ack\x00"], ids=repr)
def test_unknown_or_missing_type(name: Any) -> None:
    fields = valid_header_fields("ack")
    if name is None:
        del fields["t"]
    else:
        fields["t"] = name
    assert_rejected([header(**fields)])


@pytest.mark.parametrize("name", TYPE_NAMES)
def test_each_missing_required_field(name: str) -> None:
    cls = TYPES[name]
    required = [f.name for f in fields_of(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for field_name in required:
        fields = valid_header_fields(name)
        del fields[field_name]
        exc = assert_rejected([header(**fields)])
        assert field_name in str(exc)


def wrong_values(hint: Any) -> list[Any]:
    """Values of the wrong wire type for one annotation."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    base = [None, 1.25, "text", b"bin", [1], {"k": 1}, True]
    if hint is int:
        return [v for v in base if v is not True] + [True, False]
    if hint is bool:
        return [v for v in base if v is not True] + [0, 1]
    if hint is float:
        return [None, "1.0", b"1", [1.0], True]
    if hint is str:
        return [None, 1, b"bytes", ["s"], {"s": 1}, True]
    if origin is list:
        inner = wrong_values(args[0])
        return [None, 1, "s", {"k": 1}] + [[v] for v in inner[:3]]
    if origin is dict:
        return ([None, 1, "s", [1]] + [{k: sample_value(args[1])} for k in
                                       wrong_values(args[0])[:2] if _hashable(k)]
                + [{sample_value(args[0]): v} for v in wrong_values(args[1])[:2]])
    return base


def sample_value(hint: Any) -> Any:
    return {bool: True, int: 1, float: 1.0, str: "s"}.get(hint, [])


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("name", TYPE_NAMES)
def test_each_field_with_a_wrong_type(name: str) -> None:
    cls = TYPES[name]
    hints = hints_of(cls)
    for f in fields_of(cls):
        for bad in wrong_values(hints[f.name]):
            fields = valid_header_fields(name)
            fields[f.name] = bad
            exc = assert_rejected([header(**fields)])
            assert f.name in str(exc), (f.name, bad, str(exc))


BOMBS = {
    "array32 of 4G elements": b"\xdd\xff\xff\xff\xff",
    "map32 of 4G pairs": b"\xdf\xff\xff\xff\xff",
    "str32 of 4 GiB": b"\xdb\xff\xff\xff\xff",
    "bin32 of 4 GiB": b"\xc6\xff\xff\xff\xff",
    "ext32 of 4 GiB": b"\xc9\xff\xff\xff\xff\x01",
    "fixext": b"\xd4\x01\x00",
    "timestamp ext": b"\xd6\xff\x00\x00\x00\x00",
    "map with a bomb value": b"\x81\xa1v\xdd\xff\xff\xff\xff",
    "nested big declared arrays": b"\xdd\x00\x0f\x42\x40" * 1000,
    "nested big declared maps": b"\xdf\x00\x0f\x42\x40" * 1000,
    "100k nested arrays": b"\x91" * 100_000 + b"\xc0",
    "100k nested maps": b"\x81\xa1k" * 100_000 + b"\xc0",
    "deep inside a valid header": (b"\x83\xa1v\x01\xa1t\xa3ack\xa3seq" + b"\x91" * 5000
                                   + b"\x01"),
    "map key that is a list": b"\x81\x91\x01\x01",
    "map key that is a map": b"\x81\x81\x01\x01\x01",
    "invalid utf-8 in a str": b"\x81\xa1v\xa2\xff\xfe",
    "invalid utf-8 in a key": b"\x81\xa2\xc3\x28\x01",
    "trailing garbage": header(v=1, t="ack", seq=1) + b"\xc1\xc1",
    "two headers in one frame": header(v=1, t="ack", seq=1) * 2,
}


@pytest.mark.parametrize("frame", list(BOMBS.values()), ids=list(BOMBS))
def test_decoder_bombs_are_rejected_quickly(frame: bytes) -> None:
    started = time.monotonic()
    assert_rejected([frame])
    assert time.monotonic() - started < 2.0, "a few bytes of junk must not cost seconds"


@pytest.mark.parametrize("depth", [p.MAX_DEPTH + 1, p.MAX_DEPTH + 5, 1000])
def test_nesting_deeper_than_any_message(depth: int) -> None:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    fields = valid_header_fields("status_reply")
    fields["jobs"] = value
    exc = assert_rejected([msgpack.packb(fields, use_bin_type=True)])
    assert "deep" in str(exc) or "type" in str(exc)


def test_undeclared_fields_are_ignored_unless_nested_too_deeply() -> None:
    """A newer peer's extra field is dropped unread; one nested past the limit is refused
    (declared fields are bounded by their type check instead)."""
    fields = valid_header_fields("ack")
    fields["a_future_field"] = [[1, 2], {"k": [3]}]
    msg, _ = p.decode([msgpack.packb(fields, use_bin_type=True)])
    assert isinstance(msg, p.Ack)
    value: Any = 1
    for _ in range(p.MAX_DEPTH + 1):  # the header map is level 0: lists at 1..MAX_DEPTH + 1
        value = [value]
    fields["a_future_field"] = value
    exc = assert_rejected([msgpack.packb(fields, use_bin_type=True)])
    assert "deep" in str(exc)


def test_oversized_header_frame() -> None:
    fields = valid_header_fields("ack")
    fields["padding"] = b"\x00" * (p.MAX_HEADER_BYTES + 1)
    assert_rejected([header(**fields)])


def test_payload_frames_are_not_decoded() -> None:
    """Junk in bulk frames is the ledger's business (manifests), not the header decoder's."""
    msg = p.ShuffleChunk(job_id="j", output_id="o", partition=0, seq=0)
    back, payload = p.decode(p.encode(msg, b"\xc1\xdd\xff\xff\xff\xff"))
    assert back == msg and payload == [b"\xc1\xdd\xff\xff\xff\xff"]


# ------------------------------------------------------------------ fuzz


@FUZZ
@given(frames=st.lists(st.binary(max_size=256), max_size=3))
@example(frames=[b"\xdd\xff\xff\xff\xff"])
@example(frames=[b"\x80"])
@example(frames=[b""])
def test_fuzz_random_bytes(frames: list[bytes]) -> None:
    decode_or_protocol_error(frames)


MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | WIRE_INT | st.floats() | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8) | WIRE_INT, children, max_size=4),
    max_leaves=20)


@FUZZ
@given(name=st.sampled_from(TYPE_NAMES + ["", "nope"]),
       version=st.sampled_from([p.PROTOCOL_VERSION, p.PROTOCOL_VERSION, 0, 2, None]),
       fields=st.dictionaries(st.text(max_size=12), MSGPACK_VALUES, max_size=8),
       use_real_names=st.booleans(), data=st.data())
def test_fuzz_structured_headers(name: str, version: Any, fields: dict[str, Any],
                                 use_real_names: bool, data: st.DataObject) -> None:
    """Well-formed msgpack maps with plausible keys and random values."""
    head: dict[str, Any] = {}
    if version is not None:
        head["v"] = version
    head["t"] = name
    if use_real_names and name in TYPES:
        for f in fields_of(TYPES[name]):
            if data.draw(st.booleans()):
                head[f.name] = data.draw(MSGPACK_VALUES)
    head.update(fields)
    msg = decode_or_protocol_error([msgpack.packb(head, use_bin_type=True)])
    if msg is not None:
        assert msg.TYPE == name and version == p.PROTOCOL_VERSION


@FUZZ
@given(msg=ANY_MESSAGE, data=st.data())
def test_fuzz_mutated_valid_messages(msg: p.Message, data: st.DataObject) -> None:
    """Flip, cut and insert bytes of a real encoding."""
    frame = bytearray(p.encode(msg)[0])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(frame) - 1)))
        if op == "flip" and frame:
            frame[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut" and frame:
            del frame[pos:pos + data.draw(st.integers(1, 8))]
        elif op == "insert":
            frame[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del frame[pos:]
    assume(bytes(frame) != p.encode(msg)[0])
    decode_or_protocol_error([bytes(frame)])


@pytest.mark.slow
@settings(max_examples=max(FUZZ_EXAMPLES, 20_000), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(st.binary(max_size=2048), min_size=1, max_size=3))
def test_fuzz_random_bytes_long(frames: list[bytes]) -> None:
    """The long fuzz run (``--run-slow``)."""
    decode_or_protocol_error(frames)


@pytest.mark.slow
@settings(max_examples=max(FUZZ_EXAMPLES, 5_000), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(msg=ANY_MESSAGE, data=st.data())
def test_fuzz_mutated_valid_messages_long(msg: p.Message, data: st.DataObject) -> None:
    test_fuzz_mutated_valid_messages.hypothesis.inner_test(msg, data)  # type: ignore[attr-defined]


DECODED_VALUES = st.recursive(
    st.none() | st.booleans() | WIRE_INT | st.floats(allow_nan=False)
    | st.text(max_size=3) | st.binary(max_size=3),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.integers(-3, 3) | st.text(max_size=2) | st.booleans(), inner,
                      max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(value=DECODED_VALUES, data=st.data())
def test_compiled_validators_agree_with_the_reference_check(value: Any, data: Any) -> None:
    """The per-annotation validators decode_header uses say what _conforms says, for every
    field annotation of every message and any value msgpack can produce."""
    name = data.draw(st.sampled_from(TYPE_NAMES))
    for f in fields_of(TYPES[name]):
        hint = hints_of(TYPES[name])[f.name]
        assert p._validator(hint)(value) == p._conforms(value, hint), (name, f.name, value)


SHAPED_VALUES = st.one_of(
    st.dictionaries(WIRE_INT | st.booleans() | st.text(max_size=2),
                    st.lists(WIRE_INT | st.booleans() | st.text(max_size=1), max_size=3)
                    | WIRE_INT, max_size=4),
    st.lists(st.lists(WIRE_INT | st.booleans() | st.none(), max_size=3) | WIRE_INT,
             max_size=4))


@settings(max_examples=300, deadline=None)
@given(value=SHAPED_VALUES)
def test_nested_int_validators_agree_with_the_reference_check(value: Any) -> None:
    """Manifests (dict[int, list[int]]) and task lists (list[list[int]]) are checked in C
    at both levels; a bool, str or None anywhere inside must still fail as _conforms says."""
    for hint in (dict[int, list[int]], list[list[int]], list[dict[int, list[int]]]):
        assert p._validator(hint)(value) == p._conforms(value, hint), (hint, value)
        assert p._validator(hint)([value]) == p._conforms([value], hint), (hint, value)


@pytest.mark.parametrize("shape", ["list", "dict value", "tuple key"])
def test_depth_limit_is_exact(shape: str) -> None:
    """Containers at depth MAX_DEPTH pass, one level more is refused (the header is depth
    0), whether the nesting runs through lists, dict values or (msgpack array) dict keys."""
    def nest(levels: int) -> Any:
        value: Any = 1
        for i in range(levels):
            if shape == "list":
                value = [value]
            elif shape == "dict value":
                value = {1: value}
            elif i < levels - 1:  # msgpack array keys decode as (hashable) tuples
                value = (value,)
            else:  # the outermost level holds the rest as a key
                value = {value: 1}
        return value

    p._check_depth({"k": nest(p.MAX_DEPTH)})
    with pytest.raises(p.ProtocolError, match="deep"):
        p._check_depth({"k": nest(p.MAX_DEPTH + 1)})


def test_an_output_id_names_its_executor() -> None:
    oid = p.make_output_id("node.with.dots", 3, 4242, 7)
    assert p.output_executor(oid) == 3
    assert p.output_executor("forged") == -1 and p.output_executor("a.b.c.d") == -1
