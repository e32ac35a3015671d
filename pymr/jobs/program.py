"""Loading a user's job file: finding it, the helper modules it ships, and checking it.

The groundwork of the job API (``pymr.api``): ``spec_from_file`` reads a job file and the
modules it imports from its own folder; ``load_program`` executes the source in a fresh
module (helpers served from the shipped text, never from this machine's disk), registers the
lines with ``linecache`` so tracebacks show the user's code, and checks what the job defines
(``map``/``reduce``/``combine``/``chunk_mapper``, ``ORDER``, ``FIELDS``, ``PARAMS``).
Errors are ``JobLoadError`` as ``file:line: message``.

May import: errors, api, jobs (and the standard library).
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import linecache
import os
import sys
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import api
from ..errors import JobLoadError, UsageError
from . import BUILTIN_JOBS, JobSpec, builtin_spec, bundle_sha256

_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))
#: Output orders a job may ask for with ``ORDER``.
ORDERS = ("key", "value")
#: Most helper modules (and bytes of source) shipped with one job: a job folder that is a
#: whole project is a mistake to report, not megabytes to ship with every job start.
MAX_MODULES = 64
MAX_SOURCE_BYTES = 8 << 20


def looks_like_path(job: str) -> bool:
    return job.endswith(".py") or os.sep in job or "/" in job


def resolve_job(job: Any) -> JobSpec:
    """A built-in name, the path of a job file, or a module object defined in a file."""
    if isinstance(job, JobSpec):
        return job
    if isinstance(job, types.ModuleType):
        path = getattr(job, "__file__", None)
        if not path:
            raise UsageError(f"module {job.__name__} has no file: a job must be defined in "
                             "a file, whose source is shipped to the nodes")
        return spec_from_file(path)
    job = os.fsdecode(job)
    if not looks_like_path(job):
        return builtin_spec(job)
    return spec_from_file(job)


def spec_from_file(path: str) -> JobSpec:
    """Read a job file and the modules it imports from its own folder."""
    source = _read_source(path)
    name = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.dirname(os.path.abspath(path))
    modules = _local_modules(path, source, folder)
    return JobSpec.from_source(name, source, filename=path, modules=modules)


def _read_source(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such job file (the built-in jobs are "
                         f"{', '.join(BUILTIN_JOBS)}; see 'pymr jobs')") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory; give a job file (.py)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the job file: {exc.strerror}") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise UsageError(f"{path}: larger than {MAX_SOURCE_BYTES >> 20} MiB; is it a job file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}); a job file is "
                         "Python source") from None


def _imported_names(source: str, filename: str, package: str = "") -> Iterator[str]:
    """Top-level names of the modules a source imports (absolute or relative)."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        raise JobLoadError(_syntax_message(exc, filename)) from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level and not package:
                raise JobLoadError(_relative_import_message(node, filename))
            if node.level and package:
                base = package
                yield f"{base}.{node.module}" if node.module else base
                for alias in node.names:
                    yield f"{base}.{node.module}.{alias.name}" if node.module else \
                        f"{base}.{alias.name}"
            elif node.module:
                yield node.module
                for alias in node.names:
                    yield f"{node.module}.{alias.name}"


def _relative_import_message(node: ast.ImportFrom, filename: str) -> str:
    """A relative import in a job file (or a helper beside it): neither is in a package,
    as in a script run with ``python``; the absolute import works, and is shipped."""
    names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
    dots = "." * node.level
    written = f"from {dots}{node.module or ''} import {names}"
    instead = f"from {node.module} import {names}" if node.module else f"import {names}"
    return (f"{filename}:{node.lineno}: relative import '{written}': a job file is not in a "
            f"package; write '{instead}' (modules in the job's folder are shipped with it)")


