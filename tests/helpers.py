"""Shared test helpers: reference answers, generated text, and /proc process inspection.

Everything here is plain functions so that unit and integration tests (and the
fixtures in ``conftest.py``) can use them without a fixture.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
GEN_TEXT = ROOT / "bench" / "gen_text.py"

#: Environment variable carrying a per-test tag into every process a test starts, so that
#: processes orphaned by a crashed parent are still found (they keep their environment).
PROC_TAG_VAR = "PYMR_TEST_PROC_TAG"


# ------------------------------------------------------------------ reference answers


def expected_tsv(counts: collections.Counter[bytes] | dict[bytes, int]) -> bytes:
    """The exact bytes ``pymr job wordcount`` must print: count desc, then word asc (bytes)."""
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return b"".join(b"%s\t%d\n" % (w, c) for w, c in rows)


def reference_for_files(paths: Iterable[Path | str], tokenizer: str = "words"
                        ) -> collections.Counter[bytes]:
    """Whole-file rule per file, summed: files are never joined into one token."""
    return wordcount_counts(*(Path(path).read_bytes() for path in paths), tokenizer=tokenizer)


def _load_gen_text() -> ModuleType:
    mod = sys.modules.get("pymr_bench_gen_text")
    if mod is None:
        spec = importlib.util.spec_from_file_location("pymr_bench_gen_text", GEN_TEXT)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["pymr_bench_gen_text"] = mod
        spec.loader.exec_module(mod)
    return mod


def generate_text(path: Path | str, size: int, seed: int = 1) -> Path:
    """Seeded multilingual text of exactly ``size`` bytes (bench/gen_text.py)."""
    _load_gen_text().generate(str(path), size, seed)
    return Path(path)


def subprocess_env(*, clean: bool = False, **extra: str) -> dict[str, str]:
    """The environment for a ``python -m pymr`` child: this checkout first on the path.

    ``clean`` drops the caller's ``PYMR_*`` settings (a developer's ``PYMR_HOME``, ...) so
    that only ``extra`` configures the child; the per-test process tag is always kept.
    """
    env = dict(os.environ)
    if clean:
        env = {k: v for k, v in env.items()
               if not k.startswith("PYMR_") or k == PROC_TAG_VAR}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("PYTHONHASHSEED", None)
    env.update(extra)
    return env


# ------------------------------------------------------------------ missing tools


def strict_tools() -> bool:
    """Under CI (``CI`` set) as root, every tool the tests use must be there (.ci/run
    installs them): a missing one is a failure, never a quiet skip."""
    return bool(os.environ.get("CI")) and os.geteuid() == 0


def missing_tool(tool: str, why: str) -> NoReturn:
    """Skip the test because ``tool`` is missing -- or, under CI as root, fail naming it."""
    message = f"missing tool {tool!r}: {why}"
    if strict_tools():
        pytest.fail(f"{message} (CI as root: install it, see .ci/run)", pytrace=False)
    pytest.skip(message)


def require_tool(*names: str, why: str) -> str:
    """The path of the first of ``names`` on PATH; if none is, ``missing_tool``."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    missing_tool(" or ".join(names), why)


@contextlib.contextmanager
def tmpfs(mnt: Path, options: str, name: str = "pymr-test") -> Iterator[Path]:
    """A tmpfs mounted on ``mnt`` (made if missing) with ``options`` ("size=64k,..."),
    unmounted afterwards. Needs root: elsewhere ``missing_tool``."""
    why = "mounting a tmpfs needs root"
    if os.geteuid() != 0:
        missing_tool("mount -t tmpfs", why)
    mnt.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, name, str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        missing_tool("mount -t tmpfs", f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


# ------------------------------------------------------------------ answers


def one_error_line(err: str, *, job_traceback: bool = False) -> str:
    """The one ``pymr: error:`` line of stderr, which has no traceback of pymr's own.

    Without ``job_traceback`` that line is the whole of stderr (no traceback at all);
    with it, the line may be followed by the traceback of the job's own code (a job
    whose map or reduce raised), which must show no frame of pymr's.
    """
    if job_traceback:
        lines = [x for x in err.splitlines() if x.startswith("pymr: error:")]
        assert "pymr/" not in err, f"a traceback of pymr's own code: {err}"
    else:
        lines = err.strip().splitlines()
        assert "Traceback" not in err, f"a traceback on stderr: {err!r}"
    assert len(lines) == 1, f"expected one 'pymr: error:' line on stderr, got: {err!r}"
    assert lines[0].startswith("pymr: error:"), lines[0]
    return lines[0]


def parse_tsv(out: bytes) -> list[tuple[bytes, int]]:
    """``word<TAB>count`` lines as (word, count) rows, in their order."""
    rows = []
    for line in out.splitlines():
        word, _, count = line.rpartition(b"\t")
        rows.append((word, int(count)))
    return rows


def wordcount_counts(*datas: bytes, tokenizer: str = "words") -> collections.Counter[bytes]:
    """The single-process word count of several inputs' bytes, each counted on its own
    (inputs are never joined into one token)."""
    from pymr.wordtokens import reference_count

    total: collections.Counter[bytes] = collections.Counter()
    for data in datas:
        total.update(reference_count(data, tokenizer))
    return total


def wordcount_rows(*datas: bytes, tokenizer: str = "words") -> list[tuple[bytes, int]]:
    """``wordcount_counts`` as the job's records: count desc, then word asc."""
    return sorted(wordcount_counts(*datas, tokenizer=tokenizer).items(),
                  key=lambda kv: (-kv[1], kv[0]))


def wordcount_tsv(*datas: bytes, tokenizer: str = "words") -> bytes:
    """``wordcount_counts`` as the exact bytes ``pymr job wordcount`` prints."""
    return expected_tsv(wordcount_counts(*datas, tokenizer=tokenizer))


def assert_same_answer(got: bytes, expected: bytes) -> None:
    """``got`` is byte for byte the reference answer; else name the first differing line."""
    if got == expected:
        return
    got_lines, want_lines = got.splitlines(), expected.splitlines()
    first = next((i for i, (a, b) in enumerate(zip(got_lines, want_lines, strict=False))
                  if a != b), min(len(got_lines), len(want_lines)))
    raise AssertionError(
        f"answer differs from the reference: {len(got_lines)} lines, expected "
        f"{len(want_lines)}; first difference at line {first + 1}: got "
        f"{got_lines[first:first + 1]!r}, expected {want_lines[first:first + 1]!r}")


def assert_wordcount(out: bytes, *datas: bytes, tokenizer: str = "words") -> None:
    """``out`` is exactly the word count of ``datas`` (``wordcount_tsv``)."""
    assert_same_answer(out, wordcount_tsv(*datas, tokenizer=tokenizer))


# ------------------------------------------------------------------ /proc inspection


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1], pgrp [2])."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def children_of(pid: int) -> list[int]:
    """Direct children (zombies included) of ``pid``."""
    out = []
    for other in all_pids():
        fields = _stat_fields(other)
        if fields is not None and int(fields[1]) == pid:
            out.append(other)
    return out


