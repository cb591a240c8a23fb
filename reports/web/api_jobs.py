"""The JSON API that starts and tracks worker processes: ``POST /api/studies`` (launch
``nas search``), ``POST /api/exports`` (``nas export``), ``GET /api/jobs[/{id}]`` and
``DELETE /api/jobs/{id}``. Every mutating endpoint needs the bearer token
(:func:`reports.web.security.require_token`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Depends, HTTPException

import storage
from nas.pick import describe_empty
from nas.search.spec import parse_spec, resolve_paths
from reports.web.jobs import Job, JobManager, TooManyJobs
from reports.web.schemas import ExportBody, ExportStarted, JobOut, StudyLaunchBody, StudyLaunched
from reports.web.security import confine, require_token
from reports.web.state import CacheDep, DatabaseDep, JobsDep, SettingsDep
from reports.web.views import run_pick

router = APIRouter()


@router.post("/api/studies", response_model=StudyLaunched, status_code=202, tags=["studies"],
             dependencies=[Depends(require_token)])
def api_launch(body: StudyLaunchBody, settings: SettingsDep, db: DatabaseDep, jobs: JobsDep) -> dict[str, Any]:
    """Validate a study spec and run `nas search` on it in a background worker process."""
    spec = parse_spec(body.spec, source="spec")
    if spec.storage is not None and storage.normalise_url(spec.storage) != db.url:
        raise HTTPException(422, f"spec.storage must be this server's database ({db.safe_url}) or omitted")
    spec = resolve_paths(spec, base=settings.work_dir)
    if not Path(spec.supernet).is_dir():
        raise HTTPException(422, f"spec.supernet: {spec.supernet} is not a supernet directory on the server")
    data = spec.to_dict()
    data["storage"] = db.url
    specs_dir = settings.work_dir / "specs"
    specs_dir.mkdir(parents=True, exist_ok=True)
    path = specs_dir / f"{spec.name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    job = _start(jobs, "study", ["search", str(path)], {"study": spec.name, "spec": str(path)})
    return {"study": spec.name, "job": job.to_dict()}


@router.post("/api/exports", response_model=ExportStarted, status_code=202, tags=["exports"],
             dependencies=[Depends(require_token)])
def api_export(body: ExportBody, settings: SettingsDep, cache: CacheDep, jobs: JobsDep) -> dict[str, Any]:
    """Export a trial (or the best pick) as a standalone model in a background worker process.
    ``out`` is relative to the server's exports directory."""
    target = confine(settings.exports_dir, body.out)
    view = cache.view(body.study)
    trial = body.trial
    if body.pick is not None:
        result = run_pick(view, body.pick)
        if not result.candidates:
            raise HTTPException(422, describe_empty(result))
        trial = result.candidates[0].trial
    assert trial is not None
    view.trial(trial)  # 404 for an unknown trial
    if target.exists() and any(target.iterdir()) and not body.overwrite:
        raise HTTPException(409, f"{body.out} already exists in the exports directory; choose another name or set overwrite")
    args = ["export", body.study, str(trial), "--out", str(target)]
    if body.verify:
        args.append("--verify")
    if body.dtype:
        args += ["--dtype", body.dtype]
    if body.overwrite:
        args.append("--overwrite")
    rel = str(target.relative_to(settings.exports_dir.resolve()))
    job = _start(jobs, "export", args, {"study": body.study, "trial": trial, "out": rel})
    return {"study": body.study, "trial": trial, "out": rel, "job": job.to_dict()}


@router.get("/api/jobs", response_model=list[JobOut], tags=["jobs"])
def api_jobs(jobs: JobsDep) -> list[dict[str, Any]]:
    return [j.to_dict() for j in jobs.list()]


@router.get("/api/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
def api_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job.to_dict()


@router.delete("/api/jobs/{job_id}", response_model=JobOut, tags=["jobs"], dependencies=[Depends(require_token)])
def api_cancel(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    job = jobs.cancel(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job.to_dict()


def _start(jobs: JobManager, kind: str, args: list[str], result: dict[str, Any]) -> Job:
    """Start a worker job, or HTTP 429 when too many are running."""
    try:
        return jobs.start(kind, args, result)
    except TooManyJobs as exc:
        raise HTTPException(429, str(exc)) from None


__all__ = ["router"]