def _local_modules(path: str, source: str, folder: str) -> dict[str, str]:
    """Helper modules the job imports from its folder, followed transitively."""
    found: dict[str, str] = {}
    todo: list[tuple[str, str, str]] = [(source, path, "")]
    total = len(source)
    while todo:
        text, filename, package = todo.pop()
        for dotted in _imported_names(text, filename, package):
            parts = dotted.split(".")
            if parts[0] in _STDLIB:
                continue  # a file named like a standard module is not shipped as it
            for depth in range(1, len(parts) + 1):
                rel = _module_file(folder, parts[:depth])
                if rel is None or rel in found:
                    continue
                if len(found) >= MAX_MODULES:
                    raise UsageError(f"{path}: imports more than {MAX_MODULES} modules from its "
                                     "folder; put the job in a folder of its own")
                full = os.path.join(folder, rel)
                found[rel] = _read_source(full)
                total += len(found[rel])
                if total > MAX_SOURCE_BYTES:
                    raise UsageError(f"{path}: the job and its modules exceed "
                                     f"{MAX_SOURCE_BYTES >> 20} MiB of source")
                pkg = ".".join(parts[:depth]) if rel.endswith("__init__.py") else \
                    ".".join(parts[:depth - 1])
                todo.append((found[rel], full, pkg))
    return found


def _module_file(folder: str, parts: list[str]) -> str | None:
    """``a/b.py`` or ``a/b/__init__.py`` under ``folder``, relative, if it exists."""
    if not all(p.isidentifier() for p in parts):
        return None
    base = os.path.join(*parts)
    for rel in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(os.path.join(folder, rel)):
            return rel.replace(os.sep, "/")
    return None


def _syntax_message(exc: SyntaxError, filename: str) -> str:
    line = exc.lineno or 1
    return f"{exc.filename or filename}:{line}: SyntaxError: {exc.msg}"


# ---------------------------------------------------------------- loading


@dataclass(eq=False)
class JobProgram:
    """A loaded job: its functions and declarations, checked."""

    spec: JobSpec
    module: types.ModuleType
    doc: str
    map: Callable[..., Any] | None
    map_takes_position: bool
    reduce: Callable[[Any, Any], Any]
    combine: Callable[[Any, Any], Any] | None
    chunk_mapper: Callable[[dict[str, str]], Any] | None
    order: str
    fields: tuple[str, str]
    declared_params: dict[str, str | None]
    params: dict[str, str] = field(default_factory=dict)
    #: the job's own files (job file and helpers) as tracebacks name them
    filenames: frozenset[str] = frozenset()
    #: serves the helper modules from the shipped text; those already loaded, by name
    shipped: _ShippedModules | None = None
    loaded: dict[str, types.ModuleType] = field(default_factory=dict)

    @property
    def combine_is_sum(self) -> bool:
        return self.combine is api.sum_values

    @property
    def reduce_is_sum(self) -> bool:
        return self.reduce is api.sum_values

    @property
    def line_mode(self) -> bool:
        """Splits are cut at line ends (map(line)); a chunk mapper gets whitespace cuts."""
        return self.chunk_mapper is None

    def summary_line(self) -> str:
        first = self.doc.strip().splitlines()[0] if self.doc.strip() else "(no docstring)"
        return first


class _ShippedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the job's helper modules from the shipped text while the job loads."""

    def __init__(self, spec: JobSpec, folder: str) -> None:
        self.by_name: dict[str, tuple[str, str, bool]] = {}
        for rel, source in spec.modules.items():
            is_pkg = rel.endswith("/__init__.py")
            dotted = rel[:-len("/__init__.py")] if is_pkg else rel[:-3]
            self.by_name[dotted.replace("/", ".")] = (source, os.path.join(folder, rel), is_pkg)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        entry = self.by_name.get(fullname)
        if entry is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=entry[1],
                                               is_package=entry[2])

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        source, filename, is_pkg = self.by_name[module.__name__]
        module.__file__ = filename
        if is_pkg:
            module.__path__ = []
        _register_lines(filename, source)
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102


