"""Offline task pack: standard lm-eval task names resolved to local data files.

The built-in lm-eval tasks ``hellaswag``, ``arc_easy``, ``arc_challenge``, ``piqa``,
``winogrande``, ``boolq``, ``openbookqa``, ``copa``, ``lambada_openai``, ``wikitext``
and the ``blimp`` group (its 67 ``blimp_<paradigm>`` tasks) download their data from
the Hugging Face Hub. The data directory (``NAS_DATA_DIR``, default ``../shared/data``
next to the repository) holds the same rows as JSONL files. For every such task this
module writes a tiny YAML file that ``include``s lm-eval's own built-in YAML (so the
prompts, choices, targets, metrics and ``!function`` helpers are exactly lm-eval's)
and only swaps the data source::

    include: .../lm_eval/tasks/arc/arc_easy.yaml
    dataset_path: json
    dataset_name: null
    dataset_kwargs: {data_files: {test: DATA/benchmarks/arc_easy/test.jsonl, ...}}
    training_split: null          # splits that are not local are switched off

A task whose benchmark folder is absent from the data directory is used unchanged
(the built-in config, which downloads from the Hub). A folder that is present but
lacks the file of the split lm-eval scores on is an error naming the path.

Only evaluation splits are local, so few-shot examples (``num_fewshot > 0``) would be
drawn from the validation split instead of the (missing) training split; at zero
shot the requests are identical to the built-in task's.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import lm_eval
import lm_eval.tasks
import yaml
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from evaluators.errors import EvaluatorError
from nas.metrics import DEFAULT_TASK_METRIC, HELDOUT_TASK
from nas.paths import cache_dir
from nas.paths import data_dir as default_data_dir

log = logging.getLogger(__name__)

DATA_ENV = "NAS_DATA_DIR"
_SPLIT_KEYS = ("training_split", "validation_split", "test_split")


def lm_eval_tasks_dir() -> Path:
    """The directory of lm-eval's built-in task YAMLs."""
    return Path(lm_eval.tasks.__file__).resolve().parent


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The offline data directory: ``data_dir``, else ``$NAS_DATA_DIR``, else
    ``../shared/data`` next to the repository when it exists; None when there is none.

    An explicitly named directory (argument or environment) must exist.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise EvaluatorError(f"data directory {path} does not exist; pass an existing directory or unset it")
        return path.resolve()
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise EvaluatorError(
                f"{DATA_ENV}={env} does not exist; point {DATA_ENV} at the offline data directory "
                "(the one holding benchmarks/) or unset it to use the Hugging Face Hub"
            )
        return path.resolve()

    path = default_data_dir()
    return path.resolve() if path is not None and path.is_dir() else None


# --------------------------------------------------------------------- the pack
@dataclass(frozen=True)
class PackTask:
    """How one built-in lm-eval task maps onto files of the data directory.

    ``builtin`` is the task's YAML relative to lm-eval's tasks directory; ``folder`` is
    relative to ``DATA/benchmarks``; ``files`` maps a Hugging Face split name to a file
    name in that folder.
    """
    name: str
    builtin: str
    folder: str
    files: Mapping[str, str]


def _standard_tasks() -> dict[str, PackTask]:
    eval_splits = {"test": "test.jsonl", "validation": "validation.jsonl"}
    val = {"validation": "validation.jsonl"}
    tasks = [
        PackTask("hellaswag", "hellaswag/hellaswag.yaml", "hellaswag", val),
        PackTask("arc_easy", "arc/arc_easy.yaml", "arc_easy", eval_splits),
        PackTask("arc_challenge", "arc/arc_challenge.yaml", "arc_challenge", eval_splits),
        PackTask("piqa", "piqa/piqa.yaml", "piqa", val),
        PackTask("winogrande", "winogrande/default.yaml", "winogrande", val),
        PackTask("boolq", "super_glue/boolq/default.yaml", "boolq", val),
        PackTask("openbookqa", "openbookqa/openbookqa.yaml", "openbookqa", eval_splits),
        PackTask("copa", "super_glue/copa/default.yaml", "copa", val),
        PackTask("lambada_openai", "lambada/lambada_openai.yaml", "lambada_openai", {"test": "lambada_test.jsonl"}),
        PackTask("wikitext", "wikitext/wikitext.yaml", "wikitext", {"test": "wikitext-2-raw-v1.test.document_level.jsonl"}),
    ]
    return {t.name: t for t in tasks}


