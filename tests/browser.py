"""Headless Chromium for tests, driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` makes Chromium read commands on fd 3 and write answers and
events on fd 4 (JSON, each message ended by a NUL byte): no port, no WebSocket client,
no browser download (the system's ``chromium``, Debian's package). The browser runs in
its own session (process group); ``close`` asks it to exit, then kills that group by id
if anything is left.

Chromium is started so that it reaches nothing but loopback: no background services,
and a host resolver that resolves no name (the tests open IP addresses).
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests import helpers

#: How long one DevTools command may take (a screenshot of a large page included).
COMMAND_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
    "--disable-client-side-phishing-detection", "--metrics-recording-only",
    "--mute-audio", "--hide-scrollbars", "--disable-breakpad",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE 127.0.0.2",
)


#: ``python -c`` this R W BINARY ARGS...: put the pipe ends R and W on fds 3 and 4 (by way
#: of fds above 9, so that neither overwrites the other), then become BINARY.
_ON_FDS_3_AND_4 = """
import fcntl, os, sys
r, w = int(sys.argv[1]), int(sys.argv[2])
high = [fcntl.fcntl(r, fcntl.F_DUPFD, 10), fcntl.fcntl(w, fcntl.F_DUPFD, 10)]
os.dup2(high[0], 3)
os.dup2(high[1], 4)
for fd in {r, w, *high} - {3, 4}:
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


def chromium_or_skip() -> str:
    """The Chromium binary; a missing one skips the test, except in CI as root, where it
    fails naming the package (``.ci/run`` installs it)."""
    return helpers.require_tool(
        "chromium", "chromium-browser",
        why="the browser test needs Chromium: the Debian package 'chromium'")


class Chromium:
    """One headless browser with one page; use as a context manager."""

    def __init__(self, binary: str, profile: Path, log: Path,
                 window: tuple[int, int] = (1400, 1000)) -> None:
        to_r, self._to_w = os.pipe()        # our commands -> its fd 3
        self._from_r, from_w = os.pipe()    # its fd 4 -> our answers and events
        self._log = open(log, "wb")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _ON_FDS_3_AND_4, str(to_r), str(from_w), binary,
                 *FLAGS, f"--user-data-dir={profile}",
                 f"--window-size={window[0]},{window[1]}", "about:blank"],
                pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            os.close(to_r)
            os.close(from_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""

    def __enter__(self) -> Chromium:
        try:
            targets = self.call("Target.getTargets")["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self.session = self.call("Target.attachToTarget", targetId=page["targetId"],
                                     flatten=True)["sessionId"]
            self.call("Page.enable", session=True)
            self.call("Runtime.enable", session=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- protocol
    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept
        in ``events``)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return dict(reply.get("result", {}))
                if "method" in reply:
                    self.events.append(reply)

    def _read(self, deadline: float) -> list[dict[str, Any]]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"Chromium did not answer in {COMMAND_TIMEOUT_S:g} s")
        ready, _, _ = select.select([self._from_r], [], [], left)
        if not ready:
            return []
        chunk = os.read(self._from_r, 1 << 20)
        if not chunk:
            raise RuntimeError(f"Chromium exited (code {self.proc.poll()}); see {self._log.name}")
        self._buf += chunk
        *messages, self._buf = self._buf.split(b"\0")
        return [json.loads(m) for m in messages if m]

    # ---------------------------------------------------------------- the page
    def navigate(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able)."""
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def dialogs(self) -> list[dict[str, Any]]:
        """Dialogs the page opened (``alert``...): none, unless a script ran that should not."""
        return [e for e in self.events if e.get("method") == "Page.javascriptDialogOpening"]

    # ---------------------------------------------------------------- end
    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("Browser.close")
            except (OSError, RuntimeError, TimeoutError):
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        # Its helpers (zygote, renderer, GPU and utility processes) are in its group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        for fd in (self._to_w, self._from_r):
            if fd >= 0:
                os.close(fd)
        self._to_w = self._from_r = -1
        self._log.close()
