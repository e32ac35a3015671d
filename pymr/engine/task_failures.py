"""What the master says about a failed task: where in the input its record is, one line
saying what failed, and the typed error the job fails with (also when reduce raised); no
sockets.

A task is a split of an input (``task_source.SplitRef``); a node reports the failing record's index
within it, and ``TaskPlaces`` turns that into ``file:line``, counting lines from the
nearest split start already known (a failing job reports many attempts).
"""

from __future__ import annotations

from ..errors import JobCodeFailed, PymrError, TaskFailed
from ..wire import protocol as p
from .inputs import InputFile
from .task_source import SplitRef, count_newlines


class TaskPlaces:
    """Where a task's records are in the job's inputs (``splits``: task id -> split, the
    master's list, growing as the input is read)."""

    def __init__(self, inputs: list[InputFile], splits: list[SplitRef]) -> None:
        self.inputs = inputs
        self.splits = splits
        #: input index -> {offset of a split start: its 1-based line number}
        self._line_marks: dict[int, dict[int, int]] = {}

    def where(self, msg: p.TaskFailedReport, scan_max: int | None = None) -> str:
        """Where a failed task's record is: ``file:line``, the file alone (record not
        known), or the line within the split when counting lines up to it would read more
        than ``scan_max`` bytes (or the file cannot be read)."""
        if not 0 <= msg.task_id < len(self.splits):
            return ""
        ref = self.splits[msg.task_id]
        f = self.inputs[ref.input_index]
        if msg.record < 0:
            return f.display
        if ref.first_line:
            return f"{f.display}:{ref.first_line + msg.record}"
        # Lines counted from the nearest split start already known: a failing job reports
        # many attempts, and counting each from the file's start read it again every time.
        marks = self._line_marks.setdefault(ref.input_index, {0: 1})
        start = max(o for o in marks if o <= ref.offset)
        if scan_max is None or ref.offset - start <= scan_max:
            try:
                marks[ref.offset] = marks[start] + count_newlines(f, start, ref.offset - start)
                return f"{f.display}:{marks[ref.offset] + msg.record}"
            except (OSError, PymrError):
                pass
        return f"{f.display} (line {msg.record + 1} of split {msg.task_id})"


def task_error_line(node: str, msg: p.TaskFailedReport, places: TaskPlaces) -> str:
    """One line: what failed, where in the input, on which node and task, and why."""
    if msg.stage == "load":
        return f"the job does not load on node {node}: {msg.message}"
    where = places.where(msg)
    if where:
        where = f" at {where}" if msg.record >= 0 else f" in {where}"
    return (f"{msg.stage} failed{where} (node {node}, task {msg.task_id}): "
            f"{msg.exc_type}: {msg.message}")


def code_failure(node: str, msg: p.TaskFailedReport, places: TaskPlaces) -> PymrError:
    """The error a job fails with when its own code raised (at load, or in a task)."""
    line = task_error_line(node, msg, places)
    if msg.stage == "load":
        return JobCodeFailed(line, msg.user_traceback, msg.traceback)
    return TaskFailed(node, msg.task_id, msg.attempt, msg.exc_type, msg.message,
                      msg.traceback, line=line, user_traceback=msg.user_traceback)


def reduce_failure(node: str, msg: p.ReduceFailed) -> PymrError:
    """The error a job fails with when its reduce raised (for a key, or on a partition)."""
    what = f"reduce failed for key {msg.key}" if msg.key else "reducing a partition failed"
    return JobCodeFailed(f"{what} (node {node}, partition {msg.partition}): "
                         f"{msg.exc_type}: {msg.message}", msg.user_traceback, msg.traceback)
