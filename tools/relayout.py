#!/usr/bin/env python3
"""Move pymr's flat modules into subpackages by layer, and rewrite every reference to them.

Run it at the root of a clean checkout::

    python tools/relayout.py            # moves with ``git mv`` and rewrites; commits nothing
    python tools/relayout.py --check    # only says what it would move, and whether it can

What it does, in order:

1. Refuses unless the work tree is clean, and fails with a list when a module under
   ``pymr/`` is not named in ``MAPPING`` (a module added since the table was written: add it
   to the table, with the layer its imports allow). If every move is already done it says so
   and stops (it is safe to run twice); a half-done layout is refused.
2. ``git mv``\\ s each module to its new place and writes each new subpackage's
   ``__init__.py`` (``PACKAGES``: a docstring saying what it holds and what it may import).
3. Rewrites references in the tracked text files (``REWRITE_GLOBS``): dotted names
   (``pymr.protocol`` → ``pymr.wire.protocol``: imports, ``python -m`` and ``"-m"``
   strings, ``monkeypatch``/``mock.patch`` targets, ``importlib`` strings, entry points),
   paths in prose (``pymr/master.py``, and ```scheduler.py``` in Markdown), and, in Python
   files, every relative import and ``from pymr import x`` (read with ``ast``, so imports
   inside functions and under ``TYPE_CHECKING`` are found too), recomputed from the
   module's new place.
4. Moves the layering tests kept next to this script into ``tests/unit/`` (they replace
   ``test_import_cycles.py``) and sorts the rewritten import blocks with ``ruff --select I``.

Historical benchmark results (``bench/**/RESULTS*``, ``PEERS*``, ``*.json``) are left as
they were measured. Afterwards: run the checks, then commit (see ``--help``).
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: Every module and package of pymr -> its dotted name after the move (relative to
#: ``pymr``). A name mapped to itself stays where it is. Layers, lowest first: the top-level
#: base, wire, jobs, engine, net, runtime, dashboard, cli (tests/unit/test_layers.py holds
#: the same order and checks it).
MAPPING: dict[str, str] = {
    # base: everyone may import these; they import only each other.
    "__init__": "__init__",
    "__main__": "__main__",
    "_version": "_version",
    "api": "api",
    "config": "config",
    "errors": "errors",
    "wording": "wording",
    "tokenize": "wordtokens",        # job files import it; "tokenize" shadows the stdlib
    # wire: what travels and how it is encoded.
    "protocol": "wire.protocol",
    "keys": "wire.keys",
    # jobs (a package already): job programs and the built-in jobs.
    "jobs": "jobs",
    # engine: sans-I/O cores and the data path's files.
    "splits": "engine.splits",
    "inputs": "engine.inputs",
    "scheduler": "engine.scheduler",
    "liveness": "engine.liveness",
    "control": "engine.control",
    "ledger": "engine.ledger",
    "mapside": "engine.mapside",
    "reduceside": "engine.reduceside",
    "heap": "engine.heap",
    "runs": "engine.runs",
    "retained": "engine.retained",
    "partfiles": "engine.partfiles",
    "fetch": "engine.fetch",
    "output": "engine.output",
    "fileio": "engine.fileio",
    "commits": "engine.commits",
    "partitions": "engine.partitions",
    "results": "engine.results",
    "task_failures": "engine.task_failures",
    "task_source": "engine.task_source",
    "job_progress": "engine.job_progress",
    "summary": "engine.summary",
    # net: sockets, keys, discovery, peers, observers.
    "transport": "net.transport",
    "security": "net.security",
    "discovery": "net.discovery",
    "firewall": "net.firewall",
    "reach": "net.reach",
    "peerstore": "net.peerstore",
    "keeper": "net.keeper",
    "members": "net.members",
    "ladder": "net.ladder",
    "status": "net.status",
    # runtime: the processes.
    "master": "runtime.master",
    "node": "runtime.node",
    "executor": "runtime.executor",
    "supervisor": "runtime.supervisor",
    "jobtable": "engine.jobtable",
    "cluster": "runtime.cluster",
    "_embedded_node": "runtime._embedded_node",
    "_exec_entry": "runtime._exec_entry",
    "runner": "runtime.runner",
    "state": "runtime.state",
    "machine": "runtime.machine",
    "links": "runtime.links",
    "maprunner": "runtime.maprunner",
    "reducehost": "runtime.reducehost",
    "shufflepush": "runtime.shufflepush",
    "nodeservice": "runtime.nodeservice",
    "placement": "runtime.placement",
    # dashboard (a package already): the web dashboard, an observer.
    "dashboard": "dashboard",
    # cli: the commands.
    "cli": "cli.main",
    "cli_cluster": "cli.cluster",
    "cli_common": "cli.common",
    "cli_dashboard": "cli.dashboard",
    "cli_discovery": "cli.discovery",
    "cli_doctor": "cli.doctor",
    "doctor": "cli.doctor_checks",
    "doctor_members": "cli.doctor_members",
    "diagnosis": "cli.diagnosis",
}

#: The new subpackages and their docstrings.
PACKAGES: dict[str, str] = {
    "wire": (
        "What travels between pymr's processes, and how it is encoded.\n\n"
        "``protocol`` holds every message, the header codec and the records codec (the only\n"
        "module that speaks msgpack); ``keys`` the types that travel, the partition of a key,\n"
        "the total order and the merge. It may import only the base modules at the top of\n"
        "``pymr`` (``errors``, ``config``, ...).\n"),
    "engine": (
        "The data path without sockets: cutting inputs into splits, the map and reduce\n"
        "sides, the scheduler, liveness, the acked control channel, the exactly-once ledger,\n"
        "sorted runs, retained outputs, part files and the output writers.\n\n"
        "Most of it is sans-I/O and tested with explicit events. It may import the base\n"
        "modules, ``pymr.wire`` and ``pymr.jobs``; never ``net``, ``runtime`` or the CLI.\n"),
    "net": (
        "The network: socket helpers, the cluster key with CURVE and ZAP, mDNS discovery,\n"
        "the peer store, members, the discovery ladder, reachability and firewall checks,\n"
        "and the observers that query nodes (``status``).\n\n"
        "It may import the base modules, ``pymr.wire``, ``pymr.jobs`` and ``pymr.engine``;\n"
        "never ``runtime``, the dashboard or the CLI.\n"),
    "runtime": (
        "pymr's processes: the master, the node daemon, its executors and their supervisor,\n"
        "the node's job table, the embedded cluster, ``pymr.run`` (``runner``) and the pymr\n"
        "home (``state``).\n\n"
        "It may import every lower layer (base, ``wire``, ``jobs``, ``engine``, ``net``);\n"
        "never the dashboard or the CLI.\n"),
    "cli": (
        "The ``pymr`` command: ``main`` parses the command line and runs ``pymr job``; the\n"
        "other modules hold the cluster, discovery, dashboard and doctor commands.\n\n"
        "It is the top layer: it may import anything in pymr, and nothing below imports it\n"
        "(``python -m pymr`` and the console script enter through ``pymr.cli.main``).\n"),
}

#: The paragraph on the layers, put under this heading of docs/ARCHITECTURE.md.
ARCH_HEADING = "## Where each piece lives\n\n"
ARCH_LAYERS = """\
The modules sit in layers, and a layer imports only its own and lower layers
(`tests/unit/test_layers.py` holds the order and checks every import, lazy and
`TYPE_CHECKING` ones included; `test_import_alone.py` imports each module first in a fresh
interpreter). Lowest first: the base modules at the top of `pymr/` (`errors`, `config`,
`_version`, `wording`, `api` and `wordtokens`, which job files import), `pymr/wire/` (what
travels and its encoding), `pymr/jobs/` (job programs and the built-ins), `pymr/engine/` (the
data path, mostly sans-I/O), `pymr/net/` (sockets, keys, discovery, peers, observers),
`pymr/runtime/` (the master, node, executors, embedded cluster, `pymr.run`),
`pymr/dashboard/`, and `pymr/cli/` (the `pymr` command). Each subpackage's `__init__` says
what it holds.

