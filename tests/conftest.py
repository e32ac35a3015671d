"""Fixtures shared by every test directory.

* ``--run-slow`` runs tests marked ``slow`` (soak and long fuzz runs); without it they are
  skipped with a reason (``tox -e slow`` runs them alone).
* hypothesis: with ``CI`` set the ``ci`` profile is loaded -- no deadline (a loaded CI
  machine is slow), and a failure prints the ``@reproduce_failure`` blob to replay it.
* ``text_file`` / ``text_4m``: generated multilingual text (bench/gen_text.py), made once
  per session, with cached reference answers.
* ``no_leaked_children`` (autouse in tests/integration): every process a test
  starts is gone when it ends -- no child of this process (zombies included), no process
  carrying the test's environment tag (so orphans of a crashed daemon are found too), no
  thread and no file descriptor of this process left open.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests import helpers

settings.register_profile("ci", deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (soak and long fuzz runs)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long soak/fuzz runs, only with --run-slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# ------------------------------------------------------------------ text files


class TextFiles:
    """Generated text files, made once per (size, seed), and their reference answers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._expected: dict[tuple[Path, str], bytes] = {}
        self._counts: dict[tuple[Path, str], collections.Counter[bytes]] = {}

    def __call__(self, size: int, seed: int = 1) -> Path:
        path = self.root / f"text-{size}-{seed}.txt"
        if not path.exists():
            helpers.generate_text(path, size, seed)
        return path

    def counts(self, path: Path, tokenizer: str = "words") -> collections.Counter[bytes]:
        key = (path, tokenizer)
        if key not in self._counts:
            self._counts[key] = helpers.reference_for_files([path], tokenizer)
        return self._counts[key]

    def expected(self, path: Path, tokenizer: str = "words") -> bytes:
        key = (path, tokenizer)
        if key not in self._expected:
            self._expected[key] = helpers.expected_tsv(self.counts(path, tokenizer))
        return self._expected[key]


@pytest.fixture(scope="session")
def text_files(tmp_path_factory: pytest.TempPathFactory) -> TextFiles:
    """Factory: ``text_files(size, seed) -> Path``; ``.expected(path, tokenizer) -> bytes``."""
    return TextFiles(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="session")
def text_4m(text_files: TextFiles) -> Path:
    """4 MiB of generated text (64 splits at 64K)."""
    return text_files(4 << 20, seed=7)


@pytest.fixture
def write_text(tmp_path: Path) -> Callable[..., Path]:
    """Write bytes or str to a file under tmp_path: ``write_text("a.txt", "hello")``."""

    def write(name: str, content: bytes | str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    return write


# ------------------------------------------------------------------ process hygiene

#: How long processes a test started may take to disappear after the test returned. The code
#: under test joins what it starts, so this only covers the kernel finishing an exit.
LEAK_GRACE_S = 3.0


def _resource_tracker_pid() -> int | None:
    try:
        from multiprocessing import resource_tracker
        return resource_tracker._resource_tracker._pid  # type: ignore[attr-defined]
    except Exception:
        return None


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass  # not our child: init reaps it


def _start_pyzmq_garbage_collector() -> None:
    """pyzmq tracks zero-copy frames (``copy=False`` sends above its copy threshold) with a
    process-wide thread and context of its own, started on first use and kept until exit.
    Start it before the first fd snapshot so that it does not count as a leak of the test
    that happened to send the first large frame."""
    import zmq

    ctx = zmq.Context()
    try:
        a = ctx.socket(zmq.PAIR)
        b = ctx.socket(zmq.PAIR)
        a.bind("inproc://pymr-test-warm-gc")
        b.connect("inproc://pymr-test-warm-gc")
        a.send(b"x" * (1 << 18), copy=False)
        b.recv()
    finally:
        ctx.destroy(linger=0)


def _needs_hygiene(item: pytest.Item) -> bool:
    return "integration" in Path(str(item.path)).parts


@pytest.fixture(autouse=True)
def no_leaked_children(request: pytest.FixtureRequest,
                       monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Integration tests: prove every process (and descriptor) the test started is gone."""
    if not _needs_hygiene(request.node):
        yield
        return
    _start_pyzmq_garbage_collector()
    me = os.getpid()
    tag = uuid.uuid4().hex
    monkeypatch.setenv(helpers.PROC_TAG_VAR, tag)
    children_before = set(helpers.children_of(me))
    fds_before = helpers.open_fds(me)
    threads_before = set(threading.enumerate())
    yield
    problems = []

    mp_children = multiprocessing.active_children()  # also reaps finished ones
    if mp_children:
        problems.append(f"multiprocessing children still alive: {mp_children}")
    tracker = _resource_tracker_pid()
    ignore = children_before | ({tracker} if tracker else set())
    left = sorted(set(helpers.children_of(me)) - ignore)
    if left:  # no grace: a child the code under test started must be reaped when it returns
        problems.append(f"child processes not reaped: {helpers.describe(left)}")

    def orphans() -> list[int]:
        return [p for p in helpers.tagged_processes(tag) if p not in ignore and p not in left]

    if orphans():
        helpers.wait_until(lambda: not orphans(), LEAK_GRACE_S)
    orphaned = orphans()
    if orphaned:
        problems.append(f"processes started by the test still running: "
                        f"{helpers.describe(orphaned)}")

    def new_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]

    if new_threads():
        helpers.wait_until(lambda: not new_threads(), LEAK_GRACE_S)
    if new_threads():
        problems.append(f"threads left running: {new_threads()}")

    def fd_leak() -> dict[int, str]:
        now = helpers.open_fds(me)
        return {fd: target for fd, target in now.items() if fds_before.get(fd) != target}

    if fd_leak():  # zmq closes its descriptors in its own threads: give them a moment
        helpers.wait_until(lambda: not fd_leak(), LEAK_GRACE_S)
    leaked_fds = fd_leak()
    if leaked_fds:
        problems.append(f"file descriptors left open: {leaked_fds}")

    _kill(left + orphaned)  # do not poison the next test
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temporary directory (this process's and its children's) for spooled
    copies of stdin and pipes and the nodes' run directories, to check none is left."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    return spool
