"""Only the CLI modules (``pymr/cli/`` and ``__main__``) parse arguments: no other
module imports ``argparse`` or a CLI module, so the library never sees a Namespace."""

from __future__ import annotations

import ast
from pathlib import Path

import pymr

ROOT = Path(pymr.__file__).parent


def is_cli(path: Path) -> bool:
    return path.parent == ROOT / "cli" or path == ROOT / "__main__.py"


def is_cli_module(name: str) -> bool:
    return name == "cli" or name.startswith("cli_")


def forbidden_imports(path: Path) -> list[str]:
    """``argparse`` and ``pymr.cli.main*`` imports anywhere in ``path`` (functions included),
    as ``file:line: module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 0 and not base.startswith("pymr"):
                modules = [base]
            else:                   # inside pymr: the submodule named by "from" or "import"
                inner = base.removeprefix("pymr").lstrip(".")
                modules = [inner.split(".")[0]] if inner else [a.name for a in node.names]
                modules = [m for m in modules if is_cli_module(m)]  # already pymr's
        for name in modules:
            parts = name.split(".")
            if parts[0] == "argparse" or len(parts) == 1 and is_cli_module(name) or (
                    parts[0] == "pymr" and len(parts) > 1 and is_cli_module(parts[1])):
                found.append(f"{path.name}:{node.lineno}: {name}")
    return found


def test_the_check_sees_argparse_and_cli_imports(tmp_path: Path) -> None:
    # Given a module that imports argparse and a CLI module inside a function,
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef f():\n    import argparse\n"
                   "    from .cli_common import need_key\n    from . import cli\n")
    # then the check reports the three of them, and not os.
    assert forbidden_imports(bad) == ["bad.py:4: argparse", "bad.py:5: cli_common",
                                      "bad.py:6: cli"]


def test_no_library_module_imports_argparse_or_the_cli() -> None:
    offenders = [hit for path in sorted(ROOT.rglob("*.py")) if not is_cli(path)
                 for hit in forbidden_imports(path)]
    assert not offenders, "library code importing the CLI: " + "; ".join(offenders)
