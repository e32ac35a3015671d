"""partition_of: a word lands in the same partition in every process and on every machine.

Python's ``hash()`` of bytes is salted per process (PYTHONHASHSEED); a partitioner built on
it would send the same word to different reducers from different mappers. The subprocess
test computes partitions under several seeds and compares them byte for byte.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymr.wire.keys import partition_hashes, partition_of
from tests import helpers

KEYS = [b"", b"a", b"the", b"The", b"don't", "it\u2019s".encode(), "\u00e9".encode(),
        "e\u0301".encode(), "\u03c3\u03bf\u03c6\u03af\u03b1".encode(), "\u6f22\u5b57".encode(),
        "\U0001f600".encode(), b"\xff\xfe\x00", b"x" * 10_000] + \
       [b"word%d" % i for i in range(2000)]
PARTITION_COUNTS = [1, 2, 3, 7, 16, 64, 1000]

CHILD = r"""
import json, sys
from pymr.wire.keys import partition_of
keys = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
counts = json.loads(sys.argv[1])
out = {str(r): [partition_of(k, r) for k in keys] for r in counts}
out["hash"] = [hash(k) for k in keys[:50]]
print(json.dumps(out))
"""


def partitions_in_subprocess(seed: str) -> dict[str, list[int]]:
    env = helpers.subprocess_env(PYTHONHASHSEED=seed)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(PARTITION_COUNTS)],
                          input=json.dumps([k.hex() for k in KEYS]), capture_output=True,
                          text=True, env=env, timeout=60, check=True)
    return json.loads(proc.stdout)


def test_same_partition_under_every_hash_seed() -> None:
    here = {str(r): [partition_of(k, r) for k in KEYS] for r in PARTITION_COUNTS}
    results = {seed: partitions_in_subprocess(seed) for seed in ("0", "1", "12345", "random")}
    hashes = {tuple(res.pop("hash")) for res in results.values()}
    assert len(hashes) > 1, "the seeds did not change hash(): the test proves nothing"
    for seed, res in results.items():
        assert res == here, f"PYTHONHASHSEED={seed} moved words to other partitions"


@pytest.mark.parametrize("r", PARTITION_COUNTS)
def test_partition_is_in_range(r: int) -> None:
    for k in KEYS:
        assert 0 <= partition_of(k, r) < r


def test_known_values_never_change() -> None:
    """Pinned values: nodes of different builds must agree (a change is a protocol change)."""
    import zlib
    for k in KEYS[:20]:
        for r in PARTITION_COUNTS:
            assert partition_of(k, r) == zlib.crc32(k) % r


def test_partitions_are_balanced_enough() -> None:
    r = 7
    counts = Counter(partition_of(b"word%d" % i, r) for i in range(70_000))
    assert set(counts) == set(range(r))
    assert max(counts.values()) < 1.1 * min(counts.values())


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=64), r=st.integers(1, 10_000))
def test_deterministic_and_in_range(key: bytes, r: int) -> None:
    p = partition_of(key, r)
    assert p == partition_of(bytes(key), r) and 0 <= p < r


ECHO_JOB = """
from pymr.api import sum_values

def map(line):
    yield line.encode(), 1

combine = reduce = sum_values
"""


@pytest.mark.parametrize("r", [1, 3, 7])
def test_map_side_sends_each_word_to_partition_of(r: int) -> None:
    """What the executor shuffles agrees with partition_of, which the reducers rely on."""
    from pymr.engine.mapside import MapSide
    from pymr.jobs import JobSpec
    from pymr.jobs.program import load_program
    from pymr.runtime.maprunner import MapJob, MapRunner
    from pymr.wire import protocol as p

    sent: list[tuple[str, int, list[tuple[int, bytes]]]] = []

    def push(job_id: str, output_id: str, part: int, endpoint: str,
             chunks: list[tuple[int, bytes]], epoch: int) -> bool:
        sent.append((endpoint, part, chunks))
        return True

    reports: list[p.Message] = []
    runner = MapRunner("n0", 0, lambda msg, *payload: reports.append(msg), push)
    spec = p.ExecJob(job_id="j", job_name="echo", source="", sha256="",
                     num_partitions=r, partitions=[],
                     shuffle_endpoints={i: f"ep{i}" for i in range(r)})
    program = load_program(JobSpec.from_source("echo", ECHO_JOB))
    words = [k for k in KEYS if b"\n" not in k and b"\r" not in k and k.isascii()]
    mapside = MapSide(program)
    mapside.add_split(b"".join(w + b"\n" for w in words))
    job = MapJob(spec=spec, program=program, mapside=mapside, pending=[[0, 1]])
    runner.flush(job)
    seen: dict[bytes, int] = {}
    for endpoint, part, chunks in sent:
        assert endpoint == f"ep{part}"
        for _seq, chunk in chunks:
            for key, count in zip(*p.unpack_chunk(chunk), strict=True):
                assert partition_of(key, r) == part, key
                seen[key] = seen.get(key, 0) + count
    from collections import Counter
    assert seen == Counter(words)
    assert any(isinstance(m, p.OutputDone) for m in reports)


MIXED_KEYS: list[Any] = [b"a", "a", 1, 1.5, -3, None, True, ("a", 1), ("a", (b"x", None)),
                         2.0, "\u00e9", (), ""]


@pytest.mark.parametrize("r", [1, 2, 5, 64])
def test_split_by_partition_follows_partition_of_for_every_key_type(r: int) -> None:
    from pymr.runtime.maprunner import split_by_partition

    records = {k: i for i, k in enumerate(MIXED_KEYS)}
    parts = split_by_partition(records, r)
    assert sorted(i for _, values in parts for i in values) == sorted(records.values())
    for part, (keys, values) in enumerate(parts):
        for k, v in zip(keys, values, strict=True):
            assert partition_of(k, r) == part and records[k] == v


def test_equal_keys_share_a_partition() -> None:
    """1, 1.0 and True are one key in every process's dicts: they must meet in one reducer."""
    for r in (2, 3, 7, 1000):
        assert partition_of(1, r) == partition_of(1.0, r) == partition_of(True, r)
        assert partition_of((1, "a"), r) == partition_of((1.0, "a"), r)


def test_str_and_bytes_keys_are_distinct_but_hash_alike() -> None:
    """A str key hashes as its UTF-8 bytes (cheap), and still comes back as a str."""
    from pymr.wire import protocol as p

    assert partition_of("word", 7) == partition_of(b"word", 7)
    back = p.unpack_records(p.pack_records({"word": 1, b"word": 2}))
    assert back == {"word": 1, b"word": 2}
    assert {type(k) for k in back} == {str, bytes}


@given(st.one_of(st.lists(st.text()), st.lists(st.binary()),
                 st.lists(st.one_of(st.text(), st.binary(), st.integers()))),
       st.integers(min_value=1, max_value=64))
def test_bulk_partition_hashes_are_partition_of(keys: list[Any], r: int) -> None:
    """The executor's bulk path (one type of key hashed in C) is the one rule."""
    keys = keys + ["\udcff lone surrogate"] if keys and type(keys[0]) is str else keys
    assert [h % r for h in partition_hashes(keys)] == [partition_of(k, r) for k in keys]
