"""Can this machine open a TCP connection to HOST:PORT? Refused, dropped or open.

``pymr doctor`` uses it to tell a stopped node (refused: nothing listens) from a firewall
that drops a port (no answer at all) and from another cluster (it connects, but the CURVE
handshake fails). A plain connect and close: nothing is sent, so a node sees only a
connection that ends before its greeting.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time

OPEN, REFUSED, DROPPED = "open", "refused", "dropped"
#: How long a connect may take before the port counts as dropped (LAN round trips are ms).
CONNECT_TIMEOUT_S = 1.0


def tcp_reach(targets: list[tuple[str, int]],
              timeout_s: float = CONNECT_TIMEOUT_S) -> dict[tuple[str, int], str]:
    """Connect to every (host, port) at once; each gets ``open``, ``refused``, ``dropped``
    (no answer in ``timeout_s``) or ``unreachable: REASON``."""
    out: dict[tuple[str, int], str] = {}
    sel = selectors.DefaultSelector()
    try:
        for target in dict.fromkeys(targets):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                code = s.connect_ex(target)
            except OSError as exc:            # a host name that does not resolve
                out[target] = f"unreachable: {exc.strerror or exc}"
                s.close()
                continue
            if code in (0, errno.EINPROGRESS):
                sel.register(s, selectors.EVENT_WRITE, target)
            else:
                out[target] = _verdict(code)
                s.close()
        deadline = time.monotonic() + timeout_s
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                conn: socket.socket = key.fileobj  # type: ignore[assignment]
                out[key.data] = _verdict(conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
                sel.unregister(conn)
                conn.close()
        for key in list(sel.get_map().values()):
            out[key.data] = DROPPED
            sel.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
    finally:
        sel.close()
    return out


def _verdict(code: int) -> str:
    if code == 0:
        return OPEN
    if code == errno.ECONNREFUSED:
        return REFUSED
    return f"unreachable: {errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


def explain(state: str, port: int) -> str:
    """One phrase for a ``tcp_reach`` verdict."""
    if state == OPEN:
        return f"tcp {port} connects"
    if state == REFUSED:
        return f"tcp {port} is refused (nothing listens there)"
    if state == DROPPED:
        return f"tcp {port} gets no answer (a firewall drops it, or the host is down)"
    return f"tcp {port} is {state}"
