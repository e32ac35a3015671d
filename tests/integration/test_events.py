"""`pymr events` sees what the master decides (retries, lost nodes), not only node events."""

from __future__ import annotations

import threading
from pathlib import Path

from pymr.config import JobOptions
from pymr.engine.inputs import resolve_inputs
from pymr.errors import TaskFailed
from pymr.jobs import JobSpec
from pymr.net.status import EventStream, probe
from pymr.runtime.cluster import LocalCluster
from pymr.runtime.runner import run_job
from pymr.wire import protocol as p
from tests import helpers


def test_master_notices_reach_the_events_stream(tmp_path: Path) -> None:
    # Given two nodes and an observer subscribed to their events,
    src = tmp_path / "in.txt"
    src.write_text("a b c\n" * 20000)
    with LocalCluster(nodes=2, slots=1) as cluster:
        cluster.wait_ready()
        statuses = probe([(ep, None) for ep in cluster.control_endpoints], cluster.key,
                         timeout_s=10, want_status=False)
        stream = EventStream(cluster.key, topics=(p.TOPIC_PROGRESS, p.TOPIC_ERROR))
        try:
            for st in statuses:
                assert st.hello is not None
                stream.add(st.hello.name, st.hello.events_endpoint)
            # (several retries: notices keep coming while the subscriptions settle)
            failure: list[BaseException] = []

            def job() -> None:
                try:
                    run_job(JobSpec.from_source("boom", helpers.FAILING_JOB),
                            resolve_inputs([str(src)]),
                            JobOptions(split_size=16 << 10, max_attempts=3),
                            lambda r, s: None, endpoints=cluster.control_endpoints,
                            key=cluster.key)
                except BaseException as exc:
                    failure.append(exc)

            worker = threading.Thread(target=job)
            worker.start()
            # when a job's tasks fail and are retried,
            notices, errors = [], []
            for ev in stream.events(30.0):
                if isinstance(ev.msg, p.JobNotice):
                    notices.append(ev.msg.text)
                elif isinstance(ev.msg, p.ErrorEvent):
                    errors.append(ev.msg)
                if notices and errors:
                    break
            worker.join(60)
        finally:
            stream.close()
    # then the observer saw the nodes' error events and the master's retry notices.
    assert not worker.is_alive()
    assert failure and isinstance(failure[0], TaskFailed)
    assert errors and errors[0].exc_type == "ValueError"
    assert any("failed on" in text for text in notices), notices