def _register_lines(filename: str, source: str) -> None:
    """Tracebacks show the shipped lines (the file may not exist on this machine)."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def load_program(spec: JobSpec, params: dict[str, str] | None = None, *,
                 run_setup: bool = True) -> JobProgram:
    """Execute a job's source in a fresh module and check what it defines.

    Raises ``JobLoadError`` (``file:line: message``) for anything the job's author must fix;
    an import the machine cannot satisfy raises ``JobLoadError`` naming the module.
    """
    filename = spec.filename or f"{spec.name}.py"
    folder = os.path.dirname(os.path.abspath(filename))
    module = types.ModuleType(f"pymr_job_{spec.name}_{spec.sha256[:12]}")
    module.__file__ = filename
    _register_lines(filename, spec.source)
    shipped = _ShippedModules(spec, folder)
    saved = {name: sys.modules.pop(name) for name in list(shipped.by_name)
             if name in sys.modules}
    sys.meta_path.insert(0, shipped)
    try:
        code = compile(spec.source, filename, "exec")
        exec(code, module.__dict__)  # noqa: S102 - the shipped program is the point
    except SyntaxError as exc:
        raise JobLoadError(_syntax_message(exc, filename)) from None
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise JobLoadError(f"{filename}:{_user_line(exc, filename)}: cannot import "
                           f"{missing!r}: {exc}", missing_module=missing) from None
    except Exception as exc:
        raise JobLoadError(f"{filename}:{_user_line(exc, filename)}: "
                           f"{type(exc).__name__}: {exc}") from None
    finally:
        sys.meta_path.remove(shipped)
        loaded = {name: sys.modules.pop(name) for name in shipped.by_name
                  if name in sys.modules}
        sys.modules.update(saved)
    program = _check(spec, module, filename)
    program.shipped, program.loaded = shipped, loaded
    program.filenames = frozenset([filename] + [os.path.join(folder, rel)
                                                for rel in spec.modules])
    program.params = _resolve_params(program, params or {})
    setup = getattr(module, "setup", None)
    if run_setup and callable(setup):
        try:
            enter(program, {})  # counts made in setup are not counted
            setup(dict(program.params))
        except Exception as exc:
            raise JobLoadError(f"{filename}:{_user_line(exc, filename)}: setup failed: "
                               f"{type(exc).__name__}: {exc}") from None
    return program


def user_traceback(exc: BaseException, filenames: frozenset[str]) -> str:
    """The traceback of ``exc`` cut to the frames of the job's own files, with their
    source lines (registered with ``linecache`` when the job loaded)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in filenames]
    lines = traceback.format_list(frames) if frames else []
    lines += traceback.format_exception_only(type(exc), exc)
    return "Traceback of the job's code (most recent call last):\n" + "".join(lines)


