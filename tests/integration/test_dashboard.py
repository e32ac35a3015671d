"""The web dashboard on loopback clusters: its JSON API, its page in a real browser
(headless Chromium), the access token off loopback, and the commands that serve it.

Everything listens on 127.0.0.1 (127.0.0.2 for the off-loopback token case); the browser
is the system's ``chromium``, reaching nothing but loopback.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pymr.cli import main as cli
from pymr.config import JobOptions
from pymr.dashboard import Dashboard, DashboardServer, DashboardState
from pymr.engine.inputs import resolve_inputs
from pymr.engine.splits import plan_file_splits
from pymr.errors import TaskFailed
from pymr.jobs import JobSpec
from pymr.net.security import ClusterKey
from pymr.runtime.cluster import LocalCluster
from pymr.runtime.runner import run_job
from pymr.runtime.state import open_state
from tests import helpers
from tests.browser import Chromium, chromium_or_skip
from tests.integration.test_security import PACED_JOB

K = 1024
XSS_NAME = "<img src=x onerror=alert(1)>"
#: Generous bounds for what a loopback cluster does in well under a second.
SEEN_S = 20.0
#: The paced job: splits of 16 KiB, each mapped in at least PACE_S while the gate exists.
PACE_S = 0.2
SPLIT = 16 * K


# ------------------------------------------------------------------ helpers


def request(url: str, path: str = "", *, method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, headers, body); no redirect followed."""
    m = re.match(r"http://\[?([^\]/]+?)\]?:(\d+)(/.*)?$", url)
    assert m, url
    conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=10)
    try:
        conn.request(method, path or m.group(3) or "/", headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def api(url: str, path: str, headers: dict[str, str] | None = None) -> Any:
    status, _, body = request(url, path, headers=headers)
    assert status == 200, (path, status, body)
    return json.loads(body)


def paced_input(tmp_path: Path, splits: int) -> tuple[Path, int]:
    """A text of about ``splits`` splits, and the number of splits the job will cut."""
    path = tmp_path / "in.txt"
    line = b"the quick brown fox jumps over the lazy dog\n"
    path.write_bytes(line * (splits * SPLIT // len(line)))
    return path, len(list(plan_file_splits(str(path), SPLIT, JobOptions().max_token)))


class JobThread:
    """``run_job`` in a thread, so that a test can watch the job while it runs."""

    def __init__(self, cluster: LocalCluster, spec: JobSpec, path: Path,
                 opts: JobOptions) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(cluster, spec, path, opts))
        self.thread.start()

    def _run(self, cluster: LocalCluster, spec: JobSpec, path: Path, opts: JobOptions) -> None:
        try:
            run_job(spec, resolve_inputs([str(path)]), opts, lambda records, s: list(records),
                    endpoints=cluster.control_endpoints, key=cluster.key)
        except BaseException as exc:
            self.error = exc

    def join(self) -> BaseException | None:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the job did not end"
        return self.error


def artifacts(tmp_path: Path) -> Path:
    """Where files a person may want to look at go: ``$PYMR_ARTIFACTS_DIR`` (kept), else
    the test's own temporary directory (pytest keeps the last three runs)."""
    where = os.environ.get("PYMR_ARTIFACTS_DIR")
    if not where:
        return tmp_path
    Path(where).mkdir(parents=True, exist_ok=True)
    return Path(where)


def failing_job(cluster: LocalCluster, path: Path) -> BaseException | None:
    path.write_text("first line\nsecond line\n")
    return JobThread(cluster, JobSpec.from_source("boom", helpers.FAILING_JOB), path,
                     JobOptions(max_attempts=2)).join()


# ------------------------------------------------------------------ the JSON API


def test_json_api_follows_nodes_jobs_and_errors_of_a_loopback_cluster(tmp_path: Path) -> None:
    # Given a dashboard over a loopback cluster of two nodes,
    with LocalCluster(nodes=2, slots=1) as cluster, \
            Dashboard(cluster.key, endpoints=cluster.control_endpoints, port=0) as dash:
        # then /api/nodes lists both, up, with their machine's CPU and memory.
        def nodes_measured() -> list[dict[str, Any]] | None:
            nodes = api(dash.url, "/api/nodes")["nodes"]
            ok = len(nodes) == 2 and all(n["state"] == "up" and n["mem_total"]
                                         and n["cpu_percent"] is not None for n in nodes)
            return nodes if ok else None

        nodes = helpers.wait_until(nodes_measured, SEEN_S)
        assert nodes, api(dash.url, "/api/nodes")
        assert sorted(n["name"] for n in nodes) == ["local0", "local1"]
        for n in nodes:
            assert n["slots"] == 1 and n["version"] and n["addresses"]
            assert 0 < n["mem_used"] <= n["mem_total"] and 0 <= n["cpu_percent"] <= 100
            assert n["uptime_s"] is not None
        assert api(dash.url, "/api/nodes")["cluster"]["reachable"] is True

        # When a word count of 8 splits runs,
        path, n = paced_input(tmp_path, 8)
        assert JobThread(cluster, JobSpec.from_source("wordcount", PACED_JOB.format(
            gate=str(tmp_path / "no-gate"), pace=PACE_S)), path,
            JobOptions(split_size=SPLIT)).join() is None

        # then /api/jobs shows it done: every split mapped and committed, every partition
        # reduced and fetched, its input and nodes named;
        def done_job() -> dict[str, Any] | None:
            jobs = api(dash.url, "/api/jobs")["jobs"]
            return jobs[0] if jobs and jobs[0]["state"] == "done" else None

        job = helpers.wait_until(done_job, SEEN_S)
        assert job, api(dash.url, "/api/jobs")
        assert job["name"] == "wordcount" and job["progress"] == 1.0
        assert (job["tasks_done"], job["tasks_total"]) == (n, n)
        assert job["bytes_done"] == job["bytes_total"] == path.stat().st_size
        assert job["phases"]["map"] == {"done": n, "total": n, "fraction": 1.0}
        assert job["phases"]["shuffle"]["done"] == n
        assert job["phases"]["reduce"]["done"] == job["phases"]["reduce"]["total"] == 2
        assert job["inputs"] == [str(path)]
        assert sorted(job["nodes"]) == ["local0", "local1"]
        assert job["retries"] == 0 and job["nodes_lost"] == [] and job["error"] is None
        # the nodes counted the tasks, and the events name them.
        assert helpers.wait_until(lambda: sum(
            x["tasks_done"] for x in api(dash.url, "/api/nodes")["nodes"]) >= n, SEEN_S)
        events = api(dash.url, "/api/events")["events"]
        assert any(e["kind"] == "job" and "done" in e["text"] for e in events)
        assert sum(1 for e in events if e["kind"] == "progress") >= n

        # When a job whose map raises runs (two attempts),
        assert isinstance(failing_job(cluster, tmp_path / "fail.txt"), TaskFailed)

        # then /api/events has each failed attempt with its node, task, input position and
        # traceback, and /api/jobs shows the job failed with the error.
        def errors() -> list[dict[str, Any]] | None:
            got = api(dash.url, "/api/events")["errors"]
            return got if len(got) >= 2 and all(e["where"] for e in got) else None

        errs = helpers.wait_until(errors, SEEN_S)
        assert errs, api(dash.url, "/api/events")
        assert sorted(e["attempt"] for e in errs) == [1, 2]
        for e in errs:
            assert e["exc_type"] == "ValueError" and "boom" in e["message"]
            assert e["node"] in ("local0", "local1") and e["task_id"] == 0
            assert e["where"] == f"{tmp_path / 'fail.txt'}:1"
            assert 'raise ValueError("boom' in e["traceback"]
            assert e["job_name"] == "boom"

        def failed() -> dict[str, Any] | None:
            jobs = [j for j in api(dash.url, "/api/jobs")["jobs"] if j["name"] == "boom"]
            return jobs[0] if jobs and jobs[0]["state"] == "failed" else None

        job = helpers.wait_until(failed, SEEN_S)
        assert job and "ValueError: boom" in job["error"] and job["retries"] == 2


# ------------------------------------------------------------------ the page, in a browser


def test_the_page_in_headless_chromium_during_a_paced_job_and_a_failing_one(
        tmp_path: Path) -> None:
    binary = chromium_or_skip()
    gate = tmp_path / "gate"
    gate.touch()
    path, n = paced_input(tmp_path, 24)
    # Given two nodes, one of them named like markup, and the page open in Chromium,
    with LocalCluster(nodes=2, slots=1, names=["alpha", XSS_NAME]) as cluster, \
            Dashboard(cluster.key, endpoints=cluster.control_endpoints, port=0) as dash, \
            Chromium(binary, tmp_path / "profile", tmp_path / "chromium.log") as browser:
        browser.navigate(dash.url)
        names = "[...document.querySelectorAll('.node-name')].map(e => e.textContent).sort()"
        # then the page shows both node names, the second as text, not as an image.
        assert helpers.wait_until(lambda: browser.evaluate(names) == sorted(["alpha", XSS_NAME]),
                                  SEEN_S), browser.evaluate(names)
        assert browser.evaluate("document.querySelectorAll('img').length") == 0
        assert browser.evaluate("document.getElementById('live').textContent") == "live"

        # When a paced word count of 24 splits runs,
        job = JobThread(cluster, JobSpec.from_source("wordcount", PACED_JOB.format(
            gate=str(gate), pace=PACE_S)), path, JobOptions(split_size=SPLIT))
        card = "document.querySelector('article.job[data-job-name=\"wordcount\"]')"
        read = (f"{card} && [{card}.dataset.state, Number({card}.dataset.progress), "
                f"{card}.querySelector('.overall progress').value, "
                f"{card}.querySelector('.splits').textContent, "
                f"{card}.querySelector('[data-phase=map] progress').value]")
        seen: list[tuple[Any, ...]] = []
        shot = None

        def watch() -> bool:
            value = browser.evaluate(read)
            if value and (not seen or tuple(value) != seen[-1]):
                seen.append(tuple(value))
            return bool(value) and value[0] == "done"

        try:
            # then its progress, read back from the page, rises while it runs,
            assert helpers.wait_until(lambda: watch() or any(
                0.4 <= s[4] < 1 for s in seen), SEEN_S), seen
            shot = browser.screenshot(artifacts(tmp_path) / "dashboard.png")
        finally:
            gate.unlink()
        assert job.join() is None
        # up to done.
        assert helpers.wait_until(watch, SEEN_S), seen
        progress = [s[1] for s in seen]
        assert progress == sorted(progress), seen
        assert progress[-1] == 1.0 and seen[-1][2] == 1.0 and seen[-1][3] == f"{n} of {n}"
        assert any(0 < p < 1 for p in progress), seen
        print(f"screenshot of the page during the job: {shot}")
        assert shot is not None and shot.stat().st_size > 10_000

        # When a job whose map raises runs,
        assert isinstance(failing_job(cluster, tmp_path / "fail.txt"), TaskFailed)
        errors = ("[...document.querySelectorAll('#errors details.error')].map(d => "
                  "[d.querySelector('summary').textContent, d.querySelector('pre').textContent])")
        # then the page lists its error, with node, task, input position, and the traceback
        # inside an expandable part,
        got = helpers.wait_until(lambda: browser.evaluate(errors), SEEN_S)
        assert got, browser.evaluate("document.body.innerText")
        summary, traceback = got[0]
        assert "ValueError: boom" in summary and "task 0" in summary
        assert f"at {tmp_path / 'fail.txt'}:1" in summary
        assert re.search(r"node (alpha|<img src=x onerror=alert\(1\)>)", summary)
        assert 'raise ValueError("boom' in traceback
        assert browser.evaluate("document.querySelector('#errors details').open") is False
        failed = ("document.querySelector('article.job[data-job-name=\"boom\"]')"
                  ".dataset.state")
        assert helpers.wait_until(lambda: browser.evaluate(failed) == "failed", SEEN_S)
        # and no script from a node's name ever ran.
        assert browser.evaluate("document.querySelectorAll('img').length") == 0
        assert browser.dialogs() == []


def test_the_page_says_when_the_cluster_cannot_be_reached(tmp_path: Path) -> None:
    binary = chromium_or_skip()
    # Given a dashboard told about a node that does not exist,
    key = ClusterKey.generate()
    with Dashboard(key, endpoints=["tcp://127.0.0.1:9"], port=0) as dash, \
            Chromium(binary, tmp_path / "profile", tmp_path / "chromium.log") as browser:
        browser.navigate(dash.url)
        banner = "(b => b && !b.hidden && b.textContent)(document.getElementById('banner'))"
        # then the page says so plainly, and lists the node as unreachable.
        assert helpers.wait_until(
            lambda: "The cluster cannot be reached" in (browser.evaluate(banner) or ""),
            SEEN_S), browser.evaluate(banner)
        assert browser.evaluate("document.querySelector('#nodes tbody tr').dataset.state") \
            == "unreachable"
        # When the dashboard's own server stops,
        dash.server.close()
        # then the page says that it lost the server.
        assert helpers.wait_until(lambda: "does not answer" in (browser.evaluate(banner) or ""),
                                  SEEN_S)
        assert browser.evaluate("document.getElementById('live').textContent") == "offline"


# ------------------------------------------------------------------ access


def test_off_loopback_the_token_is_required() -> None:
    # Given a dashboard bound to an address other than 127.0.0.1 (still loopback here),
    server = DashboardServer(DashboardState(), host="127.0.0.2", port=0).start()
    try:
        token = server.token
        assert token and len(token) >= 32 and f"?token={token}" in server.url
        base = f"http://127.0.0.2:{server.port}"
        # then nothing is served without the token, or with a wrong one,
        for path, headers in (("/", {}), ("/api/nodes", {}), ("/api/stream", {}),
                              ("/static/app.js", {}), ("/?token=nope", {}),
                              ("/api/jobs?token=" + token[:-1], {}),
                              ("/", {"Cookie": f"pymr_dashboard_{server.port}=nope"}),
                              ("/", {"Cookie": f"pymr_dashboard_1={token}"}),
                              ("/api/nodes", {"Authorization": "Bearer nope"})):
            status, _, body = request(base, path, headers=headers)
            assert status == 403, (path, headers, status)
            assert b"token" in body and token.encode() not in body
        # the printed URL sets an HttpOnly, SameSite=Strict cookie and drops the token
        # from the address,
        status, headers, _ = request(server.url)
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"pymr_dashboard_{server.port}={token};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # and the cookie (or the token as a bearer, for scripts) opens everything.
        jar = {"Cookie": cookie.split(";")[0]}
        status, _, body = request(base, "/", headers=jar)
        assert status == 200 and b"/static/app.js" in body
        assert api(base, "/api/nodes", jar)["nodes"] == []
        assert api(base, "/api/jobs", {"Authorization": f"Bearer {token}"}) == {"jobs": []}
        assert api(base, f"/api/events?token={token}") == {"events": [], "errors": []}
        # Nothing can be changed, even with the token.
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, headers, _ = request(base, "/api/nodes", method=method, headers=jar)
            assert status == 405 and headers["allow"] == "GET, HEAD"
    finally:
        server.close()


def test_on_loopback_only_this_machines_host_names_are_served() -> None:
    server = DashboardServer(DashboardState(), port=0).start()
    try:
        assert server.token is None and server.url == f"http://127.0.0.1:{server.port}/"
        base = server.url
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
            status, headers, _ = request(base, "/api/nodes", headers={"Host": host})
            assert status == 200
            assert "script-src 'self'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
        # A page of another site that points its name at 127.0.0.1 (DNS rebinding):
        status, _, _ = request(base, "/api/nodes",
                               headers={"Host": f"attacker.example:{server.port}"})
        assert status == 403
        assert request(base, "/", method="POST")[0] == 405
        assert request(base, "/../pymr/dashboard/server.py")[0] == 404
        assert request(base, "/static/../server.py")[0] == 404
    finally:
        server.close()


def test_the_page_builds_no_markup_from_data() -> None:
    static = Path(__file__).resolve().parents[2] / "pymr" / "dashboard" / "static"
    script = (static / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in script, sink
    for name in ("index.html", "style.css", "app.js"):
        text = (static / name).read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name  # no CDN
        assert "@import" not in text and "url(" not in text, name


# ------------------------------------------------------------------ the commands


def test_pymr_dashboard_serves_with_a_token_off_loopback(tmp_path: Path) -> None:
    # Given a member's home with the cluster key and one node of that cluster,
    home = tmp_path / "home"
    assert cli.main(["keygen", "--home", str(home)]) == 0
    key = open_state(str(home)).load_key()
    with LocalCluster(nodes=1, slots=1, key=key) as cluster:
        node = cluster.control_endpoints[0].removeprefix("tcp://")
        # when 'pymr dashboard' serves on another address than 127.0.0.1,
        proc = subprocess.Popen(
            [sys.executable, "-m", "pymr", "dashboard", "--home", str(home), "--bind",
             "127.0.0.2", "--port", "0", "--nodes", node],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=helpers.subprocess_env())
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().decode().strip()
            # then it prints a URL with the token,
            assert re.fullmatch(r"http://127\.0\.0\.2:\d+/\?token=[\w-]{32,}", url), url
            base = url.split("?")[0]
            # which is required,
            assert request(base, "/api/nodes")[0] == 403
            # and with it, the page and the API show the node of the cluster.
            assert request(url)[0] == 303
            token = url.split("token=")[1]
            auth = {"Authorization": f"Bearer {token}"}
            assert helpers.wait_until(lambda: [n["state"] for n in api(
                base, "/api/nodes", auth)["nodes"]] == ["up"], SEEN_S)
        finally:
            code = helpers.stop_process(proc, signal.SIGINT)   # Ctrl-C
            err = proc.stderr.read().decode() if proc.stderr else ""
            for f in (proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
    assert code == 0, err
    assert "needs the access token" in err and "dashboard stopped" in err


def read_line_with(stream: Any, needle: str, timeout_s: float) -> str:
    """The first line of a child's output pipe that contains ``needle`` (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = stream.readline().decode()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} in {seen}")


def test_pymr_job_dashboard_serves_the_jobs_page_while_it_runs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    job_file = tmp_path / "paced.py"
    job_file.write_text(PACED_JOB.format(gate=str(gate), pace=PACE_S))
    path, _ = paced_input(tmp_path, 12)
    # Given 'pymr job JOB FILE --dashboard' on an embedded cluster of two nodes,
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymr", "job", str(job_file), str(path), "--dashboard",
         "--local", "2", "--slots", "1", "--split-size", "16K", "-o", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=helpers.subprocess_env())
    try:
        assert proc.stderr is not None
        # then it prints the page's address (7381, or a free port if that one is taken),
        line = read_line_with(proc.stderr, "the job's dashboard", SEEN_S)
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        # where the job shows while it runs, on its nodes.
        assert helpers.wait_until(lambda: [(j["name"], j["state"]) for j in api(
            url.group(0), "/api/jobs")["jobs"]] == [("paced", "running")], SEEN_S), \
            api(url.group(0), "/api/jobs")
        nodes = api(url.group(0), "/api/nodes")["nodes"]
        assert sorted(n["name"] for n in nodes) == ["local0", "local1"]
        assert api(url.group(0), "/api/state")["cluster"]["title"] == "pymr job paced"
    finally:
        gate.unlink()
        code = proc.wait(60)
        if proc.stderr is not None:
            proc.stderr.close()
    assert code == 0
    # The page lives as long as the job.
    with pytest.raises(OSError):
        request(url.group(0), "/api/jobs")


@pytest.fixture(autouse=True)
def _no_stray_profile(tmp_path: Path) -> Any:
    """Chromium profiles are large: remove them with the test's files."""
    yield
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
