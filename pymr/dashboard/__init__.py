"""A live web dashboard of the cluster and its jobs (``pymr dashboard``).

Three parts, each in its own module: ``state`` (what is known, in memory, bounded; no
I/O), ``collector`` (a thread that finds the nodes like ``pymr status`` does, asks their
status and follows their PUB channels with the cluster key, over CURVE) and ``server``
(HTTP: the page, a read-only JSON API and server-sent events). The page itself is in
``static/``: plain HTML, CSS and JavaScript, no build step, nothing fetched from outside.
``Dashboard`` puts the three together for the CLI and for ``pymr job --dashboard``.

It may import every lower layer (base, ``wire``, ``jobs``, ``engine``, ``net``,
``runtime``); never the CLI. It uses only ``config``, ``errors``, ``wire.protocol``,
``net.security``, ``net.status`` and ``net.discovery``: it observes, it is neither a
master nor a node.
"""

from __future__ import annotations

from ..config import DEFAULT_DISCOVER_S
from ..net.security import ClusterKey
from .collector import Collector
from .server import DEFAULT_PORT, JOB_PORT, DashboardServer
from .state import DashboardState

__all__ = ["DEFAULT_PORT", "JOB_PORT", "Collector", "Dashboard", "DashboardServer",
           "DashboardState"]


class Dashboard:
    """State + collector + server; ``start()`` then ``close()`` (or ``with``)."""

    def __init__(self, key: ClusterKey, *, endpoints: list[str] | None = None,
                 interfaces: list[str] | None = None, source: str = "",
                 host: str = "127.0.0.1", port: int = DEFAULT_PORT, title: str = "pymr",
                 token: str | None = None, discover_s: float = DEFAULT_DISCOVER_S) -> None:
        self.state = DashboardState(fingerprint=key.fingerprint, title=title)
        self.collector = Collector(self.state, key, endpoints=endpoints, interfaces=interfaces,
                                   source=source, discover_s=discover_s)
        self.server = DashboardServer(self.state, host=host, port=port, token=token)

    @property
    def url(self) -> str:
        """The address to open (with the token when one is needed)."""
        return self.server.url

    def start(self) -> Dashboard:
        self.server.start()          # first: a taken port fails before any thread starts
        try:
            self.collector.start()
        except BaseException:
            self.server.close()
            raise
        return self

    def close(self) -> None:
        self.collector.stop()
        self.server.close()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
