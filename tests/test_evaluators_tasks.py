"""The offline task pack: local tasks render exactly the built-in tasks' requests.

For every pack task, the built-in lm-eval config (its own YAML, its own ``!function``
helpers) is built with its data swapped for rows read independently from the local
JSONL file, and must render the same requests, targets and documents as the local
task that the pack generates (``dataset_path: json`` through ``datasets``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evaluators import EvaluatorError, TaskPack, resolve_data_dir
from evaluators.tasks import BLIMP_GROUP, STANDARD_TASKS, blimp_paradigms, expand, lm_eval_tasks_dir, pack_task

DATA = resolve_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="no offline data directory (NAS_DATA_DIR / ../shared/data)")
BLIMP_SAMPLE = ("blimp_adjunct_island", "blimp_wh_vs_that_with_gap_long_distance")
MAX_ROWS = 2500  # the reference task reads the first rows only (keeps hellaswag's 10k rows fast)


def builtin_task(name: str, pack: TaskPack):
    """lm-eval's built-in task config, unchanged but for its data: the local rows, parsed with json."""
    import datasets
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(lm_eval_tasks_dir() / pack_task(name).builtin, resolve_func=True)
    files = pack.local(name).files
    rows = {split: [json.loads(line) for line in path.read_text().splitlines()[:MAX_ROWS]] for split, path in files.items()}
    cfg["custom_dataset"] = lambda **_: {split: datasets.Dataset.from_list(r) for split, r in rows.items()}
    for key in ("training_split", "validation_split", "test_split"):
        if cfg.get(key) not in rows:  # splits without local rows (train: only few-shot sampling reads it)
            cfg[key] = None
    cfg.pop("tag", None)
    return ConfigurableTask(config=cfg)


def rendered(task, docs, doc_ids):
    out = []
    for i in doc_ids:
        doc = docs[i]
        ctx = task.fewshot_context(doc, num_fewshot=0, gen_prefix=task.doc_to_prefix(doc))
        made = task.construct_requests(doc=doc, ctx=ctx, metadata=(task.config.task, i, 1))
        made = made if isinstance(made, list) else [made]
        out.append(([inst.args for inst in made], task.doc_to_target(doc)))
    return out


@pytest.fixture(scope="module")
def pack():
    p = TaskPack()
    yield p
    p.close()


@pytest.fixture(scope="module")
def local(pack):
    return pack.load([*STANDARD_TASKS, *BLIMP_SAMPLE]).tasks


@needs_data
@pytest.mark.parametrize("name", [*STANDARD_TASKS, *BLIMP_SAMPLE])
def test_local_task_renders_the_builtin_requests(name, pack, local):
    ours = local[name]
    assert ours.config.dataset_path == "json" and pack.is_local(name)
    reference = builtin_task(name, pack)
    ours_docs, reference_docs = ours.eval_docs, reference.eval_docs  # (process_docs runs per access)
    n = len(reference_docs)
    split = ours.config.test_split or ours.config.validation_split
    assert len(ours_docs) == len(pack.local(name).files[split].read_text().splitlines()) >= n > 0
    assert ours.OUTPUT_TYPE == reference.OUTPUT_TYPE
    assert [m["metric"] for m in ours.config.metric_list] == [m["metric"] for m in reference.config.metric_list]
    ids = sorted({0, n - 1, *range(0, n, max(1, n // 12))})
    assert rendered(ours, ours_docs, ids) == rendered(reference, reference_docs, ids)


@needs_data
def test_blimp_group_resolves_to_all_local_paradigms(pack):
    manager = pack.task_manager([BLIMP_GROUP])
    children = expand(BLIMP_GROUP)
    assert len(children) == len(blimp_paradigms()) == 67
    for name in children:
        assert Path(manager.task_index[name].yaml_path).parent == pack.directory
    assert Path(manager.task_index[BLIMP_GROUP].yaml_path).parent == pack.directory


def test_task_hash_follows_file_content_not_path(tmp_path, pack, local):
    if DATA is None:
        pytest.skip("no offline data directory")
    copy = tmp_path / "data"
    shutil.copytree(DATA / "benchmarks" / "arc_easy", copy / "benchmarks" / "arc_easy")
    other = TaskPack(copy)
    try:
        same = other.load(["arc_easy"])
        assert same.hashes["arc_easy"] == pack.load(["arc_easy"]).hashes["arc_easy"]
        test_file = copy / "benchmarks" / "arc_easy" / "test.jsonl"
        test_file.write_text(test_file.read_text().replace("photosynthesis", "fotosynthesis", 1))
        changed = TaskPack(copy).load(["arc_easy"])
        assert changed.hashes["arc_easy"] != same.hashes["arc_easy"]
    finally:
        other.close()


def test_missing_local_file_names_the_path_and_data_dir(tmp_path):
    folder = tmp_path / "benchmarks" / "arc_easy"
    folder.mkdir(parents=True)
    (folder / "validation.jsonl").write_text("{}\n")
    pack = TaskPack(tmp_path)
    with pytest.raises(EvaluatorError) as info:
        pack.load(["arc_easy"])
    message = str(info.value)
    assert str(folder / "test.jsonl") in message and "NAS_DATA_DIR" in message and str(tmp_path) in message


def test_absent_benchmark_falls_back_to_the_builtin_task(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    pack = TaskPack(tmp_path)
    assert pack.local("piqa") is None and not pack.is_local("piqa")
    manager = pack.task_manager(["piqa"])  # the built-in piqa directory only; nothing downloads yet
    assert Path(manager.task_index["piqa"].yaml_path) == lm_eval_tasks_dir() / "piqa" / "piqa.yaml"
    assert "hellaswag" not in manager.all_tasks  # no index of every built-in task


def test_bad_data_dir_and_unknown_task_names(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(EvaluatorError, match="NAS_DATA_DIR=.*nowhere does not exist"):
        TaskPack()
    monkeypatch.delenv("NAS_DATA_DIR")
    with pytest.raises(EvaluatorError, match="no tasks given"):
        TaskPack(tmp_path).load([])
    with pytest.raises(EvaluatorError, match=r"unknown task 'hellaswagg'; did you mean hellaswag"):
        TaskPack(tmp_path).load(["hellaswagg"])
