"""What ``pymr doctor`` found: checks with a verdict and a fix, and the members found."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"


@dataclass
class Check:
    """One line of the report: what was checked, the verdict, what was found, the fix."""

    topic: str
    verdict: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.topic, "verdict": self.verdict, "detail": self.detail,
                "fix": self.fix}


@dataclass
class MemberInfo:
    """A member found, with what a user needs to compare machines."""

    name: str
    node_id: str
    endpoint: str
    found_by: str
    pymr: str
    protocol: int
    python: str
    unicode: str
    rtt_ms: float
    slots: int

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self), rtt_ms=round(self.rtt_ms, 2))


@dataclass
class Diagnosis:
    checks: list[Check] = field(default_factory=list)
    members: list[MemberInfo] = field(default_factory=list)
    discovery: str = ""
    fingerprint: str = ""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(c.verdict == FAIL for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "fingerprint": self.fingerprint or None,
                "checks": [c.to_json() for c in self.checks],
                "members": [m.to_json() for m in self.members],
                "discovery": self.discovery, "elapsed_s": round(self.elapsed_s, 2)}
