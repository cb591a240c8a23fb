"""Background jobs of the web service: each one a `nas ...` worker process.

Launching a study runs ``nas search SPEC`` and an export runs ``nas export ...`` in a
child process of its own session, with its output in ``<work>/jobs/<id>.log``; the web
process never blocks on them and never loads a model itself. Status is read from the
process on request (``running`` / ``succeeded`` / ``failed`` / ``cancelled``). Jobs live
in memory: after a server restart their logs remain, their status does not.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How the web service runs the CLI in a worker process.
NAS_COMMAND = (sys.executable, "-c", "from nas.cli import main; main()")
_LOG_TAIL_BYTES = 4000


class TooManyJobs(RuntimeError):
    pass


@dataclass
class Job:
    id: str
    kind: str
    command: tuple[str, ...]
    log_path: Path
    created_at: dt.datetime
    result: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    returncode: int | None = None
    finished_at: dt.datetime | None = None
    cancelled: bool = False

    def poll(self) -> None:
        if self.process is not None and self.returncode is None:
            code = self.process.poll()
            if code is not None:
                self.returncode = code
                self.finished_at = dt.datetime.now(dt.timezone.utc)

    @property
    def status(self) -> str:
        self.poll()
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
    """Starts and tracks worker processes (at most ``max_running`` at once)."""

    def __init__(self, work_dir: Path, *, env: Mapping[str, str] | None = None, max_running: int = 2,
                 command: Sequence[str] = NAS_COMMAND) -> None:
        self.jobs_dir = work_dir / "jobs"
        self.env = dict(env or {})
        self.max_running = max_running
        self.command = tuple(command)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, args: Sequence[str], result: Mapping[str, Any] | None = None) -> Job:
        """Run ``nas ARGS...`` in the background; raise :class:`TooManyJobs` when full."""
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.status == "running")
            if running >= self.max_running:
                raise TooManyJobs(f"{running} jobs are already running; wait for one to finish")
            job_id = uuid.uuid4().hex[:12]
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.jobs_dir / f"{job_id}.log"
            command = (*self.command, *args)
            env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
            with open(log_path, "wb") as log:
                process = subprocess.Popen(  # noqa: S603 - fixed executable, validated arguments, no shell
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, start_new_session=True,
                )
            job = Job(
                id=job_id, kind=kind, command=command, log_path=log_path,
                created_at=dt.datetime.now(dt.timezone.utc), result=dict(result or {}), process=process,
            )
            self._jobs[job_id] = job
            return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.status == "running" and job.process is not None:
            job.cancelled = True
            try:
                os.killpg(job.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return job

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every running job (called when the server stops)."""
        for job in list(self._jobs.values()):
            if job.status == "running" and job.process is not None:
                self.cancel(job.id)
                try:
                    job.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(job.process.pid, signal.SIGKILL)


__all__ = ["Job", "JobManager", "NAS_COMMAND", "TooManyJobs"]
