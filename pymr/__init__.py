"""pymr: a MapReduce engine for the machines people already own."""

from ._version import __version__ as __version__

#: The public API. Each name is imported on first use: job files import ``pymr.api`` on
#: every node, and that must not load the engine.
_LAZY = {
    "run": "runner", "Result": "runner", "JobOptions": "config",
    "PymrError": "errors", "UsageError": "errors", "ConfigError": "errors",
    "DiscoveryError": "errors", "JobError": "errors", "JobLoadError": "errors",
    "TaskFailed": "errors", "JobCodeFailed": "errors", "ClusterLost": "errors",
    "InputChanged": "errors", "Interrupted": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    """A public name, imported from its module when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pymr' has no attribute {name!r}")
    if module == "runner":
        from .runtime import runner as mod
    elif module == "config":
        from . import config as mod  # type: ignore[no-redef]
    else:
        from . import errors as mod  # type: ignore[no-redef]
    return getattr(mod, name)
