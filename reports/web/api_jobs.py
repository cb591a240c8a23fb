"""The JSON API that starts and tracks worker processes: ``POST /api/studies`` (launch
``nas search``), ``POST /api/exports`` (``nas export``), ``GET /api/jobs[/{id}]`` and
``DELETE /api/jobs/{id}``. Every one of them needs the bearer token
(:func:`reports.web.security.require_token`): job logs show paths and commands."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, HTTPException, Query

import storage
from nas.errors import NasError
from nas.pick import describe_empty
from nas.search.spec import StudySpec, parse_spec
from reports.web.jobs import Job, JobManager, TooManyJobs
from reports.web.schemas import (
    ExportBody,
    ExportStarted,
    ExportTarget,
    JobOut,
    SpecCheck,
    StudyLaunchBody,
    StudyLaunched,
    error_responses,
)
from reports.web.security import EXPORT_MARKER, confine, export_target_problem, outside_roots, require_token
from reports.web.settings import WebSettings
from reports.web.state import CacheDep, DatabaseDep, JobsDep, SettingsDep
from reports.web.views import run_pick

router = APIRouter()

#: ``heldout_loss`` sources that name no file.
HELDOUT_SOURCES = ("random", "wikitext")


@router.post("/api/studies", response_model=StudyLaunched, status_code=202, tags=["studies"],
             dependencies=[Depends(require_token)], responses=error_responses(401, 413, 422, 429, 503))
def api_launch(body: StudyLaunchBody, settings: SettingsDep, db: DatabaseDep, jobs: JobsDep) -> dict[str, Any]:
    """Validate a study spec and run `nas search` on it in a background worker process.

    Every path in the spec (``supernet``, a ``space`` file, a ``heldout_loss`` text
    ``source``) is relative to the server's work dir and must resolve inside the allowed
    roots (the work dir, the data dir, ``nas serve --supernet-dir``)."""
    spec = _launchable(body, settings, db)
    data = spec.to_dict()
    data["storage"] = db.url
    specs_dir = settings.work_dir / "specs"
    specs_dir.mkdir(parents=True, exist_ok=True)
    path = specs_dir / f"{spec.name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    job = _start(jobs, "study", ["search", str(path)], {"study": spec.name, "spec": str(path)})
    return {"study": spec.name, "job": job_out(job)}


@router.post("/api/studies/check", response_model=SpecCheck, tags=["studies"], dependencies=[Depends(require_token)],
             responses=error_responses(401, 413, 422, 503))
def api_launch_check(body: StudyLaunchBody, settings: SettingsDep, db: DatabaseDep) -> dict[str, Any]:
    """What ``POST /api/studies`` would say about this spec, without launching: ``ok`` and
    the spec parser's message (200 either way, so a form can show it as the user types)."""
    try:
        spec = _launchable(body, settings, db)
    except NasError as exc:
        return {"ok": False, "problem": str(exc), "study": None}
    except HTTPException as exc:
        return {"ok": False, "problem": str(exc.detail), "study": None}
    return {"ok": True, "problem": None, "study": spec.name}


def _launchable(body: StudyLaunchBody, settings: WebSettings, db: Any) -> StudySpec:
    """The body's spec parsed, on this server's database, with its paths confined (NasError
    or HTTP 422 naming the field otherwise)."""
    spec = parse_spec(body.spec, source="spec")
    if spec.storage is not None and storage.normalise_url(spec.storage) != db.url:
        raise HTTPException(422, f"spec.storage must be this server's database ({db.safe_url}) or omitted")
    spec = _confine_spec_paths(spec, settings)
    if not Path(spec.supernet).is_dir():
        raise HTTPException(422, f"spec.supernet: {spec.supernet} is not a supernet directory on the server")
    return spec


def _confine_spec_paths(spec: StudySpec, settings: WebSettings) -> StudySpec:
    """The spec with its paths made absolute (relative ones against the work dir), or 422
    naming the allowed roots when one resolves outside them."""
    roots = settings.allowed_roots
    where = ", ".join(str(r) for r in roots)

    def resolve(field: str, value: str) -> str:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else settings.work_dir / path
        if outside_roots(path, roots):
            raise HTTPException(
                422, f"{field}: {value} is outside the directories this server reads ({where}); put it under one of "
                     "them, or start `nas serve` with --supernet-dir DIR"
            )
        return str(path.resolve())

    update: dict[str, Any] = {"supernet": resolve("spec.supernet", spec.supernet)}
    if isinstance(spec.space, str):
        update["space"] = resolve("spec.space", spec.space)
    tasks = []
    for i, task in enumerate(spec.tasks):
        if task.is_heldout and task.source not in HELDOUT_SOURCES:
            task = task.model_copy(update={"source": resolve(f"spec.tasks[{i}].source", task.source)})
        tasks.append(task)
    update["tasks"] = tuple(tasks)
    return spec.model_copy(update=update)


@router.post("/api/exports", response_model=ExportStarted, status_code=202, tags=["exports"],
             dependencies=[Depends(require_token)], responses=error_responses(400, 401, 404, 409, 413, 422, 429, 503))
