"""pymr: a MapReduce engine for the machines people already own."""

from ._version import __version__ as __version__


def __getattr__(name: str) -> object:
    """``pymr.run``, imported on first use: job files import ``pymr.api`` on every node,
    and that must not load the engine."""
    if name == "run":
        from .runner import run

        return run
    raise AttributeError(f"module 'pymr' has no attribute {name!r}")
