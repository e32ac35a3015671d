"""The dashboard's HTTP side: the page, a read-only JSON API, and server-sent events.

Built on the standard library's ``ThreadingHTTPServer``: the dashboard serves a few
browsers and scripts reading small JSON documents and one event stream each, so a thread
per connection is plenty, and the standard library is always there (a LAN may be
offline) and has no release of its own to track. An asynchronous framework (aiohttp,
Starlette + uvicorn) would add dependencies and an event loop for no gain at this scale.

Safe by default:

* it binds 127.0.0.1 unless told otherwise, and then answers only requests whose
  ``Host`` names 127.0.0.1 or localhost (a web page elsewhere cannot read it through
  DNS rebinding);
* on any other address it requires a random token (``secrets.token_urlsafe``), given
  once as ``?token=`` (the printed URL) and then kept in an HttpOnly, SameSite=Strict
  cookie, or sent by scripts as ``Authorization: Bearer TOKEN``; compared with
  ``hmac.compare_digest``; anything else gets 403;
* it is read-only: GET and HEAD only (405 otherwise); nothing it serves changes anything;
* the page is built with ``textContent`` (never markup from data) and served with a
  Content-Security-Policy that allows only its own script and style.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import socket
import threading
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from ..errors import UsageError
from .state import DashboardState

log = logging.getLogger(__name__)

#: ``pymr dashboard``'s port, and the one ``pymr job --dashboard`` tries first (apart, so
#: that both can run on one machine).
DEFAULT_PORT = 7380
JOB_PORT = 7381
#: Event streams served at once (each holds a thread); more get 503.
MAX_STREAMS = 32
#: Least time between two snapshots on one event stream (heartbeats of many nodes would
#: otherwise send one per heartbeat), and how often an idle stream says it is alive.
STREAM_MIN_INTERVAL_S = 0.5
KEEPALIVE_S = 15.0
#: Events in each snapshot of the stream (the page shows these; /api/events has more).
STREAM_EVENTS = 50
#: A connection that sends nothing (or reads nothing) for this long is closed.
CONNECTION_TIMEOUT_S = 10.0
#: Addresses served without a token.
LOCAL_BINDS = ("127.0.0.1", "::1", "localhost")

SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
     "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
     "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, shipped inside the package: name -> (bytes, content type)."""
    out = {}
    for entry in (resources.files(__package__) / "static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            out[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return out


class _Server(ThreadingHTTPServer):
    """Joins its handler threads at close, after cutting their connections short."""

    daemon_threads = True
    block_on_close = True

    def __init__(self, address: tuple[str, int], dashboard: DashboardServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.dashboard = dashboard
        self.active: set[socket.socket] = set()
        self.active_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.active_lock:
            self.active.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self.active_lock:
                self.active.discard(request)

    def cut_connections(self) -> None:
        with self.active_lock:
            for sock in self.active:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class DashboardServer:
    """Serves a ``DashboardState``; ``start()`` binds (``UsageError`` if it cannot)."""

    def __init__(self, state: DashboardState, *, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, token: str | None = None) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.needs_token = host not in LOCAL_BINDS
        self.token = (token or secrets.token_urlsafe(24)) if self.needs_token else None
        self.files = _static_files()
        self.closing = threading.Event()
        self.streams = 0
        self.streams_lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def cookie_name(self) -> str:
        # Cookies are not kept apart by port: two dashboards on one host must not mix.
        return f"pymr_dashboard_{self.port}"

    def start(self) -> DashboardServer:
        try:
            self._httpd = _Server((self.host, self.port), self)
        except OSError as exc:
            raise UsageError(f"cannot serve the dashboard on {self.host}:{self.port}: "
                             f"{exc.strerror or exc}") from exc
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="pymr-dashboard-http", daemon=True)
        self._thread.start()
        return self

    def url_for(self, host: str) -> str:
        """The URL to open on ``host`` (an address of this machine), token included."""
        shown = f"[{host}]" if ":" in host else host
        query = f"?{urlencode({'token': self.token})}" if self.token else ""
        return f"http://{shown}:{self.port}/{query}"

    @property
    def url(self) -> str:
        return self.url_for(self.host)

    def close(self) -> None:
        self.closing.set()
        self.state.wake()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.cut_connections()
            self._httpd.server_close()       # joins the handler threads
            self._httpd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # ---------------------------------------------------------------- access
    def allowed_hosts(self) -> set[str]:
        return {f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]")} | (
            {"127.0.0.1", "localhost", "[::1]"} if self.port == 80 else set())

    def token_ok(self, given: str | None) -> bool:
        if not given or self.token is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "pymr-dashboard"
    sys_version = ""
    timeout = CONNECTION_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("%s %s", self.address_string(), format % args)

    # ---------------------------------------------------------------- methods
    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _read_only(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"the dashboard is read-only\n",
                   "text/plain; charset=utf-8", extra=(("Allow", "GET, HEAD"),))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _read_only

    # ---------------------------------------------------------------- routing
    def _serve(self, head: bool) -> None:
        dash = self.server.dashboard
        url = urlsplit(self.path)
        if not self._admitted(dash, url):
            return
        path = url.path
        if path == "/":
            self._file("index.html", head)
        elif path.startswith("/static/") and path[len("/static/"):] in dash.files:
            self._file(path[len("/static/"):], head)
        elif path == "/api/nodes":
            self._json({"cluster": dash.state.cluster_json(), "nodes": dash.state.nodes_json()},
                       head)
        elif path == "/api/jobs":
            self._json({"jobs": dash.state.jobs_json()}, head)
        elif path == "/api/events":
            self._json(dash.state.events_json(), head)
        elif path == "/api/state":
            self._json(dash.state.snapshot(), head)
        elif path == "/api/stream":
            self._stream(dash, head)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8",
                       head=head)

    def _admitted(self, dash: DashboardServer, url: Any) -> bool:
        """Loopback: only for a Host of this machine. Elsewhere: only with the token."""
        if not dash.needs_token:
            if self.headers.get("Host", "") in dash.allowed_hosts():
                return True
            self._send(HTTPStatus.FORBIDDEN, b"unexpected Host header: open the dashboard "
                       b"as http://127.0.0.1:PORT/\n", "text/plain; charset=utf-8")
            return False
        query = parse_qs(url.query, keep_blank_values=True)
        given = query.get("token", [None])[-1]
        if given is not None:
            if not dash.token_ok(given):
                self._forbidden("wrong token")
                return False
            cookie = (f"{dash.cookie_name}={dash.token}; HttpOnly; SameSite=Strict; "
                      "Path=/")
            if not url.path.startswith("/api/"):
                # The page: keep the token out of the address bar and the history.
                rest = urlencode({k: v for k, v in query.items() if k != "token"},
                                 doseq=True)
                self._send(HTTPStatus.SEE_OTHER, b"", "text/plain; charset=utf-8",
                           extra=(("Location", url.path + (f"?{rest}" if rest else "")),
                                  ("Set-Cookie", cookie)))
                return False
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and dash.token_ok(auth[len("Bearer "):].strip()):
            return True
        try:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            jar = SimpleCookie()
        morsel = jar.get(dash.cookie_name)
        if morsel is not None and dash.token_ok(morsel.value):
            return True
        self._forbidden("no token" if morsel is None else "wrong token")
        return False

    def _forbidden(self, why: str) -> None:
        self._send(HTTPStatus.FORBIDDEN, f"pymr dashboard: {why}. This address needs the "
                   "access token: open the URL that 'pymr dashboard' printed (it ends in "
                   "?token=...).\n".encode(), "text/plain; charset=utf-8")

    # ---------------------------------------------------------------- responses
    def _send(self, status: HTTPStatus, body: bytes, ctype: str, *, head: bool = False,
              extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS + extra:
            self.send_header(name, value)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _file(self, name: str, head: bool) -> None:
        body, ctype = self.server.dashboard.files[name]
        self._send(HTTPStatus.OK, body, ctype, head=head)

    def _json(self, doc: Any, head: bool) -> None:
        self._send(HTTPStatus.OK, json.dumps(doc).encode(), "application/json", head=head)

    def _stream(self, dash: DashboardServer, head: bool) -> None:
        """Server-sent events: the whole state at once, then again whenever it changed
        (at most every STREAM_MIN_INTERVAL_S)."""
        with dash.streams_lock:
            full = dash.streams >= MAX_STREAMS
            if not full:
                dash.streams += 1
        if full:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many event streams\n",
                       "text/plain; charset=utf-8", head=head)
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("X-Accel-Buffering", "no")
            for name, value in SECURITY_HEADERS:
                self.send_header(name, value)
            self.end_headers()
            if head:
                return
            self.wfile.write(b"retry: 2000\n\n")
            while not dash.closing.is_set():
                snap = dash.state.snapshot(events=STREAM_EVENTS)
                version = snap["version"]
                self.wfile.write(b"event: state\ndata: " + json.dumps(
                    snap, separators=(",", ":")).encode() + b"\n\n")
                self.wfile.flush()
                if dash.closing.wait(STREAM_MIN_INTERVAL_S):
                    break
                while dash.state.wait_change(version, KEEPALIVE_S) == version:
                    if dash.closing.is_set():
                        return
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionError, TimeoutError, OSError):
            pass  # the browser went away (or the server is closing)
        finally:
            with dash.streams_lock:
                dash.streams -= 1
