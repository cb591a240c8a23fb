"""The SQL schema: SQLAlchemy 2.0 typed ORM classes, one per table.

Every table is prefixed ``nas_`` so that our tables and Optuna's own tables (``studies``,
``trials``, ``alembic_version``, ...) live side by side in one database. Our tables never
write into Optuna's: a :class:`TrialRecord` links to an Optuna trial by study name and
trial number only.

The schema is created and evolved by the Alembic migrations in ``storage/migrations``
(never ``metadata.create_all``); a test checks that these classes and the migrated
schema agree.

Tables::

    nas_supernet        SupernetRecord       one trained/imported supernet (unique content hash)
    nas_study           StudyRecord          one search study (unique name) on one supernet
    nas_subnet          SubnetRecord         one sub-network config (unique per supernet)
    nas_evaluation      EvaluationRecord     one metric of one task at one fidelity
    nas_example_scores  ExampleScoresRecord  per-example scores of one evaluation (packed)
    nas_cost            CostRecord           one cost metric of a sub-network on a device
    nas_trial           TrialRecord          Optuna trial number -> sub-network, fidelity
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TABLE_PREFIX = "nas_"
#: ``nas_evaluation.settings`` of rows whose scoring settings are not known (revision 0003).
LEGACY_SETTINGS = '{"legacy":"unknown"}'

# Stable constraint names on every engine (Alembic needs them to alter constraints later).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always returned timezone-aware (UTC).

    SQLite has no time zones: values are stored as naive UTC and tagged UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        dt.datetime: UTCDateTime,
        float: Double,
        bytes: LargeBinary,
    }


class SupernetRecord(Base):
    """A supernet: its weights' content hash, where it lives, its config, space and provenance."""

    __tablename__ = "nas_supernet"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]]
    space: Mapped[dict[str, Any]]
    provenance: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class StudyRecord(Base):
    """A search study: unique name, its Optuna study name, full spec, supernet and status."""

    __tablename__ = "nas_study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    optuna_study_name: Mapped[str] = mapped_column(String(255))
    spec: Mapped[dict[str, Any]]
    supernet_id: Mapped[int] = mapped_column(
        ForeignKey("nas_supernet.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[str] = mapped_column(String(32), default="created")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]


class SubnetRecord(Base):
    """A sub-network of a supernet: canonical config JSON, its hash and derived sizes."""

    __tablename__ = "nas_subnet"
    __table_args__ = (UniqueConstraint("supernet_id", "config_hash", name="uq_nas_subnet_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    supernet_id: Mapped[int] = mapped_column(ForeignKey("nas_supernet.id", ondelete="CASCADE"))
    config_json: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(128))
    n_layer: Mapped[int] = mapped_column(Integer)
    params: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EvaluationRecord(Base):
    """One metric of one task for one sub-network at one fidelity, with its provenance.

    Unique on (sub-network, task, metric, fidelity, task hash, harness version,
    settings): that tuple is the evaluation cache key. ``settings`` is the canonical JSON
    of what else changes a score (dtype, context window, log-softmax dtype; see
    :func:`evaluators.types.scoring_settings`); the few-shot count is part of the task
    config, hence of the task hash.
    """

    __tablename__ = "nas_evaluation"
    __table_args__ = (
        UniqueConstraint(
            "subnet_id",
            "task",
            "metric",
            "fidelity",
            "task_hash",
            "harness_version",
            "settings",
            name="uq_nas_evaluation_key",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subnet_id: Mapped[int] = mapped_column(ForeignKey("nas_subnet.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(255))
    metric: Mapped[str] = mapped_column(String(255))
    value: Mapped[float]
    stderr: Mapped[float | None]
    n_examples: Mapped[int] = mapped_column(Integer)
    fidelity: Mapped[str] = mapped_column(String(255))
    harness_version: Mapped[str] = mapped_column(String(64))
    task_hash: Mapped[str] = mapped_column(String(128))
    settings: Mapped[str] = mapped_column(String(512), server_default=LEGACY_SETTINGS)
    wall_s: Mapped[float]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ExampleScoresRecord(Base):
    """Per-example scores of one evaluation, stored compactly in one row.

    ``example_ids`` is a JSON list (strings or integers, in scoring order) and ``scores``
    the matching scores packed as little-endian float32 (4 bytes per example), so a
    1,000-example task costs ~4 KB of scores instead of 1,000 rows.
    """

    __tablename__ = "nas_example_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(
        ForeignKey("nas_evaluation.id", ondelete="CASCADE"), unique=True
    )
    n_examples: Mapped[int] = mapped_column(Integer)
    example_ids: Mapped[list[Any]]
    scores: Mapped[bytes]


class CostRecord(Base):
    """One cost metric of a sub-network on a device, and how it was obtained.

    Unique on (sub-network, device, metric, method).
    """

    __tablename__ = "nas_cost"
    __table_args__ = (
        UniqueConstraint("subnet_id", "device", "metric", "method", name="uq_nas_cost_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subnet_id: Mapped[int] = mapped_column(ForeignKey("nas_subnet.id", ondelete="CASCADE"))
    device: Mapped[str] = mapped_column(String(512))
    metric: Mapped[str] = mapped_column(String(255))
    value: Mapped[float]
    method: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrialRecord(Base):
    """Links a study's Optuna trial number to a sub-network and the fidelity it reached.

    Unique on (study, trial number); recording the same trial again updates it.
    """

    __tablename__ = "nas_trial"
    __table_args__ = (UniqueConstraint("study_id", "trial_number", name="uq_nas_trial_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("nas_study.id", ondelete="CASCADE"))
    trial_number: Mapped[int] = mapped_column(Integer)
    subnet_id: Mapped[int] = mapped_column(
        ForeignKey("nas_subnet.id", ondelete="CASCADE"), index=True
    )
    fidelity: Mapped[str | None] = mapped_column(String(255))
    feasible: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


__all__ = [
    "Base",
    "CostRecord",
    "EvaluationRecord",
    "ExampleScoresRecord",
    "StudyRecord",
    "SubnetRecord",
    "SupernetRecord",
    "TABLE_PREFIX",
    "TrialRecord",
]
