"""The members this machine has reached, remembered in its pymr home (``peers.json``).

The second rung of discovery: where mDNS fails (an access point that drops multicast, a
firewall on UDP 5353), ``pymr job`` and ``pymr node`` dial the members they reached
before. The file is small JSON, written atomically with mode 0600 under a lock (a node
and a client may share one home); entries age out, so a machine that left is forgotten.
Memory is a convenience: a file that cannot be read or written is logged, never fatal.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import split_endpoint

log = logging.getLogger(__name__)

PEERS_FILE = "peers.json"
_LOCK_FILE = "peers.lock"
#: A member not reached for this long is forgotten.
MAX_AGE_S = 7 * 24 * 3600.0
#: At most this many members are remembered (the most recently seen are kept).
MAX_ENTRIES = 256
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Remembered:
    """A member as this machine last reached it."""

    node_id: str
    name: str
    endpoint: str          # its control endpoint, tcp://HOST:PORT
    fingerprint: str       # the cluster key it answered to
    last_seen: float       # Unix time of the last authenticated hello

    @property
    def address(self) -> str:
        return self.endpoint.removeprefix("tcp://")


def _parse(raw: object) -> Remembered | None:
    if not isinstance(raw, dict):
        return None
    try:
        entry = Remembered(node_id=str(raw["node_id"]), name=str(raw.get("name", "")),
                           endpoint=str(raw["endpoint"]),
                           fingerprint=str(raw.get("fingerprint", "")),
                           last_seen=float(raw["last_seen"]))
    except (KeyError, TypeError, ValueError):
        return None
    if not entry.node_id or split_endpoint(entry.endpoint) is None:
        return None
    return entry


class PeerStore:
    """``HOME/peers.json``: load, record what answered, forget what no longer belongs."""

    def __init__(self, home: Path, *, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.home = Path(home)
        self.max_age_s = max_age_s
        self.clock = clock
        self._warned = False

    @property
    def path(self) -> Path:
        return self.home / PEERS_FILE

    def load(self) -> list[Remembered]:
        """Every entry not aged out, most recently seen first."""
        return self._read()

    def members(self, fingerprint: str) -> list[Remembered]:
        """Entries of the cluster with this key fingerprint."""
        return [e for e in self._read() if e.fingerprint == fingerprint]

    def record(self, seen: Iterable[Remembered]) -> None:
        """Remember members that just answered. An entry replaces the one of the same node
        id, and any other entry at the same endpoint (that address now serves this node)."""
        seen = list(seen)
        if not seen:
            return
        with self._locked() as ok:
            if not ok:
                return
            by_id = {e.node_id: e for e in self._read()}
            for new in seen:
                for old in list(by_id.values()):
                    if old.endpoint == new.endpoint and old.node_id != new.node_id:
                        del by_id[old.node_id]
                by_id[new.node_id] = new
            self._write(list(by_id.values()))

    def forget(self, node_ids: Iterable[str]) -> None:
        """Drop these members (their address now answers as another node or cluster)."""
        gone = set(node_ids)
        if not gone:
            return
        with self._locked() as ok:
            if ok:
                entries = self._read()
                kept = [e for e in entries if e.node_id not in gone]
                if len(kept) != len(entries):
                    self._write(kept)

    # ------------------------------------------------------------ file
    def _read(self) -> list[Remembered]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            self._warn(f"ignoring the remembered members in {self.path}: {exc}")
            return []
        raw = doc.get("members", []) if isinstance(doc, dict) else []
        now = self.clock()
        entries = [e for e in map(_parse, raw if isinstance(raw, list) else [])
                   if e is not None and now - e.last_seen <= self.max_age_s]
        entries.sort(key=lambda e: -e.last_seen)
        return entries[:MAX_ENTRIES]

    def _write(self, entries: list[Remembered]) -> None:
        now = self.clock()
        keep = sorted((e for e in entries if now - e.last_seen <= self.max_age_s),
                      key=lambda e: -e.last_seen)[:MAX_ENTRIES]
        doc = {"format": _FORMAT, "members": [asdict(e) for e in keep]}
        tmp = self.path.with_name(f"{PEERS_FILE}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
            os.replace(tmp, self.path)
        except OSError as exc:
            self._warn(f"cannot remember members in {self.path}: {exc.strerror}")
            try:
                tmp.unlink()
            except OSError:
                pass

    @contextmanager
    def _locked(self) -> Iterator[bool]:
        """The home's peers lock (flock: a killed process leaves none behind)."""
        try:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.home / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self._warn(f"cannot remember members in {self.home}: {exc.strerror}")
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)

    def _warn(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s", text)
