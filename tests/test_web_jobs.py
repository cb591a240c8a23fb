"""Web jobs outlive the server that started them: a new server on the same work dir lists
them, follows the ones still running, cancels them, and tells a vanished one from a
finished one. The jobs are real processes run through the real runner; the command is a
stand-in for `nas` (the launch tests in test_web_api run the real one)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from reports.web import WebSettings, create_app
from reports.web.jobs import JobManager, TooManyJobs

PY = (sys.executable, "-c")


def _manager(work: Path, max_running: int = 3) -> JobManager:
    return JobManager(work, command=PY, max_running=max_running)


def _settle(manager: JobManager, job_id: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while (status := manager.get(job_id).status) == "running":
        assert time.monotonic() < deadline, f"job {job_id} still running after {timeout} s"
        time.sleep(0.05)
    return status


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_restarted_server_follows_and_cancels_its_jobs(tmp_path: Path) -> None:
    first = _manager(tmp_path)
    quick = first.start("export", ["print('wrote it')"], {"out": "a/b"})
    failing = first.start("study", ["import sys; print('boom'); sys.exit(3)"], {"study": "s"})
    slow = first.start("study", ["import os, time; print('searching', os.getpid(), flush=True); time.sleep(120)"],
                       {"study": "t"})
    # the first server dies without stopping anything (no shutdown): a second one takes over
    second = _manager(tmp_path, max_running=1)
    assert [j.id for j in second.list()] == [slow.id, failing.id, quick.id]
    assert second.get(quick.id).result == {"out": "a/b"} and second.get(quick.id).kind == "export"
    assert second.get(quick.id).process is None  # not its child: followed through the records

    assert _settle(second, quick.id) == "succeeded"
    assert second.get(quick.id).returncode == 0 and "wrote it" in second.get(quick.id).log_tail()
    assert _settle(second, failing.id) == "failed"
    assert second.get(failing.id).returncode == 3 and "boom" in second.get(failing.id).log_tail()
    assert second.get(failing.id).finished_at is not None

    assert second.get(slow.id).status == "running"
    with pytest.raises(TooManyJobs):  # the adopted job counts against max_jobs
        second.start("study", ["pass"])
    deadline = time.monotonic() + 30
    while "searching" not in second.get(slow.id).log_tail():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    slow_child = int(second.get(slow.id).log_tail().split()[1])
    second.cancel(slow.id)
    assert _settle(second, slow.id) == "cancelled"
    assert second.get(slow.id).returncode == -signal.SIGTERM
    assert _gone(slow_child), "the cancelled job's command still runs"
    first.get(slow.id).process.wait(timeout=10)  # reap the first server's children

    third = _manager(tmp_path)  # and once more: the cancellation was recorded
    assert {j.id: j.status for j in third.list()} == {quick.id: "succeeded", failing.id: "failed", slow.id: "cancelled"}


def test_a_vanished_job_is_interrupted_not_running(tmp_path: Path) -> None:
    first = _manager(tmp_path)
    job = first.start("study", ["import time; time.sleep(120)"], {"study": "s"})
    os.killpg(job.pid, signal.SIGKILL)  # runner and command die without an exit record
    job.process.wait(timeout=10)
    assert first.get(job.id).status == "failed" and first.get(job.id).returncode == -signal.SIGKILL
    second = _manager(tmp_path, max_running=1)
    assert second.get(job.id).status == "interrupted"
    assert second.get(job.id).returncode is None
    assert second.cancel(job.id).status == "interrupted"  # nothing to cancel
    second.start("study", ["pass"])  # an interrupted job does not hold a slot


def test_a_clean_stop_cancels_and_records_and_bad_records_are_skipped(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    first = _manager(tmp_path)
    job = first.start("study", ["import time; time.sleep(120)"], {"study": "s"})
    first.shutdown(timeout=10)
    assert first.get(job.id).status == "cancelled"
    (tmp_path / "jobs" / "broken.job.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        second = _manager(tmp_path)
    assert "broken.job.json" in caplog.text
    assert [(j.id, j.status) for j in second.list()] == [(job.id, "cancelled")]


def test_the_api_lists_jobs_of_the_previous_server(tmp_path: Path) -> None:
    settings = WebSettings(database_url=f"sqlite:///{tmp_path / 'nas.db'}", work_dir=tmp_path / "work", token="t0ken")
    auth = {"Authorization": "Bearer t0ken"}
    app = create_app(settings)
    app.state.jobs.command = (*PY, "import sys; print('nas', *sys.argv[1:])")
    job = app.state.jobs.start("study", ["search", "spec.yaml"], {"study": "s"})
    assert _settle(app.state.jobs, job.id) == "succeeded"
    app.state.db.close()  # the old server goes away
    with TestClient(create_app(settings)) as client:
        listed = client.get("/api/jobs", headers=auth).json()
        assert [j["id"] for j in listed] == [job.id]
        one = client.get(f"/api/jobs/{job.id}", headers=auth).json()
        assert one["status"] == "succeeded" and one["returncode"] == 0 and "nas search spec.yaml" in one["log_tail"]
        assert one["result"] == {"study": "s"}


def test_a_command_that_cannot_start_fails_with_127_for_every_server(tmp_path: Path) -> None:
    first = JobManager(tmp_path, command=(str(tmp_path / "no-such-nas"),))
    job = first.start("study", ["search", "spec.yaml"])
    assert _settle(first, job.id) == "failed"
    assert first.get(job.id).returncode == 127 and "cannot run" in first.get(job.id).log_tail()
    assert _manager(tmp_path).get(job.id).status == "failed"  # the exit record, not a vanished process
