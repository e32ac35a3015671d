"""RetainedOutputs: memory round trip, spilling, cleanup, failures, then random ops vs a dict."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymr.engine import retained as retained_mod
from pymr.engine.retained import RetainedOutputs

Parts = dict[int, list[bytes]]


def parts_of(size: int, tag: bytes) -> Parts:
    """``size`` bytes over partitions 0 and 2 (1 is absent), chunks told apart by content."""
    half = size // 2
    return {0: [tag * half], 2: [tag.lower() * (size - half - 1), b"!"]}


def sized(n: int, fill: bytes = b"a") -> Parts:
    return {0: [fill * n]}


def spill_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_memory_round_trip(tmp_path: Path) -> None:
    r = RetainedOutputs(tmp_path / "spill")
    parts = {0: [b"a", b"bc"], 3: [b"def"], 5: []}
    r.add("n1.0.123.1", parts)
    parts[0].append(b"mutated after add")  # add copies the lists
    assert "n1.0.123.1" in r and len(r) == 1
    assert r.chunks("n1.0.123.1", 0) == [b"a", b"bc"]
    assert r.chunks("n1.0.123.1", 3) == [b"def"]
    assert r.chunks("n1.0.123.1", 5) == []
    assert r.chunks("n1.0.123.1", 1) == []
    assert r.memory_bytes == 6 and r.spilled_bytes == 0
    assert not (tmp_path / "spill").exists()  # created lazily, only on a spill
    r.close()


def test_unknown_and_dropped_are_none(tmp_path: Path) -> None:
    r = RetainedOutputs(tmp_path, memory_limit=0)
    assert r.chunks("nope", 0) is None
    assert "nope" not in r and 42 not in r
    r.add("a", {0: [b"x"]})
    r.drop("a")
    r.drop("a")  # dropping twice (or an unknown id) is a no-op
    assert r.chunks("a", 0) is None and len(r) == 0
    r.close()


def test_spill_beyond_limit_fifo(tmp_path: Path) -> None:
    d = tmp_path / "spill"
    r = RetainedOutputs(d, memory_limit=10)
    a, b, c, e = parts_of(4, tag=b"A"), parts_of(5, tag=b"B"), sized(3, b"C"), sized(6, b"E")
    r.add("a", a)
    r.add("b", b)
    assert (r.memory_bytes, r.spilled_bytes) == (9, 0) and spill_files(d) == []
    r.add("c", c)  # 12 > 10: the oldest, a (4 bytes), goes
    assert (r.memory_bytes, r.spilled_bytes) == (8, 4)
    assert [n.endswith("-a.spill") for n in spill_files(d)] == [True]
    r.add("e", e)  # 14 > 10: b (5 bytes) goes next, not c or e
    assert (r.memory_bytes, r.spilled_bytes) == (9, 9)
    assert len(spill_files(d)) == 2 and any(n.endswith("-b.spill") for n in spill_files(d))
    for oid, parts in {"a": a, "b": b, "c": c, "e": e}.items():
        for p in range(3):
            assert r.chunks(oid, p) == parts.get(p, []), (oid, p)
    assert len(r) == 4
    r.close()


def test_spill_includes_the_one_just_added(tmp_path: Path) -> None:
    r = RetainedOutputs(tmp_path, memory_limit=10)
    big = {0: [os.urandom(7), b"", os.urandom(9)], 2: [os.urandom(1)]}
    r.add("big", big)
    assert (r.memory_bytes, r.spilled_bytes) == (0, 17)
    assert r.chunks("big", 0) == big[0] and r.chunks("big", 2) == big[2]
    assert r.chunks("big", 1) == []
    r.close()


def test_limit_zero_spills_everything(tmp_path: Path) -> None:
    r = RetainedOutputs(tmp_path, memory_limit=0)
    for i in range(3):
        r.add(f"o{i}", sized(i + 1))
    assert (r.memory_bytes, r.spilled_bytes) == (0, 6)
    assert len(spill_files(tmp_path)) == 3
    r.close()


def test_no_spill_dir_keeps_all_in_memory() -> None:
    r = RetainedOutputs(None, memory_limit=0)
    r.add("a", sized(100))
    assert (r.memory_bytes, r.spilled_bytes) == (100, 0)
    assert r.chunks("a", 0) == [b"a" * 100]
    r.close()


def test_odd_ids_get_safe_unique_names(tmp_path: Path) -> None:
    r = RetainedOutputs(tmp_path, memory_limit=0)
    ids = ["../../etc/passwd", "a/b", "a.b", "a_b", "", "x" * 500, "\u00e9\x00"]
    for i, oid in enumerate(ids):
        r.add(oid, sized(i + 1))
    names = spill_files(tmp_path)
    assert len(names) == len(ids)
    assert all("/" not in n and len(n) < 100 for n in names)
    for i, oid in enumerate(ids):
        assert r.chunks(oid, 0) == [b"a" * (i + 1)]
    r.close()
    assert spill_files(tmp_path) == []


def test_two_instances_share_a_dir(tmp_path: Path) -> None:
    r1, r2 = RetainedOutputs(tmp_path, 0), RetainedOutputs(tmp_path, 0)
    r1.add("same", sized(3, b"1"))
    r2.add("same", sized(3, b"2"))
    assert len(spill_files(tmp_path)) == 2
    r1.close()
    assert r2.chunks("same", 0) == [b"222"]
    r2.close()


def test_replace_drops_old(tmp_path: Path) -> None:
    r = RetainedOutputs(tmp_path, memory_limit=5)
    r.add("a", sized(8, b"o"))
    assert len(spill_files(tmp_path)) == 1
    r.add("a", sized(2, b"n"))  # replaces the spilled one: its file goes
    assert spill_files(tmp_path) == [] and len(r) == 1
    assert (r.memory_bytes, r.spilled_bytes) == (2, 0)
    assert r.chunks("a", 0) == [b"nn"]
    r.add("a", sized(1, b"m"))  # replaces an in-memory one
    assert (r.memory_bytes, r.spilled_bytes, len(r)) == (1, 0, 1)
    r.close()


def test_drop_deletes_file(tmp_path: Path) -> None:
    r = RetainedOutputs(tmp_path, memory_limit=0)
    r.add("a", sized(4))
    r.add("b", sized(5))
    assert len(spill_files(tmp_path)) == 2
    r.drop("a")
    assert len(spill_files(tmp_path)) == 1 and r.spilled_bytes == 5
    assert r.chunks("b", 0) == [b"a" * 5]
    r.close()


def test_close_removes_files_and_created_dirs_idempotent(tmp_path: Path) -> None:
    d = tmp_path / "x" / "y" / "spill"
    r = RetainedOutputs(d, memory_limit=3)
    r.add("a", sized(4))
    r.add("b", sized(2))
    assert d.is_dir() and len(spill_files(d)) == 1
    r.close()
    assert not (tmp_path / "x").exists()  # every directory it made, parents too
    assert len(r) == 0 and r.memory_bytes == 0 and r.spilled_bytes == 0
    assert r.chunks("a", 0) is None and r.chunks("b", 0) is None
    r.close()
    assert list(tmp_path.iterdir()) == []


def test_close_keeps_preexisting_dir_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "theirs").write_bytes(b"keep")
    r = RetainedOutputs(tmp_path, memory_limit=0)
    r.add("a", sized(4))
    r.close()
    assert spill_files(tmp_path) == ["theirs"]

    d = tmp_path / "made"
    r = RetainedOutputs(d, memory_limit=0)
    r.add("a", sized(4))
    (d / "foreign").write_bytes(b"x")
    r.close()
    assert spill_files(d) == ["foreign"]  # not empty: left in place


def test_modes(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        d = tmp_path / "p" / "spill"
        r = RetainedOutputs(d, memory_limit=0)
        r.add("a", sized(4))
    finally:
        os.umask(old)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "p").stat().st_mode) == 0o700
    (f,) = d.iterdir()
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    r.close()


def test_uncreatable_dir_keeps_memory_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_bytes(b"")
    r = RetainedOutputs(tmp_path / "file" / "spill", memory_limit=2)
    with caplog.at_level(logging.WARNING, logger="pymr.engine.retained"):
        for i in range(5):
            r.add(f"o{i}", sized(i + 3))
    warnings = [rec for rec in caplog.records if rec.name == "pymr.engine.retained"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert (r.memory_bytes, r.spilled_bytes) == (3 + 4 + 5 + 6 + 7, 0)
    for i in range(5):
        assert r.chunks(f"o{i}", 0) == [b"a" * (i + 3)]
    r.close()
    assert spill_files(tmp_path) == ["file"]


def test_write_failure_removes_partial_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    r = RetainedOutputs(tmp_path, memory_limit=0)
    r.add("ok", {0: [b"first"]})  # spilled before the disk "fills"
    class FullDisk:
        """A file whose first write lands one byte and then finds the disk full."""

        def __init__(self, fd: int, mode: str, closefd: bool = True) -> None:
            self.fd = fd

        def write(self, data: bytes) -> int:
            os.write(self.fd, data[:1])
            raise OSError(28, "No space left on device")

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            os.close(self.fd)

    monkeypatch.setattr(retained_mod, "open", FullDisk, raising=False)
    with caplog.at_level(logging.WARNING, logger="pymr.engine.retained"):
        r.add("big", {0: [b"x" * 10, b"y"], 1: [b"z"]})
        r.add("more", {0: [b"m"]})
    assert len([x for x in caplog.records if x.name == "pymr.engine.retained"]) == 1
    assert len(spill_files(tmp_path)) == 1  # only "ok"; the partial file is gone
    assert (r.memory_bytes, r.spilled_bytes) == (13, 5)
    assert r.chunks("big", 0) == [b"x" * 10, b"y"] and r.chunks("big", 1) == [b"z"]
    assert r.chunks("ok", 0) == [b"first"] and r.chunks("more", 0) == [b"m"]
    r.close()
    assert spill_files(tmp_path) == []


def test_file_deleted_behind_its_back_raises(tmp_path: Path) -> None:
    r = RetainedOutputs(tmp_path, memory_limit=0)
    r.add("a", {0: [b"abc"], 1: [b"d"]})
    (f,) = tmp_path.iterdir()
    f.unlink()
    with pytest.raises(OSError):
        r.chunks("a", 0)
    assert r.chunks("a", 7) == []  # no chunks to read: no file needed
    r.close()  # a missing file is not an error on cleanup


def test_truncated_file_raises(tmp_path: Path) -> None:
    r = RetainedOutputs(tmp_path, memory_limit=0)
    r.add("a", {0: [b"abc"], 1: [b"defg"]})
    (f,) = tmp_path.iterdir()
    os.truncate(f, 5)
    assert r.chunks("a", 0) == [b"abc"]
    with pytest.raises(OSError):
        r.chunks("a", 1)
    r.close()


def test_negative_limit_refused() -> None:
    with pytest.raises(ValueError):
        RetainedOutputs(None, memory_limit=-1)


# ------------------------------------------------------------------ property test
IDS = st.sampled_from(["a", "b.c", "d/e", "f"])
CHUNK = st.binary(max_size=6)
PARTS = st.dictionaries(st.integers(0, 3), st.lists(CHUNK, max_size=3), max_size=3)
OPS = st.lists(st.one_of(st.tuples(st.just("add"), IDS, PARTS),
                         st.tuples(st.just("drop"), IDS, st.none())), max_size=12)


@settings(max_examples=50, deadline=None)
@given(ops=OPS, limit=st.integers(0, 40), spill=st.booleans())
def test_random_ops_match_dict_model(ops: list[tuple[str, str, Parts | None]],
                                     limit: int, spill: bool) -> None:
    with tempfile.TemporaryDirectory() as base:
        d = Path(base) / "spill"
        r = RetainedOutputs(d if spill else None, memory_limit=limit)
        model: dict[str, Parts] = {}
        for op, oid, parts in ops:
            if op == "add":
                assert parts is not None
                r.add(oid, parts)
                model[oid] = {p: list(c) for p, c in parts.items()}
                if spill:
                    assert r.memory_bytes <= limit
            else:
                r.drop(oid)
                model.pop(oid, None)
            total = sum(len(c) for ps in model.values() for cs in ps.values() for c in cs)
            assert r.memory_bytes + r.spilled_bytes == total
            assert len(r) == len(model)
            if not spill:
                assert r.spilled_bytes == 0
            for oid2 in ["a", "b.c", "d/e", "f"]:
                assert (oid2 in r) == (oid2 in model)
                for p in range(5):
                    got = r.chunks(oid2, p)
                    want = None if oid2 not in model else model[oid2].get(p, [])
                    assert got == want
        if spill:
            assert len(spill_files(d)) <= len(model)
        r.close()
        assert not d.exists()
