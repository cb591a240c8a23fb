"""FastAPI dependencies for the objects :func:`reports.web.app.create_app` puts on ``app.state``.

Routers declare what they need as parameters (``cache: CacheDep``) instead of reaching
for module globals or closures, so each router works with whichever app includes it.
The dependencies are ``async`` so FastAPI resolves them on the event loop rather than
spending a threadpool hop per request on an attribute read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from reports.web.cache import StudyCache
from reports.web.jobs import JobManager
from reports.web.settings import WebSettings
from storage import Database


async def get_settings(request: Request) -> WebSettings:
    return request.app.state.settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_cache(request: Request) -> StudyCache:
    return request.app.state.cache


async def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


async def get_templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


SettingsDep = Annotated[WebSettings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
CacheDep = Annotated[StudyCache, Depends(get_cache)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]

__all__ = [
    "CacheDep", "DatabaseDep", "JobsDep", "SettingsDep", "TemplatesDep",
    "get_cache", "get_db", "get_jobs", "get_settings", "get_templates",
]
