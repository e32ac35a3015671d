"""pymr: a MapReduce engine for the machines people already own."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``pymr.run``, imported on first use: job files import ``pymr.api`` on every node,
    and that must not load the engine."""
    if name == "run":
        from .runner import run

        return run
    raise AttributeError(f"module 'pymr' has no attribute {name!r}")