STANDARD_TASKS = _standard_tasks()
BLIMP_GROUP = "blimp"
_BLIMP_GROUP_YAML = "blimp/_blimp.yaml"


@lru_cache(maxsize=1)
def blimp_paradigms() -> tuple[str, ...]:
    """The BLiMP paradigms of lm-eval's ``blimp`` group, in its order."""
    cfg = load_yaml(lm_eval_tasks_dir() / _BLIMP_GROUP_YAML, resolve_func=False)
    return tuple(str(name).removeprefix("blimp_") for name in cfg["task"])


def pack_task(name: str) -> PackTask | None:
    """The pack entry of a leaf task name (None when the pack does not cover it)."""
    if name in STANDARD_TASKS:
        return STANDARD_TASKS[name]
    if name.startswith("blimp_"):
        paradigm = name.removeprefix("blimp_")
        if paradigm in blimp_paradigms():
            return PackTask(name, f"blimp/{paradigm}.yaml", "blimp", {"train": f"{paradigm}.jsonl"})
    return None


def pack_names() -> list[str]:
    """Every name the pack resolves: the standard tasks, ``blimp`` and its subtasks."""
    return [*STANDARD_TASKS, BLIMP_GROUP, *(f"blimp_{p}" for p in blimp_paradigms())]


def expand(name: str) -> list[str]:
    """Leaf task names of a pack name (a group expands to its tasks)."""
    if name == BLIMP_GROUP:
        return [f"blimp_{p}" for p in blimp_paradigms()]
    return [name]


def is_pack_name(name: str) -> bool:
    return name == BLIMP_GROUP or pack_task(name) is not None


# --------------------------------------------------------------------- metrics
def task_metrics(name: str) -> tuple[str, ...] | None:
    """The metric names lm-eval reports for a pack task or group, as results name them
    (``acc``, ``acc_norm``; ``metric,filter`` under a filter other than ``none``); None
    for a task outside the pack (its config is only known once lm-eval indexed it)."""
    if name == HELDOUT_TASK:
        return (DEFAULT_TASK_METRIC[HELDOUT_TASK],)
    if name == BLIMP_GROUP:
        cfg = load_yaml(lm_eval_tasks_dir() / _BLIMP_GROUP_YAML, resolve_func=False)
        return tuple(str(m["metric"]) for m in cfg.get("aggregate_metric_list") or [] if "metric" in m)
    task = pack_task(name)
    if task is None:
        return None
    cfg = _builtin_config(task)
    metrics = [str(m["metric"]) for m in cfg.get("metric_list") or [] if isinstance(m, Mapping) and "metric" in m]
    filters = [str(f.get("name", "none")) for f in cfg.get("filter_list") or [] if isinstance(f, Mapping)] or ["none"]
    return tuple(m if f == "none" else f"{m},{f}" for f in filters for m in metrics)