class _ActiveJobImports(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path`` once a job with helper modules runs in this process: an
    ``import`` inside the job's functions finds the running job's helpers (from the shipped
    text), never another job's nor a file of this machine."""

    program: JobProgram | None = None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        program = self.program
        if program is None or program.shipped is None:
            return None
        return program.shipped.find_spec(fullname, path, target)


_active = _ActiveJobImports()


def enter(program: JobProgram, counters: dict[str, int]) -> None:
    """Before the engine calls a job's code: its counters receive ``pymr.api.count``, and
    ``import`` sees its helper modules (those of the job that ran before are put away)."""
    api._counters = counters
    current = _active.program
    if current is program:
        return
    if current is not None and current.shipped is not None:
        for name in current.shipped.by_name:
            mod = sys.modules.pop(name, None)
            if mod is not None:
                current.loaded[name] = mod
    _active.program = program
    if program.shipped is not None and program.shipped.by_name:
        if _active not in sys.meta_path:
            sys.meta_path.insert(0, _active)
        sys.modules.update(program.loaded)


def _user_line(exc: BaseException, filename: str) -> int:
    """The deepest line of the job file in a traceback (1 if none)."""
    line = 1
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _def_line(module: types.ModuleType, name: str) -> int:
    fn = getattr(module, name, None)
    code = getattr(fn, "__code__", None)
    return code.co_firstlineno if code is not None else 1


def _check(spec: JobSpec, module: types.ModuleType, filename: str) -> JobProgram:
    def fail(line: int, message: str) -> JobLoadError:
        return JobLoadError(f"{filename}:{line}: {message}")

    get = module.__dict__.get
    map_fn, reduce_fn = get("map"), get("reduce")
    combine_fn, chunk = get("combine"), get("chunk_mapper")
    if chunk is not None and not callable(chunk):
        raise fail(1, "chunk_mapper must be a function chunk_mapper(params)")
    if map_fn is None and chunk is None:
        raise fail(1, "the job defines no map(line) (nor a chunk_mapper(params)); "
                   "see 'pymr jobs' for examples")
    if map_fn is not None and not callable(map_fn):
        raise fail(1, "map must be a function map(line) yielding (key, value) pairs")
    if reduce_fn is None:
        raise fail(1, "the job defines no reduce(key, values)")
    if not callable(reduce_fn):
        raise fail(1, "reduce must be a function reduce(key, values)")
    if combine_fn is not None and not callable(combine_fn):
        raise fail(1, "combine must be a function combine(key, values)")
    if chunk is not None and combine_fn is None:
        raise fail(_def_line(module, "chunk_mapper"),
                   "a job with chunk_mapper must define combine(key, values): its finish() "
                   "returns combined values")
    takes_pos = False
    if map_fn is not None and chunk is None:
        takes_pos = _arity(map_fn, filename, _def_line(module, "map"), "map",
                           (1, 2), "map(line) or map(line, pos)") == 2
    _arity(reduce_fn, filename, _def_line(module, "reduce"), "reduce", (2,),
           "reduce(key, values)")
    if combine_fn is not None:
        _arity(combine_fn, filename, _def_line(module, "combine"), "combine", (2,),
               "combine(key, values)")
    order = get("ORDER", "key")
    if order not in ORDERS:
        raise fail(1, f"ORDER must be one of {', '.join(map(repr, ORDERS))}, not {order!r}")
    fields = get("FIELDS", ("key", "value"))
    if not (isinstance(fields, (tuple, list)) and len(fields) == 2
            and all(isinstance(x, str) and x for x in fields)):
        raise fail(1, "FIELDS must be two names, like ('word', 'count')")
    declared = get("PARAMS", {})
    if not isinstance(declared, dict) or not all(
            isinstance(k, str) and k.isidentifier() and (v is None or isinstance(v, str))
            for k, v in declared.items()):
        raise fail(1, "PARAMS must map parameter names to a default string (or None when "
                   "the parameter is required)")
    setup = get("setup")
    if setup is not None and not callable(setup):
        raise fail(1, "setup must be a function setup(params)")
    return JobProgram(spec=spec, module=module, doc=module.__doc__ or "", map=map_fn
                      if chunk is None else None, map_takes_position=takes_pos,
                      reduce=reduce_fn, combine=combine_fn, chunk_mapper=chunk,
                      order=order, fields=(fields[0], fields[1]),
                      declared_params=dict(declared))


def _arity(fn: Any, filename: str, line: int, name: str, allowed: tuple[int, ...],
           shape: str) -> int:
    """Positional parameters a job function takes (checked against ``allowed``)."""
    if fn is api.sum_values:
        return 2
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return allowed[0]
    positional = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
        return max(allowed)
    for n in sorted(allowed, reverse=True):
        if len(required) <= n <= len(positional):
            return n
    raise JobLoadError(f"{filename}:{line}: {name} must take {shape}")


def _resolve_params(program: JobProgram, given: dict[str, str]) -> dict[str, str]:
    declared = program.declared_params
    name = program.spec.name
    unknown = sorted(set(given) - set(declared))
    if unknown:
        if not declared:
            raise UsageError(f"job {name} takes no parameters (got -p {unknown[0]}=...)")
        raise UsageError(f"job {name} has no parameter {unknown[0]!r}; its parameters: "
                         + ", ".join(sorted(declared)))
    params = {k: v for k, v in declared.items() if v is not None}
    params.update(given)
    missing = sorted(k for k in declared if k not in params)
    if missing:
        raise UsageError(f"job {name} needs -p {missing[0]}=VALUE (see 'pymr job {name} "
                         "--help')")
    return params


class ProgramCache:
    """Loaded job programs, by (hash, parameters); each source runs once per process."""

    def __init__(self) -> None:
        self._programs: dict[tuple[str, tuple[tuple[str, str], ...]], JobProgram] = {}

    def load(self, spec: JobSpec, params: dict[str, str]) -> JobProgram:
        if bundle_sha256(spec.source, spec.modules) != spec.sha256:
            raise JobLoadError(f"job {spec.name}: its source does not match its sha256")
        key = (spec.sha256, tuple(sorted(params.items())))
        program = self._programs.get(key)
        if program is None:
            program = self._programs[key] = load_program(spec, params)
        return program

    def forget(self, sha256: str) -> None:
        for key in [k for k in self._programs if k[0] == sha256]:
            del self._programs[key]

    def __len__(self) -> int:
        return len(self._programs)
