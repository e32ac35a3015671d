"""pymr.engine.task_failures: where a failed task's record is and how the failure is worded,
from explicit splits of a small file, no sockets."""

from __future__ import annotations

from pathlib import Path

from pymr.engine.inputs import InputFile
from pymr.engine.task_failures import TaskPlaces, code_failure, task_error_line
from pymr.engine.task_source import SplitRef, count_newlines
from pymr.errors import JobCodeFailed, TaskFailed
from pymr.wire import protocol as p


def places(tmp_path: Path) -> TaskPlaces:
    """One input of ten lines "line 1" .. "line 10", cut into splits of three lines."""
    path = tmp_path / "in.txt"
    data = b"".join(b"line %d\n" % i for i in range(1, 11))
    path.write_bytes(data)
    f = InputFile(str(path), "in.txt", "plain", len(data), 0)
    starts = [0, data.index(b"line 4"), data.index(b"line 7"), data.index(b"line 10")]
    ends = starts[1:] + [len(data)]
    splits = [SplitRef(0, s, e - s) for s, e in zip(starts, ends, strict=True)]
    return TaskPlaces([f], splits)


def failed(task_id: int, record: int, stage: str = "map") -> p.TaskFailedReport:
    return p.TaskFailedReport(job_id="j", node_id="n", task_id=task_id, attempt=1,
                              exc_type="ValueError", message="bad", record=record,
                              stage=stage, traceback="tb", user_traceback="utb")


def test_a_record_is_named_by_file_and_line(tmp_path: Path) -> None:
    pl = places(tmp_path)
    assert pl.where(failed(2, 1)) == "in.txt:8"
    assert pl.where(failed(0, 0)) == "in.txt:1"
    assert pl.where(failed(3, 0)) == "in.txt:10"
    assert pl.where(failed(1, -1)) == "in.txt"        # the record is not known
    assert pl.where(failed(9, 0)) == ""               # no such task


def test_a_far_record_is_named_within_its_split(tmp_path: Path) -> None:
    pl = places(tmp_path)
    assert pl.where(failed(2, 1), scan_max=10) == "in.txt (line 2 of split 2)"
    assert pl.where(failed(1, 0), scan_max=100) == "in.txt:4"   # counted: now a mark
    assert pl.where(failed(2, 1), scan_max=30) == "in.txt:8"    # from the nearer mark


def test_a_position_split_knows_its_first_line(tmp_path: Path) -> None:
    pl = places(tmp_path)
    pl.splits[1].first_line = 40
    assert pl.where(failed(1, 2)) == "in.txt:42"


def test_count_newlines(tmp_path: Path) -> None:
    f = places(tmp_path).inputs[0]
    assert count_newlines(f, 0, f.size) == 10
    assert count_newlines(f, 0, 0) == 0


def test_the_failure_line_and_error(tmp_path: Path) -> None:
    pl = places(tmp_path)
    assert task_error_line("n1", failed(2, 1), pl) == \
        "map failed at in.txt:8 (node n1, task 2): ValueError: bad"
    assert task_error_line("n1", failed(2, -1, "combine"), pl) == \
        "combine failed in in.txt (node n1, task 2): ValueError: bad"
    err = code_failure("n1", failed(2, 1), pl)
    assert isinstance(err, TaskFailed)
    load = code_failure("n1", failed(0, -1, "load"), pl)
    assert isinstance(load, JobCodeFailed)
    assert "the job does not load on node n1: bad" in str(load)
