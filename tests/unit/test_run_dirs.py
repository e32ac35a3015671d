"""Node run directories: private, owned, and swept when their node died without cleaning
up (SIGKILL), never while their node lives."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from pymr.runtime._exec_entry import OWNER_FILE, RUN_DIR_PREFIX, make_run_dir, sweep_stale_run_dirs


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def run_dir(parent: Path, name: str, owner: int | None) -> Path:
    path = parent / f"{RUN_DIR_PREFIX}{name}"
    (path / "spill").mkdir(parents=True)
    (path / "spill" / "out.0").write_bytes(b"x" * 100)
    if owner is not None:
        (path / OWNER_FILE).write_text(f"{owner}\n")
    return path


def test_make_run_dir_is_private_and_names_its_owner(tmp_path: Path) -> None:
    path = Path(make_run_dir("n1", str(tmp_path)))
    assert path.parent == tmp_path and path.name.startswith(f"{RUN_DIR_PREFIX}n1-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert (path / OWNER_FILE).read_text() == f"{os.getpid()}\n"


def test_sweep_removes_dirs_of_dead_owners_only(tmp_path: Path) -> None:
    # Given the dirs of a dead node, of a live one, one being created, one with junk,
    # and an unrelated directory
    dead = run_dir(tmp_path, "dead-abc", dead_pid())
    live = run_dir(tmp_path, "live-abc", os.getpid())
    creating = run_dir(tmp_path, "new-abc", None)
    junk = run_dir(tmp_path, "junk-abc", None)
    (junk / OWNER_FILE).write_text("not a pid")
    other = tmp_path / "something-else"
    other.mkdir()
    (other / OWNER_FILE).write_text(f"{dead_pid()}\n")
    # When a node starts and sweeps
    removed = sweep_stale_run_dirs(str(tmp_path))
    # Then only the dead node's directory (and its spilled files) is gone
    assert removed == [str(dead)]
    assert not dead.exists()
    assert live.exists() and creating.exists() and junk.exists() and other.exists()


def test_make_run_dir_sweeps_first(tmp_path: Path) -> None:
    dead = run_dir(tmp_path, "dead-xyz", dead_pid())
    fresh = Path(make_run_dir("n2", str(tmp_path)))
    assert not dead.exists() and fresh.exists()


def test_sweep_of_a_missing_parent_is_harmless(tmp_path: Path) -> None:
    assert sweep_stale_run_dirs(str(tmp_path / "absent")) == []