def api_export(body: ExportBody, settings: SettingsDep, cache: CacheDep, jobs: JobsDep) -> dict[str, Any]:
    """Export a trial (or the best pick) as a standalone model in a background worker process.

    ``out`` is a new directory relative to the server's exports directory; with
    ``overwrite`` it may also be an earlier export, which is replaced as a whole (never the
    exports directory itself, nor a directory holding other exports)."""
    target = confine(settings.exports_dir, body.out)
    problem = export_target_problem(target, overwrite=body.overwrite, root=settings.exports_dir)
    if problem is not None:
        raise HTTPException(409, problem.replace(str(settings.exports_dir.resolve()), "exports"))
    view = cache.view(body.study)
    trial = body.trial
    if body.pick is not None:
        result = run_pick(view, body.pick)
        if not result.candidates:
            raise HTTPException(422, describe_empty(result))
        trial = result.candidates[0].trial
    assert trial is not None
    view.trial(trial)  # 404 for an unknown trial
    rel = str(target.relative_to(settings.exports_dir.resolve()))
    busy = [j for j in jobs.list() if j.kind == "export" and j.status == "running" and _overlaps(j.result.get("out"), rel)]
    if busy:
        raise HTTPException(409, f"export job {busy[0].id} is writing exports/{busy[0].result['out']}; wait for it or choose another name")
    args = ["export", body.study, str(trial), "--out", str(target)]
    if body.verify:
        args.append("--verify")
    if body.dtype:
        args += ["--dtype", body.dtype]
    if body.overwrite:
        args.append("--overwrite")
    if body.format != "auto":
        args += ["--format", body.format]
    if body.quant:
        args += ["--quant", body.quant]
    job = _start(jobs, "export", args, {"study": body.study, "trial": trial, "out": rel, "directory": str(target),
                                         "format": body.format, "verify": body.verify})
    return {"study": body.study, "trial": trial, "out": rel, "job": job_out(job)}


@router.get("/api/exports/target", response_model=ExportTarget, tags=["exports"], dependencies=[Depends(require_token)],
            responses=error_responses(400, 401))
def api_export_target(out: Annotated[str, Query(min_length=1, max_length=200)], settings: SettingsDep) -> dict[str, Any]:
    """Whether ``out`` (under the exports directory) may receive an export now, and whether
    it may with ``overwrite`` (an earlier export of that name): asked before ``POST
    /api/exports`` so a page can offer to replace it instead of failing with 409."""
    target = confine(settings.exports_dir, out)
    problem = export_target_problem(target, overwrite=False, root=settings.exports_dir)
    replaceable = problem is not None and export_target_problem(target, overwrite=True, root=settings.exports_dir) is None
    shown = None if problem is None else problem.replace(str(settings.exports_dir.resolve()), "exports")
    return {"out": str(target.relative_to(settings.exports_dir.resolve())), "free": problem is None,
            "replaceable": replaceable, "problem": shown}


def job_out(job: Job) -> dict[str, Any]:
    """A job as the API shows it; a finished export also says how to load what it wrote
    (``result.load``: a snippet naming the real directory, ``result.files``)."""
    out = job.to_dict()
    result = out["result"]
    if job.kind == "export" and out["status"] == "succeeded" and isinstance(result.get("directory"), str):
        result.update(load_snippet(Path(result["directory"])))
    return out


def load_snippet(directory: Path) -> dict[str, Any]:
    """How to load the export in ``directory``: transformers and ``nas.load_exported`` for a
    transformers directory, ``nas.load_exported`` for our format, llama.cpp for a GGUF."""
    files = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    path = str(directory)
    ggufs = [f for f in files if f.endswith(".gguf")]
    fmt = None
    try:
        fmt = json.loads((directory / EXPORT_MARKER).read_text()).get("format")
    except (OSError, ValueError):
        pass
    lines = []
    if ggufs:
        lines.append(f"llama-cli -m {directory / ggufs[0]} -p 'The capital of France is' -n 16")
    if fmt == "hf-llama":
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer",
                  f"model = AutoModelForCausalLM.from_pretrained({path!r})",
                  f"tokenizer = AutoTokenizer.from_pretrained({path!r})"]
    if fmt is not None:
        lines += ["import nas", f"exported = nas.load_exported({path!r})  # model, tokenizer and config"]
    return {"load": "\n".join(lines), "export_format": fmt or ("gguf" if ggufs else None), "files": files}


def _overlaps(a: Any, b: str) -> bool:
    """True when exports-relative directories ``a`` and ``b`` are one inside the other."""
    if not isinstance(a, str):
        return False
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    return pa == pb or pa in pb.parents or pb in pa.parents


@router.get("/api/jobs", response_model=list[JobOut], tags=["jobs"], dependencies=[Depends(require_token)],
            responses=error_responses(401))
def api_jobs(jobs: JobsDep) -> list[dict[str, Any]]:
    """Every job of this server process (their logs show what ran: token only)."""
    return [job_out(j) for j in jobs.list()]


@router.get("/api/jobs/{job_id}", response_model=JobOut, tags=["jobs"], dependencies=[Depends(require_token)],
            responses=error_responses(401, 404))
def api_job(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job_out(job)


@router.delete("/api/jobs/{job_id}", response_model=JobOut, tags=["jobs"], dependencies=[Depends(require_token)],
               responses=error_responses(401, 404))
def api_cancel(job_id: str, jobs: JobsDep) -> dict[str, Any]:
    job = jobs.cancel(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job_out(job)


def _start(jobs: JobManager, kind: str, args: list[str], result: dict[str, Any]) -> Job:
    """Start a worker job, or HTTP 429 when too many are running."""
    try:
        return jobs.start(kind, args, result)
    except TooManyJobs as exc:
        raise HTTPException(429, str(exc)) from None


__all__ = ["router"]