"""
#: Edits the rewrite cannot make by rule, applied last (path after the move -> (old, new)
#: pairs); a pair whose old text is not there is reported and skipped. Lines the rewrite
#: made longer than LINE, and a test that finds the CLI by its old file names.
FIXUPS: dict[str, list[tuple[str, str]]] = {
    "bench/job_baselines.py": [(
        "``pymr.engine.output.write_tsv`` through ``pymr.engine.output.atomic_output`` (temp "
        "file, fsync, rename),\nas ``pymr job JOB FILE -o OUT`` does,",
        "``pymr.engine.output.write_tsv`` through ``pymr.engine.output.atomic_output`` (temp "
        "file,\nfsync, rename), as ``pymr job JOB FILE -o OUT`` does,")],
    "bench/peers/run_peers.py": [(
        'a in (b"pymr", b"pymr.runtime._embedded_node") or a.endswith(b"/pymr") for a in argv)',
        'a in (b"pymr", b"pymr.runtime._embedded_node") or a.endswith(b"/pymr")\n'
        "               for a in argv)")],
    "tests/fuzz_protocol.py": [(
        "(not collected by pytest: no ``test_`` prefix).",
        "(not collected by pytest: no ``test_``\nprefix).")],
    "tests/unit/test_public_api.py": [(
        "'zmq') if m in sys.modules))\")",
        "'zmq')\"\n            \" if m in sys.modules))\")")],
    "tests/unit/test_splits.py": [(
        "its two implementations, and the master's I/O bound.",
        "its two implementations, and the master's\nI/O bound.")],
    "tests/unit/test_cli_boundary.py": [
        ("(``pymr/cli*.py`` and ``__main__``)", "(``pymr/cli/`` and ``__main__``)"),
        ('    return path.parent == ROOT and (path.name.startswith("cli") or path.name == '
         '"__main__.py")',
         '    return path.parent == ROOT / "cli" or path == ROOT / "__main__.py"')],
}
#: Tracked files whose references are rewritten (``git ls-files`` patterns).
REWRITE_GLOBS = ("pymr/**/*.py", "tests/**/*.py", "bench/**/*.py", "bench/**/*.sh",
                 "bench/README.md", "samples/**", "nodes/**", ".ci/**", "pyproject.toml",
                 "tox.ini", "README.md", "docs/*.md", "tools/**")
#: Left as they are: measured results, and this tool and its tests.
KEEP = re.compile(r"^(bench/.*(RESULTS|PEERS)[^/]*|.*\.json|tools/relayout.*)$")
#: The layering tests kept next to this script, moved into tests/unit by the run.
TESTS_HERE = Path("tools/relayout_tests")
RETIRED_TESTS = ("tests/unit/test_import_cycles.py",)
LINE = 100


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def current_modules() -> set[str]:
    """Top-level modules and packages under pymr/ (tracked or not, but not caches)."""
    found = set()
    for path in Path("pymr").iterdir():
        if path.suffix == ".py":
            found.add(path.stem)
        elif path.is_dir() and path.name != "__pycache__":
            found.add(path.name)
    return found


def moves() -> dict[str, str]:
    """The entries that move a module present in this checkout, before or after its move
    (an entry for a module of a branch not merged yet is left out)."""
    return {old: new for old, new in MAPPING.items() if old != new
            and (Path(f"pymr/{old}.py").exists() or new_path(new, False).exists())}


def absent() -> list[str]:
    """MAPPING entries whose module is in neither place."""
    return [old for old, new in MAPPING.items() if old not in moves()
            and not Path("pymr", old).exists() and not Path(f"pymr/{old}.py").exists()]


def new_path(new: str, is_pkg: bool) -> Path:
    path = Path("pymr", *new.split("."))
    return path if is_pkg else path.with_suffix(".py")


def state() -> str:
    """'fresh', 'done' or 'partial'."""
    done = [new_path(new, False).exists() and not Path(f"pymr/{old}.py").exists()
            for old, new in moves().items()]
    if all(done):
        return "done"
    if any(done) or any(new_path(new, False).exists() for new in moves().values()):
        return "partial"
    return "partial" if any(Path("pymr", p).exists() for p in PACKAGES) else "fresh"


def check_mapping() -> list[str]:
    """Modules under pymr/ that MAPPING does not name, and names whose target is not a
    declared package."""
    problems = [f"pymr/{m}: not in MAPPING (add it with its layer)"
                for m in sorted(current_modules() - set(MAPPING))]
    for old, new in MAPPING.items():
        head = new.split(".")[0]
        if "." in new and head not in PACKAGES and head not in MAPPING:
            problems.append(f"{old} -> {new}: no package {head!r} in PACKAGES")
    return problems


def old_to_new(dotted: str) -> str:
    """``pymr.x.y`` (an old dotted name) -> its new dotted name."""
    parts = dotted.split(".")
    if len(parts) >= 2 and parts[1] in MAPPING:
        return ".".join(["pymr", *MAPPING[parts[1]].split("."), *parts[2:]])
    return dotted


def is_module(dotted_old: str) -> bool:
    """Whether an old dotted name is a pymr module or package (before the move)."""
    rel = dotted_old.split(".")[1:]
    if not rel:
        return True
    base = Path("pymr", *rel)
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


# -- text rewrites ---------------------------------------------------------------------

_names = sorted((old for old, new in MAPPING.items() if old != new), key=len, reverse=True)
DOTTED = re.compile(r"(?<![\w.])pymr\.(" + "|".join(map(re.escape, _names)) + r")(?!\w)")
PATH = re.compile(r"(?<![\w/.])pymr/(" + "|".join(map(re.escape, _names)) + r")\.py\b")
#: Bare ```name.py``` in Markdown, unless another module has that name (``dashboard/state.py``).
_nested = {p.stem for p in Path("pymr").glob("*/*.py")}
BARE_MD = re.compile(r"`(" + "|".join(re.escape(n) for n in _names if n not in _nested)
                     + r")\.py`")


FROM_PYMR = re.compile(r"^(?P<indent>[ \t]*)from pymr import (?P<names>\w+(?: as \w+)?"
                       r"(?:, \w+(?: as \w+)?)*)(?=[ \t]*(?:#.*)?$)", re.M)


def _from_pymr(m: re.Match[str]) -> str:
    """``from pymr import a, b as c`` on one line (code, or code inside a string)."""
    names = []
    for item in m.group("names").split(", "):
        name, _, alias = item.partition(" as ")
        names.append((name, alias or None))
    return m.group("indent") + regroup("pymr", 0, "pymr", names, m.group("indent"))


def rewrite_text(text: str, markdown: bool) -> str:
    text = DOTTED.sub(lambda m: "pymr." + MAPPING[m.group(1)], text)
    text = FROM_PYMR.sub(_from_pymr, text)      # after: its output holds new dotted names
    text = PATH.sub(lambda m: "pymr/" + MAPPING[m.group(1)].replace(".", "/") + ".py", text)
    if markdown:
        text = BARE_MD.sub(lambda m: "`" + MAPPING[m.group(1)].replace(".", "/") + ".py`", text)
    return text


# -- import rewrites -------------------------------------------------------------------

def relative(from_package: str, target: str) -> tuple[int, str]:
    """(level, module) of a relative import of ``target`` from inside ``from_package``."""
    here, there = from_package.split("."), target.split(".")
    common = 0
    while common < min(len(here), len(there)) and here[common] == there[common]:
        common += 1
    return len(here) - common + 1, ".".join(there[common:])


def render(indent: str, level: int, module: str, names: list[tuple[str, str | None]]) -> str:
    head = "from " + "." * level + module + " import "
    items = [n if a is None else f"{n} as {a}" for n, a in names]
    one = head + ", ".join(items)
    if len(indent) + len(one) <= LINE:
        return one
    inner = "".join(f"{indent}    {i},\n" for i in items)
    return head + "(\n" + inner + indent + ")"


def regroup(base: str, level: int, new_pkg: str, names: list[tuple[str, str | None]],
            indent: str) -> str:
    """The statement(s) that replace ``from <base> import <names>`` (``base`` an old dotted
    name): submodules go to their new parents (keeping the old name as an alias when the
    module was renamed), other names stay with ``base``'s new place. Relative when
    ``level`` is, from ``new_pkg``."""
    groups: dict[str, list[tuple[str, str | None]]] = {}
    for name, asname in names:
        sub = f"{base}.{name}"
        if name != "*" and is_module(sub) and sub != "pymr.__main__":
            parent, _, last = old_to_new(sub).rpartition(".")
            groups.setdefault(parent, []).append(
                (last, asname or (name if last != name else None)))
        else:
            groups.setdefault(old_to_new(base), []).append((name, asname))
    stmts = []
    for target, group in groups.items():
        lvl, module = relative(new_pkg, target) if level else (0, target)
        stmts.append(render(indent, lvl, module, group))
    return ("\n" + indent).join(stmts)


def rewrite_imports(source: str, old_name: str, new_name: str, is_pkg: bool) -> str:
    """Recompute each relative import (and ``from pymr import x``) of one file from its new
    place. ``old_name``/``new_name`` are the file's dotted module names."""
    tree = ast.parse(source)
    old_pkg = old_name if is_pkg else old_name.rpartition(".")[0]
    new_pkg = new_name if is_pkg else new_name.rpartition(".")[0]
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            up = old_pkg.split(".")[:len(old_pkg.split(".")) - node.level + 1]
            base = ".".join(up + ([node.module] if node.module else []))
        elif node.module == "pymr":
            base = "pymr"
        else:
            continue                  # absolute pymr.x: rewritten as text
        if not base.startswith("pymr"):
            continue
        indent = lines[node.lineno - 1][:node.col_offset]
        new = regroup(base, node.level, new_pkg, [(a.name, a.asname) for a in node.names],
                      indent)
        old = ast.get_source_segment(source, node)
        if new != old:
            edits.append((node.lineno, node.col_offset, node.end_lineno or node.lineno,
                           node.end_col_offset or 0, new))
    for lineno, col, end_lineno, end_col, new in sorted(edits, reverse=True):
        first, last = lines[lineno - 1], lines[end_lineno - 1]
        lines[lineno - 1:end_lineno] = [first[:col] + new + last[end_col:]]
    return "".join(lines)