def descendants_of(pid: int, *, live: bool = False) -> list[int]:
    """Children, grandchildren, ... of ``pid`` (one /proc scan); ``live``: no zombies."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for other in all_pids():
        fields = _stat_fields(other)
        if fields is not None and not (live and fields[0] == "Z"):
            parents[int(fields[1])].append(other)
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def executor_children(node_pid: int) -> list[int]:
    """A node daemon's live executors: its direct children except multiprocessing's
    resource tracker (executors are forked by the embedded node, spawned elsewhere)."""
    return sorted(pid for pid in children_of(node_pid)
                  if "resource_tracker" not in cmdline(pid)
                  and process_state(pid) not in (None, "Z", "X"))


def process_state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields is not None else None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    out = []
    for pid in all_pids():
        fields = _stat_fields(pid)
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            out.append(pid)
    return out


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries ``PROC_TAG_VAR=tag`` (never this process)."""
    needle = f"{PROC_TAG_VAR}={tag}".encode()
    me = os.getpid()
    out = []
    for pid in all_pids():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0") and process_state(pid) not in (None, "Z"):
            out.append(pid)
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_fds(pid: int) -> dict[int, str]:
    out = {}
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            out[int(name)] = os.readlink(f"{base}/{name}")
        except OSError:
            pass
    return out


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


#: ``python -c CLI_WITH_JOB JOB_FILE job wordcount ...``: the real ``pymr`` CLI in its own
#: process, running the job file JOB_FILE where the arguments name ``wordcount``.
CLI_WITH_JOB = (
    "import sys\n"
    "from pymr.cli.main import main\n"
    "args = sys.argv[2:]\n"
    "args[args.index('wordcount')] = sys.argv[1]\n"
    "sys.exit(main(args))\n")


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                 timeout_s: float = 15.0) -> int | None:
    """Ask a process to stop with ``sig``; kill it if it has not within ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def wait_until(predicate: Callable[[], object], timeout_s: float, what: Any = None, *,
               interval_s: float = 0.05) -> object:
    """Poll ``predicate`` until it returns a true value or the deadline passes.

    Returns the last value (falsy on timeout) -- or, when ``what`` is given (a text, or a
    callable returning one, evaluated only then), raises AssertionError naming it on
    timeout. Polling is the only way to observe another process's state here, so the
    interval is a poll period, not a synchronisation sleep: nothing depends on the period
    being long enough.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            if what is not None:
                detail = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for: "
                                     f"{detail}")
            return value
        time.sleep(interval_s)


def wait_serving(proc: subprocess.Popen[Any], output: Callable[[], str], timeout_s: float,
                 name: str = "node") -> str:
    """Until a started ``pymr node`` prints its "serving cluster" line (its log is read by
    ``output``); fail at once with the log if it exits, or when ``timeout_s`` passes."""

    def serving() -> bool:
        if "serving cluster" in output():
            return True
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited {proc.returncode} before serving:\n"
                                 + output())
        return False

    wait_until(serving, timeout_s, lambda: f"{name} to serve; its log:\n{output()}")
    return output()


def describe(pids: Iterable[int]) -> str:
    return ", ".join(f"{pid} [{process_state(pid)}] {cmdline(pid)!r}" for pid in pids)


# ------------------------------------------------------------------ job files

#: The smallest job file the job API promises to run, exactly as the README shows it.
SMALLEST_JOB = '''\
def map(line):
    words = line.split()
    for a, b in zip(words, words[1:]):
        yield a + " " + b, 1

def reduce(key, values):
    return sum(values)
'''


# ------------------------------------------------------------------ a failing job

#: A job program whose map raises on every line (shipped as source like any job).
FAILING_JOB = '''
"""A job whose map raises on every line."""


def map(line):
    raise ValueError("boom: this job always fails")


def reduce(key, values):
    return sum(values)
'''


class StdinLike:
    """Enough of sys.stdin for the CLI: a ``buffer`` with the bytes, not a terminal."""

    def __init__(self, f: Any) -> None:
        self.buffer = f

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return int(self.buffer.fileno())
