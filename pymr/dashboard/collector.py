"""The dashboard's eyes: a thread that finds the nodes, asks them, and follows their events.

It finds nodes like ``pymr status``: the endpoints it is given (``--nodes``, or the
nodes of the job that started it), or an mDNS browser kept open so that nodes that start
later appear. Every PROBE_INTERVAL_S it sends each one a hello and a status request
(``status.probe``: DEALER + poll with a deadline); a node that answers is followed on its
events PUB (heartbeats, task progress, errors, job progress), with the cluster key over
CURVE, like any member. It binds nothing and changes nothing on the nodes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..config import DEFAULT_DISCOVER_S
from ..net.security import ClusterKey
from ..net.status import EventStream, probe
from ..wire import protocol as p
from .state import DashboardState

log = logging.getLogger(__name__)

#: How often every node is asked for its status (heartbeats bring the live figures in
#: between; this finds new nodes and nodes that came back, and refreshes uptime).
PROBE_INTERVAL_S = 3.0
#: How long a status round waits for answers (a node that does not answer is unreachable).
PROBE_TIMEOUT_S = 1.5
#: How long events are read between two looks at the clock (stop, probes, states).
EVENTS_SLICE_S = 0.1
#: How long ``stop`` waits for the thread (a status round in progress ends first).
STOP_TIMEOUT_S = 10.0


class Collector:
    """Feeds a ``DashboardState``; ``start()``, then ``stop()`` from any thread."""

    def __init__(self, state: DashboardState, key: ClusterKey, *,
                 endpoints: list[str] | None = None, interfaces: list[str] | None = None,
                 source: str = "", probe_interval_s: float = PROBE_INTERVAL_S,
                 probe_timeout_s: float = PROBE_TIMEOUT_S,
                 discover_s: float = DEFAULT_DISCOVER_S) -> None:
        if endpoints is None and interfaces is None:
            raise ValueError("give the nodes' endpoints or the interfaces to browse on")
        self.state = state
        self.key = key
        self.endpoints = endpoints
        self.interfaces = interfaces
        self.source = source or (
            "nodes " + ", ".join(e.removeprefix("tcp://") for e in endpoints) if endpoints
            is not None else f"mDNS on {', '.join(interfaces or []) or 'no interface'}")
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.discover_s = discover_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Collector:
        self.state.set_source(self.source, searched=False)
        self._thread = threading.Thread(target=self._run, name="pymr-dashboard-collector",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("the dashboard's collector did not stop in %g s", STOP_TIMEOUT_S)
            self._thread = None

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a bug: say it on the page and in the log, stop feeding
            log.exception("the dashboard's collector failed")
            self.state.set_source(f"{self.source}; the collector failed: {exc}", True)

    def _loop(self) -> None:
        browser: Any = None
        stream = EventStream(self.key, topics=(p.TOPIC_HEARTBEAT, p.TOPIC_PROGRESS,
                                               p.TOPIC_ERROR, p.TOPIC_JOB))
        try:
            if self.endpoints is None:
                from ..net.discovery import Browser

                browser = Browser(list(self.interfaces or [])).start()
            next_probe = 0.0
            while not self._stop.is_set():
                now = self.state.clock()
                if browser is not None and browser.poll(0):
                    next_probe = now  # a node appeared (or went): ask at once
                if now >= next_probe:
                    next_probe = now + self.probe_interval_s
                    self._probe(browser, stream)
                for ev in stream.events(EVENTS_SLICE_S):
                    self.state.on_event(ev)
                self.state.tick()
        finally:
            stream.close()
            if browser is not None:
                browser.close()

    def _probe(self, browser: Any, stream: EventStream) -> None:
        if browser is None:
            targets: list[tuple[str, Any]] = [(ep, None) for ep in self.endpoints or []]
            searched = True
        else:
            targets = [(r.control_endpoint, r) for r in
                       browser.result(self.key.fingerprint).nodes]
            searched = self.state.clock() - browser.started >= self.discover_s
        statuses = probe(targets, self.key, timeout_s=self.probe_timeout_s)
        self.state.on_probe(statuses)
        self.state.set_source(self.source, searched)
        for st in statuses:
            if st.reachable and st.hello is not None:
                try:
                    if stream.add(st.name, st.hello.events_endpoint):
                        log.info("following %s (%s)", st.name, st.hello.events_endpoint)
                except Exception as exc:  # a bad endpoint in a hello: report, go on
                    log.warning("cannot follow %s: %s", st.name, exc)
