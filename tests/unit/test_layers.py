"""pymr's modules import only downwards through its layers, and without cycles.

The layers, lowest first, are declared once, in ``LAYERS``. A module may import a module of
its own layer or of a lower one; an import of a higher layer fails the test with the
module, the line and the rule. Every import counts: at the top of a module, inside a
function (a lazy import is still a dependency, only a later one) and under
``TYPE_CHECKING`` (annotations name the types a layer depends on, and a type-only upward
import is the first step of a real one). The graph is read from the source with ``ast``.

Within a layer modules may import each other, but never in a cycle: a cycle works only as
long as every import in it happens late enough.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pymr

ROOT = Path(pymr.__file__).parent

#: (layer, the packages and top-level modules it holds), lowest first. The top-level base
#: modules are named one by one; a subpackage is named by its prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("pymr._version", "pymr.errors", "pymr.config", "pymr.wording", "pymr.api",
              "pymr.wordtokens")),
    ("wire", ("pymr.wire",)),
    ("jobs", ("pymr.jobs",)),
    ("engine", ("pymr.engine",)),
    ("net", ("pymr.net",)),
    ("runtime", ("pymr.runtime",)),
    ("dashboard", ("pymr.dashboard",)),
    ("cli", ("pymr.cli",)),
    # The package itself (its lazy ``pymr.run``) and ``python -m pymr``: entry points.
    ("entry", ("pymr", "pymr.__main__")),
]


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the layer that holds ``module`` (the longest prefix wins)."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (module.startswith(prefix + ".") and prefix != "pymr"):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    return None if best is None else best[1]


def imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(pymr module, line) for every import in ``name``'s source; ``from X import Y``
    imports ``X.Y`` when that is a module, else ``X``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in modules else base, node.lineno))
    return [(m, line) for m, line in found if m in modules and m != name]


def violations(modules: dict[str, Path]) -> list[str]:
    out = []
    for name, path in sorted(modules.items()):
        mine = layer_of(name)
        if mine is None:
            continue                      # reported by test_every_module_has_a_layer
        for target, line in imports(name, path, modules):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                out.append(f"{path.relative_to(ROOT.parent)}:{line}: {name} ({LAYERS[mine][0]})"
                           f" imports {target} ({LAYERS[theirs][0]}): a layer may import only"
                           " its own and lower layers")
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path (first module repeated at the end), or []."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_every_module_has_a_layer() -> None:
    missing = [m for m in sorted(module_files()) if layer_of(m) is None]
    assert not missing, "modules in no layer of LAYERS (add them): " + ", ".join(missing)


def test_imports_go_down_the_layers() -> None:
    found = violations(module_files())
    assert not found, "upward imports:\n" + "\n".join(found)


def test_no_import_cycle() -> None:
    modules = module_files()
    graph = {n: {m for m, _ in imports(n, p, modules)} for n, p in modules.items()}
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_checker_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    src = tmp_path / "pymr" / "wire"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "codec.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ..runtime.node import Node\n"
        "def f():\n"
        "    from ..cli import main\n")
    fake = {"pymr.wire": src / "__init__.py", "pymr.wire.codec": src / "codec.py",
            "pymr.runtime.node": src, "pymr.cli.main": src}
    found = [line for _, line in imports("pymr.wire.codec", src / "codec.py", fake)]
    assert found == [3, 5]


def test_checker_names_module_line_and_rule(tmp_path: Path, monkeypatch) -> None:
    pkg = tmp_path / "pymr"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "engine" / "bad.py").write_text("import os\nfrom ..net import transport\n")
    (pkg / "net").mkdir()
    (pkg / "net" / "transport.py").write_text("")
    monkeypatch.setattr(f"{__name__}.ROOT", pkg)
    modules = {"pymr.engine.bad": pkg / "engine" / "bad.py",
               "pymr.net.transport": pkg / "net" / "transport.py"}
    assert violations(modules) == [
        "pymr/engine/bad.py:2: pymr.engine.bad (engine) imports pymr.net.transport (net):"
        " a layer may import only its own and lower layers"]


def test_layer_of_prefers_the_longest_prefix() -> None:
    names = [name for name, _ in LAYERS]
    assert names[layer_of("pymr.engine.scheduler")] == "engine"        # type: ignore[index]
    assert names[layer_of("pymr")] == "entry"                          # type: ignore[index]
    assert names[layer_of("pymr.errors")] == "base"                    # type: ignore[index]
    assert layer_of("pymr.nowhere") is None


def test_finder_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