# -- the run ---------------------------------------------------------------------------

def tracked_targets() -> list[str]:
    files = git("ls-files", "-z", "--", *(f":(glob){g}" for g in REWRITE_GLOBS)).split("\0")
    return [f for f in files if f and not KEEP.match(f) and Path(f).is_file()]


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts.pop()
    return ".".join(parts), is_pkg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Then: ruff check pymr tests bench; mypy pymr; "
                                     "python -m pytest -q tests/unit; git add -A; git commit")
    parser.add_argument("--check", action="store_true", help="only check; change nothing")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run on a work tree with uncommitted changes")
    args = parser.parse_args()
    if not Path("pymr/__init__.py").exists() or not Path(".git").exists():
        print("relayout: run me at the root of a pymr checkout", file=sys.stderr)
        return 2
    where = state()
    if where == "done":
        print("relayout: already applied; nothing to do")
        return 0
    if where == "partial":
        print("relayout: the layout is half applied (some new places exist); "
              "start again from a clean checkout", file=sys.stderr)
        return 1
    problems = check_mapping()
    if problems:
        print("relayout: MAPPING is out of date:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if git("status", "--porcelain", "--untracked-files=no").strip() and not args.allow_dirty:
        print("relayout: the work tree has uncommitted changes; commit or stash them",
              file=sys.stderr)
        return 1
    if absent():
        print("relayout: not in this checkout, skipped: " + ", ".join(absent()))
    if args.check:
        for old, new in moves().items():
            print(f"pymr/{old}.py -> {new_path(new, Path('pymr', old).is_dir())}")
        return 0

    # Old module name of each tracked Python file under pymr/, before anything moves.
    targets = tracked_targets()
    names: dict[str, tuple[str, bool]] = {}
    for f in targets:
        if f.startswith("pymr/") and f.endswith(".py"):
            names[f] = module_name(Path(f))

    # 1. Rewrite in place (imports are resolved against the old layout).
    changed: list[str] = []
    for f in targets:
        path = Path(f)
        text = path.read_text(encoding="utf-8")
        new = rewrite_text(text, markdown=f.endswith(".md"))
        if f.endswith(".py"):
            if f in names:
                old_name, is_pkg = names[f]
                new_name = old_to_new(old_name)
            else:
                old_name = new_name = "tests"     # absolute imports only
                is_pkg = False
            new = rewrite_imports(new, old_name, new_name, is_pkg)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(f)

    arch = Path("docs/ARCHITECTURE.md")
    if arch.exists():
        text = arch.read_text(encoding="utf-8")
        if ARCH_HEADING in text and ARCH_LAYERS not in text:
            arch.write_text(text.replace(ARCH_HEADING, ARCH_HEADING + ARCH_LAYERS, 1),
                            encoding="utf-8")

    # 2. Move.
    for pkg in PACKAGES:
        Path("pymr", pkg).mkdir(exist_ok=True)
    for old, new in moves().items():
        src = Path(f"pymr/{old}.py")
        git("mv", str(src), str(new_path(new, False)))
    for pkg, doc in PACKAGES.items():
        init = Path("pymr", pkg, "__init__.py")
        init.write_text('"""' + doc.rstrip("\n") + '\n"""\n', encoding="utf-8")
        git("add", str(init))
    for retired in RETIRED_TESTS:
        if Path(retired).exists():
            git("rm", "-qf", retired)
    if TESTS_HERE.is_dir():
        for test in sorted(TESTS_HERE.glob("test_*.py")):
            git("mv", str(test), f"tests/unit/{test.name}")

    # 3. The edits no rule makes, then sort the rewritten import blocks.
    for name, pairs in FIXUPS.items():
        path = Path(name)
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        for before, after in pairs:
            if before in text:
                text = text.replace(before, after, 1)
            elif after not in text:
                print(f"relayout: fixup not applied in {name}: {before[:60]!r}...")
        path.write_text(text, encoding="utf-8")
    py = [str(Path("pymr", *MAPPING[Path(f).stem].split(".")).with_suffix(".py"))
          if f.startswith("pymr/") and f.count("/") == 1 and Path(f).stem in moves() else f
          for f in changed if f.endswith(".py")]
    ruff = shutil.which("ruff")
    if ruff and py:
        subprocess.run([ruff, "check", "-q", "--select", "I", "--fix", *py], check=False)
    elif py:
        print("relayout: ruff not found; run  ruff check --select I --fix pymr tests bench")
    long = [f"{f}:{i}" for f in py + [f for f in changed if not f.endswith(".py")]
            if Path(f).exists()
            for i, line in enumerate(Path(f).read_text(encoding="utf-8").splitlines(), 1)
            if len(line) > LINE and f.endswith((".py", ".toml", ".ini"))
            and not re.search(r"# (type: ignore|noqa)", line)]
    if long:
        print(f"relayout: lines now longer than {LINE} characters (wrap them by hand):\n  "
              + "\n  ".join(long))
    print(f"relayout: moved {len(moves())} modules, rewrote {len(changed)} files.\n"
          "Next: ruff check pymr tests bench && mypy pymr && python -m pytest -q tests/unit, "
          "then git add -A && git commit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
