"""Typed errors: ``str(err)`` is the one line the CLI prints."""

from __future__ import annotations


class PymrError(Exception):
    """Base of every error pymr raises on purpose."""

    exit_code = 1


class UsageError(PymrError):
    """Bad flags, or an input that is missing, unreadable or binary."""

    exit_code = 2


class ConfigError(PymrError):
    """A bad key file or setting."""

    exit_code = 2


class ProtocolError(PymrError):
    """A malformed or unknown message; never escapes a receive loop."""


class TransportError(PymrError):
    """A ZeroMQ failure, translated at the transport layer."""


class SecurityError(PymrError):
    """A wrong key or an unauthenticated peer."""

    exit_code = 2


class DiscoveryError(PymrError):
    """No nodes where nodes are required."""


class JobError(PymrError):
    """The job failed."""

    exit_code = 1


class TaskFailed(JobError):
    """A task raised on every attempt (or in a way no attempt can fix); carries the remote
    error. ``line`` replaces the default one-line message (the job's own code failed: it
    names the input file and line); ``user_traceback`` is the job's frames only."""

    def __init__(self, node: str, task: int, attempt: int, exc_type: str, message: str,
                 traceback: str = "", *, line: str = "", user_traceback: str = "") -> None:
        self.node = node
        self.task = task
        self.attempt = attempt
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback
        self.remote_traceback = traceback
        self.user_traceback = user_traceback
        super().__init__(line or
                         f"task {task} failed on node {node} (attempt {attempt}): {exc_type}: "
                         f"{message}")


class JobCodeFailed(JobError):
    """The job's own code failed outside a map task: its reduce raised, or it does not load
    on a node. ``str()`` is the one line; ``user_traceback`` (the job's frames with
    their source lines) is printed below it, ``remote_traceback`` only with ``--debug``."""

    def __init__(self, message: str, user_traceback: str = "",
                 remote_traceback: str = "") -> None:
        super().__init__(message)
        self.user_traceback = user_traceback
        self.remote_traceback = remote_traceback


class ClusterLost(JobError):
    """No live node is left to run the job."""


class InputChanged(JobError):
    """An input file changed size or mtime while the job read it."""


class Interrupted(PymrError):
    """Ctrl-C: the job was cancelled."""

    exit_code = 130


class JobLoadError(UsageError):
    """The job file cannot be loaded: ``file:line: message`` (exit 2 before any node is
    contacted; on a node it fails the job at once, not after retries)."""

    def __init__(self, message: str, *, missing_module: str = "") -> None:
        super().__init__(message)
        self.missing_module = missing_module

