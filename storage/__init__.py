"""SQL storage for the NAS service: schema, migrations, sessions, the evaluation cache, queries.

Open a database with :func:`open_database` (SQLite file by default, PostgreSQL for many
workers; the schema is upgraded on open) and call the record/query functions with it.
They take and return plain data (ints, strings, dicts, frozen rows, DataFrames), never
ORM objects. Our tables (prefix ``nas_``) share the database with Optuna's and link to
them by study name and trial number only.

    db = open_database("sqlite:///work/nas.db")
    sn = upsert_supernet(db, content_hash=..., name=..., path=..., config={...}, space={...}, provenance={...})
    sub = get_or_create_subnet(db, supernet_id=sn, config_json=..., config_hash=..., n_layer=4, params=10**6)
    record_evaluation(db, NewEvaluation(subnet_id=sub, task="piqa", metric="acc", value=0.6, stderr=0.01, ...))
    find_evaluations(db, supernet_hash=..., config_hash=..., fidelity="full", harness_version=...,
                     task_hashes={...}, settings={...})

Errors a user can cause raise :class:`StorageError` with one clear message.
"""

from __future__ import annotations

from storage.cache import (
    COST_METHODS,
    example_scores_of,
    find_costs,
    find_evaluations,
    find_subnet,
    get_example_scores,
    get_or_create_subnet,
    get_subnet,
    get_supernet,
    list_evaluations,
    list_supernets,
    record_cost,
    record_evaluation,
    subnet_example_scores,
    upsert_supernet,
)
from storage.database import Database, default_database_url, normalise_url, open_database, require_database
from storage.errors import StorageError
from storage.migrate import current_revision, head_revision, upgrade_schema
from storage.records import (
    Base,
    CostRecord,
    EvaluationRecord,
    ExampleScoresRecord,
    StudyRecord,
    SubnetRecord,
    SupernetRecord,
    TrialRecord,
)
from storage.rows import CostRow, EvaluationRow, ExampleScores, NewEvaluation, StudyRow, SubnetRow, SupernetRow, TrialRow
from storage.studies import (
    BASE_COLUMNS,
    STUDY_STATUSES,
    create_study,
    get_study,
    list_studies,
    list_trials,
    record_trial,
    set_study_status,
    study_fidelities,
    study_results,
    update_study_spec,
)

__all__ = [
    "BASE_COLUMNS",
    "Base",
    "COST_METHODS",
    "CostRecord",
    "CostRow",
    "Database",
    "EvaluationRecord",
    "EvaluationRow",
    "NewEvaluation",
    "ExampleScores",
    "ExampleScoresRecord",
    "STUDY_STATUSES",
    "StorageError",
    "StudyRecord",
    "StudyRow",
    "SubnetRecord",
    "SubnetRow",
    "SupernetRecord",
    "SupernetRow",
    "TrialRecord",
    "TrialRow",
    "create_study",
    "current_revision",
    "default_database_url",
    "find_costs",
    "example_scores_of",
    "find_evaluations",
    "find_subnet",
    "get_example_scores",
    "get_or_create_subnet",
    "get_study",
    "get_subnet",
    "get_supernet",
    "head_revision",
    "list_evaluations",
    "list_studies",
    "list_supernets",
    "list_trials",
    "normalise_url",
    "open_database",
    "record_cost",
    "record_evaluation",
    "record_trial",
    "require_database",
    "set_study_status",
    "study_fidelities",
    "subnet_example_scores",
    "study_results",
    "update_study_spec",
    "upgrade_schema",
    "upsert_supernet",
]