def check_task_metrics(tasks: Iterable[Any], objectives: Iterable[str] = ()) -> None:
    """Refuse, before anything is loaded or run, a metric that a task does not report:
    each task's ``main_metric`` (``tasks[].metric`` of a study spec, or the default) and
    every ``task/metric`` objective. Tasks outside the offline pack are not checked here
    (lm-eval reports their metrics when they first run)."""
    wanted: list[tuple[str, str, str]] = []
    for i, task in enumerate(tasks):
        wanted.append((task.name, task.main_metric, f"tasks[{i}].metric"))
    for i, name in enumerate(objectives):
        task, sep, metric = name.partition("/")
        if sep and metric:
            wanted.append((task, metric, f"objectives[{i}]"))
    for task, metric, where in wanted:
        known = task_metrics(task)
        if known is None or metric in known:
            continue
        close = difflib.get_close_matches(metric, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise EvaluatorError(
            f"{where}: task {task} has no metric {metric!r}{hint} (it reports {', '.join(known) or 'nothing'}); "
            "fix the metric name in the spec"
        )


# ------------------------------------------------------------------ resolution
@dataclass(frozen=True)
class LocalFiles:
    """The local files of one pack task (split name -> absolute path)."""
    task: PackTask
    files: Mapping[str, Path]


def local_files(task: PackTask, data_dir: Path | None) -> LocalFiles | None:
    """The task's local files, or None when its benchmark folder is not in ``data_dir``.

    Raises :class:`EvaluatorError` when the folder exists but lacks the file of the split
    lm-eval evaluates (the test split when the built-in task has one, else validation).
    """
    if data_dir is None:
        return None
    folder = data_dir / "benchmarks" / task.folder
    if not folder.is_dir():
        return None
    present = {split: folder / name for split, name in task.files.items() if (folder / name).is_file()}
    builtin = _builtin_config(task)
    eval_split = builtin.get("test_split") or builtin.get("validation_split")
    if eval_split not in present:
        missing = folder / task.files.get(str(eval_split), f"{eval_split}.jsonl")
        raise EvaluatorError(
            f"task {task.name}: local data file {missing} is missing ({DATA_ENV}={data_dir}); "
            f"restore the file, point {DATA_ENV} at a complete data directory, or remove "
            f"{folder} to use the built-in task (Hugging Face download)"
        )
    return LocalFiles(task, present)


def _builtin_config(task: PackTask) -> dict[str, Any]:

    path = lm_eval_tasks_dir() / task.builtin
    if not path.is_file():
        raise EvaluatorError(
            f"task {task.name}: lm-eval's built-in config {path} is missing; this lm-eval version "
            "moved its tasks, so the offline pack cannot reuse them (install lm-eval 0.4.x)"
        )
    return load_yaml(path, resolve_func=False)


def local_task_config(source: LocalFiles) -> dict[str, Any]:
    """The YAML mapping of a local task: the built-in YAML with the data source swapped."""
    task = source.task
    builtin = _builtin_config(task)
    cfg: dict[str, Any] = {
        "include": str(lm_eval_tasks_dir() / task.builtin),
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(path) for split, path in sorted(source.files.items())}},
    }
    for key in _SPLIT_KEYS:
        split = builtin.get(key)
        if split is not None and split not in source.files:
            cfg[key] = None
    return cfg


