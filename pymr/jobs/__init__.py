"""Jobs travel as source text with their sha256 and are loaded from that text.

A job is a Python file written against ``pymr.api`` (``map``/``reduce``, optional
``combine``, ``chunk_mapper``, ``PARAMS``, ``ORDER``, ``FIELDS``; see ``docs/JOBS.md``).
The built-in jobs are files of this package, shipped like any other. Nodes never import
their own copy of a job: they load the shipped source (``pymr.jobs.program``), cached by
hash.

It may import only the base modules at the top of ``pymr`` and ``pymr.wire``; never
``engine``, ``net``, ``runtime``, the dashboard or the CLI.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass, field

from ..errors import UsageError

BUILTIN_JOBS = ("wordcount", "grep", "bigrams", "invert")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What travels in ``JobStart``: the program itself.

    ``filename`` is how tracebacks name the job file; ``modules`` maps the relative path of
    each helper module from the job's folder (``helper.py``, ``pkg/__init__.py``) to its
    source (see ``pymr.jobs.program``). ``sha256`` covers all of it.
    """

    name: str
    source: str
    sha256: str
    filename: str = ""
    modules: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_source(cls, name: str, source: str, filename: str = "",
                    modules: dict[str, str] | None = None) -> JobSpec:
        modules = dict(modules or {})
        return cls(name, source, bundle_sha256(source, modules), filename or f"{name}.py",
                   modules)


def sha256_of(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def bundle_sha256(source: str, modules: dict[str, str]) -> str:
    """The hash of a job: of its source alone when it has no helper modules (so a
    built-in's hash is the hash of its file), else of every file, in a fixed order."""
    if not modules:
        return sha256_of(source)
    h = hashlib.sha256(source.encode("utf-8"))
    for rel in sorted(modules):
        h.update(b"\0" + rel.encode("utf-8") + b"\0" + modules[rel].encode("utf-8"))
    return h.hexdigest()


def builtin_spec(name: str) -> JobSpec:
    """The spec of a job shipped with pymr."""
    if name not in BUILTIN_JOBS:
        raise UsageError(f"unknown job {name!r}: the built-in jobs are "
                         + ", ".join(BUILTIN_JOBS))
    source = importlib.resources.files(__name__).joinpath(f"{name}.py").read_text("utf-8")
    return JobSpec.from_source(name, source)


def builtin_hashes() -> set[str]:
    """Hashes a ``--builtin-only`` node accepts."""
    return {builtin_spec(n).sha256 for n in BUILTIN_JOBS}
