"""An executor's shuffle sockets: one PUSH per reducer node, and which reducers stalled.

Kept apart from the map runner so that the runner sees only "push these numbered chunks,
did they go?" (a callable its tests replace) and never a socket. The work here is per
chunk, never per record.
"""

from __future__ import annotations

from collections.abc import Iterable

import zmq

from ..net.security import ClusterKey, secure_connect
from ..net.transport import make_socket
from ..wire import protocol as p

#: Records per shuffle / result chunk: keeps every frame far below MAX_FRAME_BYTES.
CHUNK_RECORDS = 65_536
#: How long a shuffle send may wait for a reducer. A reducer that does not take a
#: chunk in time is skipped: the output is retained, and the reducer (or the node its
#: partition moves to) gets the chunks again when it reports them missing.
SHUFFLE_SEND_TIMEOUT_MS = 2_000
#: ... and how long once a send to that reducer timed out, until one goes through again.
STALLED_SEND_TIMEOUT_MS = 100


class ShufflePushes:
    """PUSH sockets to the reducers' shuffle PULLs, opened on first use."""

    def __init__(self, ctx: zmq.Context, key: ClusterKey) -> None:
        self.ctx = ctx
        self.key = key
        self.pushes: dict[str, zmq.Socket] = {}
        #: reducers that let a send time out: later sends to them do not wait (a dead node
        #: would otherwise cost every flush SHUFFLE_SEND_TIMEOUT_MS until it is declared lost)
        self.stalled: set[str] = set()

    def _push(self, endpoint: str) -> zmq.Socket:
        sock = self.pushes.get(endpoint)
        if sock is None:
            sock = make_socket(self.ctx, zmq.PUSH, sndhwm=64)
            sock.sndtimeo = SHUFFLE_SEND_TIMEOUT_MS
            secure_connect(sock, endpoint, self.key)
            self.pushes[endpoint] = sock
        return sock

    def send_chunks(self, job_id: str, output_id: str, part: int, endpoint: str,
                    chunks: list[tuple[int, bytes]], epoch: int) -> bool:
        """Push numbered chunks to a reducer; False if it did not take them in time."""
        sock = self._push(endpoint)
        sock.sndtimeo = (STALLED_SEND_TIMEOUT_MS if endpoint in self.stalled
                         else SHUFFLE_SEND_TIMEOUT_MS)
        try:
            for seq, payload in chunks:
                sock.send_multipart(p.encode(p.ShuffleChunk(
                    job_id=job_id, output_id=output_id, partition=part, seq=seq,
                    epoch=epoch), payload), copy=False)
        except zmq.Again:
            self.stalled.add(endpoint)
            return False
        self.stalled.discard(endpoint)
        return True

    def close_unused(self, used: Iterable[str]) -> None:
        """Close the sockets to nodes no current job uses (nodes come and go)."""
        keep = set(used)
        for endpoint in [e for e in self.pushes if e not in keep]:
            self.pushes.pop(endpoint).close(linger=0)
            self.stalled.discard(endpoint)

    def close(self) -> None:
        for sock in self.pushes.values():
            sock.close(linger=0)
        self.pushes.clear()
