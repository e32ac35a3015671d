"""The machine's CPU and memory use, as a node reports it in heartbeats and status.

``psutil`` reads them (``/proc`` on Linux, the right calls elsewhere): machine-wide
figures, not the node's own process, since a dashboard asks "is this machine busy?".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Load:
    """CPU use in percent of all cores since the previous reading, memory in use."""

    cpu_percent: float
    mem_percent: float
    mem_used: int
    mem_total: int

    def fields(self) -> dict[str, Any]:
        """As the defaulted fields of ``Heartbeat`` and ``StatusReply``."""
        return {"cpu_percent": round(self.cpu_percent, 1),
                "mem_percent": round(self.mem_percent, 1),
                "mem_used": self.mem_used, "mem_total": self.mem_total}


class LoadMeter:
    """Call ``read()`` about once a heartbeat; the latest reading stays in ``last``.

    The first call only primes the meter: psutil's CPU figure is the use since the
    previous call, and importing psutil (~20 ms) on a node's first loop turn would delay
    its answer to a master already waiting for its hello."""

    def __init__(self) -> None:
        self.last: Load | None = None
        self._calls = 0
        self._psutil: Any = None
        self._broken = False

    def read(self) -> Load | None:
        self._calls += 1
        if self._calls == 1 or self._broken:
            return self.last
        try:
            if self._psutil is None:
                import psutil

                self._psutil = psutil
                psutil.cpu_percent(interval=None)  # primes the CPU counter
                return self.last
            mem = self._psutil.virtual_memory()
            self.last = Load(float(self._psutil.cpu_percent(interval=None)),
                             float(mem.percent), int(mem.total - mem.available),
                             int(mem.total))
        except Exception as exc:  # a platform psutil cannot read: report nothing, go on
            log.warning("cannot read this machine's CPU and memory use: %s", exc)
            self._broken = True
        return self.last
