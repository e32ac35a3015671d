"""Keep local folders out of committed benchmark results.

A results page says which commit and which machine kind, never which folder.  Every writer
passes what it writes through ``scrub`` (a string, or a JSON-able value, walked):

- a path in this repository becomes relative to its root (``bench/data/inputs/x.txt``);
- a path in a ``trees`` folder (a ``--tree``/``--prev-tree`` worktree) becomes
  ``COMMIT:rel/path`` and the folder itself ``COMMIT`` (its short hash, see ``tree_label``);
- the interpreter's folders become ``<site-packages>``, ``<stdlib>``, ``<python>``;
- a temp folder becomes ``<tmp>``, a home folder ``~``, any other ``/work/NAME`` ``<work>``.

``public_path(p)`` is the same for one path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_END = r"(?![\w.+@-])"  # a prefix ends at a path separator or at a non-path character
_PY_LIB = re.compile(r"<python>/lib/python3\.\d+/(site-packages/)?")
_FALLBACK = (
    (re.compile(r"(?<![\w.>~-])/(?:var/)?tmp" + _END), "<tmp>"),
    (re.compile(r"(?<![\w.>~-])/(?:root|home/[\w.-]+)" + _END), "~"),
    (re.compile(r"(?<![\w.>~-])/work/[\w.+@-]+" + _END), "<work>"),
)


def tree_label(tree: Path | str) -> str:
    """The commit a worktree is at (short hash, "+dirty" with local changes), else ``<tree>``."""
    try:
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=7", "HEAD"],
                              capture_output=True, text=True, timeout=30)
        if head.returncode != 0 or not head.stdout.strip():
            return "<tree>"
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=30)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "<tree>"


def _prefixes(trees: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """(folder, label) pairs, longest folder first; label "" means repository-relative."""
    pairs: dict[str, str] = {}
    for folder, label in (
            (sys.base_prefix, "<python>"), (sys.prefix, "<python>"),
            (tempfile.gettempdir(), "<tmp>"), (os.path.expanduser("~"), "~")):
        if folder and folder != "/":
            pairs[folder] = label
    pairs[str(ROOT)] = ""
    for folder, label in (trees or {}).items():
        pairs[str(Path(folder).resolve())] = label + ":"
        pairs[str(folder)] = label + ":"
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def _scrub_text(text: str, prefixes: list[tuple[str, str]]) -> str:
    for folder, label in prefixes:
        if folder.rstrip("/") not in text:
            continue
        pat = re.compile(r"(?<![\w.>~-])" + re.escape(folder.rstrip("/")) + _END + "(/?)")

        def repl(m: re.Match[str], label: str = label) -> str:
            if label == "":  # the repository: relative, its root "."
                return "" if m.group(1) else "."
            if label.endswith(":"):  # a worktree: COMMIT:path, its root COMMIT
                return label if m.group(1) else label[:-1]
            return label + m.group(1)

        text = pat.sub(repl, text)
    text = _PY_LIB.sub(lambda m: "<site-packages>/" if m.group(1) else "<stdlib>/", text)
    for pat, label in _FALLBACK:
        text = pat.sub(label, text)
    return text


def scrub(value: Any, trees: Mapping[str, str] | None = None) -> Any:
    """``value`` (a string, or lists/tuples/dicts of them) with local folders replaced.

    ``trees`` maps a worktree folder to its label (``tree_label``); values that are not
    strings (figures) are returned unchanged.
    """
    prefixes = _prefixes(trees)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return _scrub_text(v, prefixes)
        if isinstance(v, dict):
            return {walk(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return walk(value)


def public_path(p: Path | str, trees: Mapping[str, str] | None = None) -> str:
    """One path as a results page may show it (see the module docstring)."""
    return scrub(str(p), trees)
