"""Which nodes the master counts as dead, and when: no sockets, no clock of its own.

The master tells ``Liveness`` when it heard from a node (any message counts; a heartbeat
also says the node got as far as heartbeating) and asks it, with the time, which nodes
stayed silent past the death timeout. Keeping the rule here lets it be tested with
explicit times instead of sleeping nodes.
"""

from __future__ import annotations

#: Least time between two checks (each walks every node); small against the death
#: timeout (seconds), while the master's loop turns hundreds of times a second.
CHECK_EVERY_S = 0.05


class Liveness:
    """When each watched node was last heard from, and who is overdue."""

    def __init__(self, death_timeout_s: float, now: float,
                 check_every_s: float = CHECK_EVERY_S) -> None:
        self.death_timeout_s = death_timeout_s
        self.check_every_s = check_every_s
        self.last_check = now
        self._seen: dict[str, float] = {}      # node id -> when it was last heard
        self._heartbeated: set[str] = set()    # nodes heard heartbeating at least once

    def watch(self, node_id: str, now: float) -> None:
        """Start timing a node from its hello: one that dies before its first heartbeat
        must still be found dead."""
        self._seen[node_id] = now
        self._heartbeated.discard(node_id)

    def heard(self, node_id: str, now: float, heartbeat: bool = False) -> None:
        """Any message from a watched node restarts its timer."""
        if node_id not in self._seen:
            return
        self._seen[node_id] = now
        if heartbeat:
            self._heartbeated.add(node_id)

    def forget(self, node_id: str) -> None:
        """A node no longer watched (found dead, left out, or the job ended)."""
        self._seen.pop(node_id, None)
        self._heartbeated.discard(node_id)

    def dead(self, now: float) -> dict[str, str]:
        """Watched nodes silent past the death timeout -> why, checked at most every
        ``check_every_s`` (else nothing). After a gap longer than half the timeout the
        master itself read nothing (busy or suspended): that silence is its own, so every
        node's timer restarts instead."""
        if now - self.last_check < self.check_every_s:
            return {}
        if now - self.last_check > self.death_timeout_s / 2:
            for node_id, seen in self._seen.items():
                self._seen[node_id] = max(seen, now)
        self.last_check = now
        return {node_id: self._reason(node_id) for node_id, seen in self._seen.items()
                if now - seen > self.death_timeout_s}

    def _reason(self, node_id: str) -> str:
        if node_id in self._heartbeated:
            return f"silent for {self.death_timeout_s:g} s"
        return "no heartbeat since its hello"