class TaskPack:
    """Resolves task names against the offline data directory and loads lm-eval tasks.

    Local tasks are written as YAML files to a private temporary directory (removed
    when the pack is garbage-collected or :meth:`close`\\ d) that lm-eval indexes with
    ``TaskManager(include_defaults=False, include_path=[...])`` together with the
    built-in task directories of the tasks that are not local.
    """
    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = resolve_data_dir(data_dir)
        self._dir = Path(tempfile.mkdtemp(prefix="nas-tasks-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        self._written: dict[str, Path] = {}

    @property
    def directory(self) -> Path:
        """The directory holding the generated task YAMLs."""
        return self._dir

    def close(self) -> None:
        self._finalizer()

    # ----------------------------------------------------------------- names
    def check_names(self, names: Sequence[str], known: Iterable[str] | None = None) -> None:
        """Raise :class:`EvaluatorError` for names neither the pack nor lm-eval knows
        (``known``: lm-eval's names when already indexed)."""
        if not names:
            raise EvaluatorError("no tasks given; name at least one lm-eval task, e.g. hellaswag")
        unknown = [n for n in names if not is_pack_name(n)]
        if not unknown:
            return
        everything = set(pack_names()) | set(known if known is not None else _all_builtin_names())
        for name in unknown:
            if name not in everything:
                close = difflib.get_close_matches(name, sorted(everything), n=5, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise EvaluatorError(
                    f"unknown task {name!r}{hint} (offline pack: {', '.join([*STANDARD_TASKS, BLIMP_GROUP])}; "
                    "any lm-eval task name also works online)"
                )

    def local(self, name: str) -> LocalFiles | None:
        """Local files of a leaf pack task, or None (not in the pack, or not local)."""
        task = pack_task(name)
        return None if task is None else local_files(task, self.data_dir)

    def is_local(self, name: str) -> bool:
        """True when every leaf task of ``name`` reads local files."""
        return is_pack_name(name) and all(self.local(leaf) is not None for leaf in expand(name))

    # ----------------------------------------------------------------- write
    def write(self, names: Iterable[str] | None = None) -> Path:
        """Write the YAMLs of the local tasks among ``names`` (default: the whole pack);
        return the directory. A group is written only when all its tasks are local."""
        for name in names if names is not None else pack_names():
            if not is_pack_name(name) or name in self._written:
                continue
            if name == BLIMP_GROUP:
                if self.is_local(name):
                    for leaf in expand(name):
                        self.write([leaf])
                    self._write_yaml(name, {"include": str(lm_eval_tasks_dir() / _BLIMP_GROUP_YAML)})
                continue
            source = self.local(name)
            if source is None:
                log.warning(
                    "task %s: no local data under %s; using the built-in task (downloads from the Hugging Face Hub)",
                    name, self.data_dir,
                )
                continue
            self._write_yaml(name, local_task_config(source))
        return self._dir

    def _write_yaml(self, name: str, cfg: dict[str, Any]) -> None:
        path = self._dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self._written[name] = path

    # ------------------------------------------------------------------ load
    def task_manager(self, names: Sequence[str]) -> Any:
        """A TaskManager that resolves ``names``: generated local tasks, plus only the
        built-in directories of the pack tasks that are not local (the whole built-in
        index, ~10 s, only when a name is outside the pack)."""

        if not names:
            raise EvaluatorError("no tasks given; name at least one lm-eval task, e.g. hellaswag")
        self.write(names)
        builtin_dirs: list[Path] = []
        outside = False
        for name in names:
            if not is_pack_name(name):
                outside = True
                continue
            if name in self._written:
                continue
            rel = _BLIMP_GROUP_YAML if name == BLIMP_GROUP else pack_task(name).builtin  # type: ignore[union-attr]
            directory = (lm_eval_tasks_dir() / rel).parent
            if directory not in builtin_dirs:
                builtin_dirs.append(directory)
        # generated files last: later include paths override earlier ones
        paths = [*builtin_dirs, self._dir]
        cached = _cached_builtin_names() if outside else None
        if cached is not None:
            self.check_names(names, known=cached)  # fail fast, before indexing every built-in task
        quiet = logging.getLogger("lm_eval.tasks._index")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "task X overrides existing task" is what we want here
        try:
            manager = TaskManager(include_defaults=outside, include_path=[str(p) for p in paths])
        finally:
            quiet.setLevel(level)
        if outside and cached is None:
            _store_builtin_names(manager.all_tasks)
            self.check_names(names, known=manager.all_tasks)
        return manager

    def load(self, names: Sequence[str]) -> LoadedTasks:
        """Build the lm-eval Task (and Group) objects of ``names`` (datasets load here)."""
        manager = self.task_manager(names)
        try:
            loaded = manager.load(list(names))
        except KeyError as exc:
            raise EvaluatorError(f"lm-eval cannot resolve the tasks {list(names)}: {exc}") from None
        tasks = dict(loaded["tasks"])
        for task in tasks.values():
            task.set_fewshot_seed(seed=1234)  # lm-eval's default fewshot seed
        return LoadedTasks(
            names=tuple(names),
            tasks=tasks,
            groups=dict(loaded.get("groups", {})),
            local={name: self.local(name) is not None for name in tasks},
        )


@dataclass
class LoadedTasks:
    """lm-eval tasks of a study, built once: ``tasks`` maps every leaf task name to its
    Task, ``groups`` maps group names to lm-eval Groups, ``local`` says which tasks read
    local files."""
    names: tuple[str, ...]
    tasks: dict[str, Any]
    groups: dict[str, Any]
    local: dict[str, bool]

    @cached_property
    def hashes(self) -> dict[str, str]:
        """``task_hash`` of every leaf task."""
        return {name: task_hash(task) for name, task in self.tasks.items()}


def _names_cache() -> Path:
    """Where lm-eval's built-in task names are cached (per lm-eval version and install)."""


    key = hashlib.sha256(f"{lm_eval.__version__}:{lm_eval_tasks_dir()}".encode()).hexdigest()[:12]
    return cache_dir() / f"lm_eval_task_names-{key}.json"


def _cached_builtin_names() -> list[str] | None:
    try:
        names = json.loads(_names_cache().read_text())
    except (OSError, ValueError):
        return None
    return names if isinstance(names, list) else None


def _store_builtin_names(names: Sequence[str]) -> None:
    path = _names_cache()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(names)))
        tmp.replace(path)
    except OSError as exc:
        log.debug("cannot cache lm-eval's task names in %s: %s", path, exc)


def _all_builtin_names() -> list[str]:
    """Every task, group and tag name lm-eval knows (indexing all built-in YAMLs takes
    ~10 s, so the list is cached per lm-eval version)."""
    names = _cached_builtin_names()
    if names is None:
        log.info("indexing lm-eval's built-in tasks to resolve a name outside the offline pack")
        names = TaskManager().all_tasks
        _store_builtin_names(names)
    return names


# --------------------------------------------------------------------- hashing
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _canonical(value: Any) -> Any:
    if callable(value):
        try:
            source = inspect.getsource(value)
        except (OSError, TypeError):
            source = ""
        name = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
        return f"<fn {name} {hashlib.sha256(source.encode()).hexdigest()[:16]}>"
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, str):
        return _ADDRESS.sub("", value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _ADDRESS.sub("", repr(value))


def task_hash(task: Any) -> str:
    """Stable 16-hex-digit hash of a task's resolved config.

    Covers prompts, choices, targets, metrics, splits and processing functions (by
    source). Local data files count by their content (sha256), not their path, so the
    same files in another directory give the same hash; run-time metadata (where the
    YAML was read from, CLI model arguments) is left out; ``metadata.version`` is kept.
    """
    cfg = dict(task.dump_config())
    metadata = cfg.pop("metadata", None) or {}
    if isinstance(metadata, Mapping) and "version" in metadata:
        cfg["version"] = metadata["version"]
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    files = kwargs.get("data_files")
    if isinstance(files, Mapping):
        kwargs["data_files"] = {
            split: f"sha256:{_file_digest(Path(p))}" if Path(str(p)).is_file() else str(p)
            for split, p in files.items()
        }
        cfg["dataset_kwargs"] = kwargs
    text = json.dumps(_canonical(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = [
    "BLIMP_GROUP",
    "DATA_ENV",
    "STANDARD_TASKS",
    "LoadedTasks",
    "LocalFiles",
    "PackTask",
    "TaskPack",
    "blimp_paradigms",
    "check_task_metrics",
    "expand",
    "is_pack_name",
    "local_task_config",
    "lm_eval_tasks_dir",
    "pack_names",
    "pack_task",
    "resolve_data_dir",
    "task_hash",
    "task_metrics",
]
