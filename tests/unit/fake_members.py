"""A scripted stand-in for ``status.probe``: which address answers as which node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymr import __version__
from pymr.config import UNICODE_VERSION
from pymr.net.status import NodeStatus
from pymr.wire import protocol as p


@dataclass
class FakeNode:
    node_id: str
    name: str
    peers: list[str] = field(default_factory=list)   # endpoints it names
    incarnation: str = "inc1"
    pymr_version: str = __version__


@dataclass
class FakeNet:
    """endpoint -> a node, or a failure kind ("connect", "key", "timeout")."""

    at: dict[str, FakeNode | str] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def probe(self, targets: list[tuple[str, Any]], key: Any, **kw: Any) -> list[NodeStatus]:
        self.calls.append(dict(kw, endpoints=[ep for ep, _ in targets]))
        out = []
        for ep, rec in targets:
            st = NodeStatus(endpoint=ep, record=rec)
            what = self.at.get(ep, "timeout")
            if isinstance(what, str):
                st.failure, st.error = what, f"no answer ({what})"
            else:
                st.hello = p.HelloReply(
                    seq=1, node_id=what.node_id, name=what.name,
                    incarnation=what.incarnation, pymr_version=what.pymr_version,
                    unicode_version=UNICODE_VERSION, slots=1, task_endpoint=ep + "0",
                    shuffle_endpoint=ep + "1", events_endpoint=ep + "3",
                    peers=[{"node_id": "", "name": "", "endpoint": x} for x in what.peers]
                    if kw.get("want_peers") else [])
                st.rtt_ms = 1.0
                if what.pymr_version != __version__:
                    st.failure, st.error = "version", f"runs pymr {what.pymr_version}"
            out.append(st)
        return out

    def dialled(self) -> list[str]:
        return [ep for call in self.calls for ep in call["endpoints"]]
