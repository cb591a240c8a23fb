"""Background jobs of the web service: each one a `nas ...` worker process.

Launching a study runs ``nas search SPEC`` and an export runs ``nas export ...`` in a
child process of its own session, with its output in ``<work>/jobs/<id>.log``; the web
process never blocks on them and never loads a model itself. Status is read from the
process on request (``running`` / ``succeeded`` / ``failed`` / ``cancelled``).

Jobs outlive the server that started them. Each one is recorded in
``<work>/jobs/<id>.job.json`` when it starts (and again when it is cancelled), and runs
under :mod:`reports.web.jobrun`, which writes ``<id>.exit.json`` when the command ends. A
server started on the same work dir lists every recorded job: a finished one with its
return code, one still running (its server crashed; a server that stops cleanly cancels
its jobs) as ``running``, cancellable and counted against ``max_jobs``, and one whose
process is gone without an exit record (the machine rebooted, the runner was killed) as
``interrupted``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: How the web service runs the CLI in a worker process.
NAS_COMMAND = (sys.executable, "-c", "from nas.cli import main; main()")
#: The runner every job's command goes through (run by path: it imports nothing of ours).
JOBRUN = Path(__file__).with_name("jobrun.py")
_LOG_TAIL_BYTES = 4000


class TooManyJobs(RuntimeError):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` is still the runner whose command line holds ``marker`` (not a
    process that reused the number; a zombie has an empty command line)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process took the number
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.is_dir():  # no procfs: trust the number
        return True
    try:
        return marker.encode() in cmdline.read_bytes()
    except OSError:
        return False


@dataclass
class Job:
    id: str
    kind: str
    command: tuple[str, ...]
    log_path: Path
    created_at: dt.datetime
    result: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None  # None for a job an earlier server started
    pid: int | None = None
    returncode: int | None = None
    finished_at: dt.datetime | None = None
    cancelled: bool = False
    interrupted: bool = False

    @property
    def record_path(self) -> Path:
        return self.log_path.with_name(f"{self.id}.job.json")

    @property
    def exit_path(self) -> Path:
        return self.log_path.with_name(f"{self.id}.exit.json")

    def _read_exit(self) -> bool:
        try:
            data = json.loads(self.exit_path.read_text())
            code, finished = int(data["returncode"]), dt.datetime.fromisoformat(data["finished_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self.returncode, self.finished_at = code, finished
        return True

    def poll(self) -> None:
        runner_code = self.process.poll() if self.process is not None else None  # also reaps our own runner
        if self.returncode is not None or self.interrupted:
            return
        if self.process is not None:
            alive = runner_code is None
        else:
            alive = self.pid is not None and _alive(self.pid, str(self.exit_path))
        # the runner writes the exit record, then exits: a runner seen gone above has written it
        if self._read_exit() or alive:
            return
        if runner_code is not None:  # the runner itself died (killed outright): its own status
            self.returncode, self.finished_at = runner_code, _now()
        else:
            self.interrupted = True

    @property
    def status(self) -> str:
        self.poll()
        if self.interrupted:
            return "cancelled" if self.cancelled else "interrupted"
        if self.returncode is None:
            return "running"
        if self.cancelled:
            return "cancelled"
        return "succeeded" if self.returncode == 0 else "failed"

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - _LOG_TAIL_BYTES))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def save(self) -> None:
        _write_json(self.record_path, {
            "id": self.id, "kind": self.kind, "command": list(self.command), "pid": self.pid,
            "created_at": self.created_at.isoformat(), "result": self.result, "cancelled": self.cancelled,
        })

    @classmethod
    def load(cls, record: Path) -> Job:
        data = json.loads(record.read_text())
        job_id = str(data["id"])
        return cls(
            id=job_id, kind=str(data["kind"]), command=tuple(data["command"]),
            log_path=record.with_name(f"{job_id}.log"), created_at=dt.datetime.fromisoformat(data["created_at"]),
            result=dict(data.get("result") or {}), pid=data.get("pid"), cancelled=bool(data.get("cancelled")),
        )

    def to_dict(self) -> dict[str, Any]:
        status = self.status
        return {
            "id": self.id,
            "kind": self.kind,
            "status": status,
            "returncode": self.returncode,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "result": dict(self.result),
            "log_tail": self.log_tail(),
        }


class JobManager:
    """Starts and tracks worker processes (at most ``max_running`` at once), and the jobs
    recorded in ``work_dir/jobs`` by earlier servers."""

    def __init__(self, work_dir: Path, *, env: Mapping[str, str] | None = None, max_running: int = 2,
                 command: Sequence[str] = NAS_COMMAND) -> None:
        self.jobs_dir = work_dir / "jobs"
        self.env = dict(env or {})
        self.max_running = max_running
        self.command = tuple(command)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        for record in sorted(self.jobs_dir.glob("*.job.json")):
            try:
                job = Job.load(record)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping the unreadable job record %s: %s", record, exc)
                continue
            self._jobs[job.id] = job

    def start(self, kind: str, args: Sequence[str], result: Mapping[str, Any] | None = None) -> Job:
        """Run ``nas ARGS...`` in the background; raise :class:`TooManyJobs` when full."""
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.status == "running")
            if running >= self.max_running:
                raise TooManyJobs(f"{running} jobs are already running; wait for one to finish")
            job_id = uuid.uuid4().hex[:12]
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            job = Job(id=job_id, kind=kind, command=(*self.command, *args), log_path=self.jobs_dir / f"{job_id}.log",
                      created_at=_now(), result=dict(result or {}))
            env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
            with open(job.log_path, "wb") as log_file:
                job.process = subprocess.Popen(  # noqa: S603 - fixed executable, validated arguments, no shell
                    (sys.executable, str(JOBRUN), str(job.exit_path), "--", *job.command),
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                )
            job.pid = job.process.pid
            job.save()
            self._jobs[job_id] = job
            return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.status == "running" and job.pid is not None:
            job.cancelled = True
            job.save()
            try:
                os.killpg(job.pid, signal.SIGTERM)  # the runner leads its own session
            except ProcessLookupError:
                pass
        return job

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every running job (called when the server stops), its own and adopted ones."""
        running = [job for job in self._jobs.values() if job.status == "running"]
        for job in running:
            self.cancel(job.id)
        deadline = time.monotonic() + timeout
        for job in running:
            while job.status == "running" and time.monotonic() < deadline:
                time.sleep(0.05)
            if job.status == "running" and job.pid is not None:
                try:
                    os.killpg(job.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if job.process is not None:
                    job.process.wait()


__all__ = ["JOBRUN", "Job", "JobManager", "NAS_COMMAND", "TooManyJobs"]
