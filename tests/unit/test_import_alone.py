"""Each pymr module imports on its own, first, in a fresh interpreter.

An import that works only because another module was imported before it (a cycle broken by
luck, a name set as a side effect) fails here. One interpreter per module, so each one is
the first pymr import of its process; the interpreters run a few at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pymr

ROOT = Path(pymr.__file__).parent


def module_names() -> list[str]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue          # ``python -m pymr`` runs the CLI (tested by the CLI's tests)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def import_alone(name: str) -> tuple[str, int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT.parent), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], env=env,
                          capture_output=True, text=True, timeout=60)
    return name, proc.returncode, proc.stderr


def test_module_list_is_complete() -> None:
    names = module_names()
    assert "pymr.wire.protocol" in names and "pymr.cli.main" in names and "pymr" in names


def test_each_module_imports_first_in_a_fresh_interpreter() -> None:
    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) * 2)) as pool:
        results = list(pool.map(import_alone, module_names()))
    failed = [f"{name}: exit {code}\n{err}" for name, code, err in results if code]
    assert not failed, "modules that do not import alone:\n" + "\n".join(failed)
