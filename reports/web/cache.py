"""A per-study cache of :class:`~reports.data.StudyView` and what is derived from it.

Building a view reads every trial of a study (tens of ms for a thousand trials), far too
slow for every page hit. The cache keeps each view with a cheap *version* (the number of
recorded trials, the newest trial update and the study status); after ``ttl_s`` a hit
re-reads only the version and rebuilds the view when it changed. Derived products
(figure JSON, front rows) are memoised per view, so they go stale with it. One lock per
study stops a crowd of requests from rebuilding the same view at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from reports.data import StudyView, load_study
from storage import Database, StorageError
from storage.records import EvaluationRecord, StudyRecord, TrialRecord


def study_version(db: Database, name: str) -> tuple[Any, ...]:
    """(status, trials, newest trial update, newest evaluation id) of study ``name``."""
    with db.session_scope() as session:
        row = session.execute(select(StudyRecord.id, StudyRecord.status).where(StudyRecord.name == name)).one_or_none()
        if row is None:
            raise StorageError(f"no study named {name!r}")
        study_id, status = row
        count, newest = session.execute(
            select(func.count(TrialRecord.id), func.max(TrialRecord.updated_at)).where(TrialRecord.study_id == study_id)
        ).one()
        subnets = select(TrialRecord.subnet_id).where(TrialRecord.study_id == study_id).scalar_subquery()
        last_eval = session.execute(
            select(func.max(EvaluationRecord.id)).where(EvaluationRecord.subnet_id.in_(subnets))
        ).scalar_one()
    return (status, int(count), str(newest), last_eval)


@dataclass
class _Entry:
    view: StudyView
    version: tuple[Any, ...]
    checked: float
    derived: dict[Hashable, Any] = field(default_factory=dict)


class StudyCache:
    def __init__(self, db: Database, *, ttl_s: float = 2.0, max_studies: int = 64) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.max_studies = max_studies
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        now = time.monotonic()
        if entry is not None and now - entry.checked < self.ttl_s:
            return entry
        with self._lock(name):
            entry = self._entries.get(name)
            now = time.monotonic()
            if entry is not None and now - entry.checked < self.ttl_s:
                return entry
            version = study_version(self.db, name)
            if entry is not None and entry.version == version:
                entry.checked = now
                return entry
            entry = _Entry(view=load_study(self.db, name), version=version, checked=now)
            with self._guard:
                if len(self._entries) >= self.max_studies and name not in self._entries:
                    oldest = min(self._entries, key=lambda k: self._entries[k].checked)
                    self._entries.pop(oldest, None)
                self._entries[name] = entry
            return entry

    def peek(self, name: str, key: Hashable) -> Any | None:
        """A memoised product of a fresh entry, without any I/O (None when stale or not built):
        lets async endpoints answer from memory and go to a thread only when needed."""
        entry = self._entries.get(name)
        if entry is None or time.monotonic() - entry.checked >= self.ttl_s:
            return None
        return entry.derived.get(key)

    def view(self, name: str) -> StudyView:
        """The current view of study ``name`` (raises :class:`StorageError` if unknown)."""
        return self._entry(name).view

    def derived(self, name: str, key: Hashable, build: Callable[[StudyView], Any]) -> Any:
        """``build(view)`` memoised for the current version of the study."""
        entry = self._entry(name)
        try:
            return entry.derived[key]
        except KeyError:
            value = build(entry.view)
            entry.derived[key] = value
            return value


__all__ = ["StudyCache", "study_version"]
