"""Study spec validation: defaults, shorthands, and one clear error per bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nas.errors import NasError
from nas.search.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parent.parent


def _spec(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "s", "supernet": "work/x", "tasks": ["arc_easy", "piqa"], "budget": {"n_trials": 10}}
    data.update(over)
    return data


def test_minimal_spec_takes_defaults() -> None:
    spec = parse_spec(_spec())
    assert [o.metric for o in spec.objectives] == ["accuracy", "non_embedding_params"]
    assert [o.direction for o in spec.objectives] == ["maximize", "minimize"]
    assert spec.sampler.name == "tpe" and spec.seed == 0 and spec.dtype == "auto"
    assert [f.label for f in spec.fidelities] == ["full"]
    assert spec.storage is None and spec.space is None


def test_shorthands_and_directions() -> None:
    spec = parse_spec(_spec(
        objectives=["accuracy", "piqa", {"metric": "arc_easy/acc_norm"}, "flops", "latency"],
        constraints={"params": 1e8, "flops_per_token": {"min": 1e6}},
        fidelities=[100, "n400-s3", "full"],
        sampler="NSGA-II",
        budget={"wall_time_s": "90m"},
        seed=7,
        confirmation=None,  # mixed seeds need no shared held-out tail
    ))
    assert [o.metric for o in spec.objectives] == ["accuracy", "piqa/acc", "arc_easy/acc_norm", "flops_per_token", "latency_ms"]
    assert [o.direction for o in spec.objectives] == ["maximize", "maximize", "maximize", "minimize", "minimize"]
    assert [(c.metric, c.max, c.min) for c in spec.constraints] == [("params", 1e8, None), ("flops_per_token", None, 1e6)]
    assert [f.label for f in spec.fidelities] == ["n100-s7", "n400-s3", "full"]
    assert spec.sampler.name == "nsga2" and spec.budget.wall_time_s == 5400 and spec.budget.n_trials is None
    assert spec.cost_metrics == ("flops_per_token", "latency_ms", "params")


def test_heldout_loss_is_minimised() -> None:
    spec = parse_spec(_spec(tasks=["heldout_loss"], objectives=["accuracy", "heldout_loss"]))
    assert [o.direction for o in spec.objectives] == ["minimize", "minimize"]


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"sampler": "cmaes"}, "sampler.name: unknown sampler 'cmaes'; use one of nsga2, nsga3, tpe, gp, random, qmc, grid"),
        ({"objectives": ["accuracy", "latncy"]}, "objectives[1].metric: unknown objective 'latncy'"),
        ({"objectives": ["hellaswag"]}, "unknown objective 'hellaswag'; use 'accuracy', a task of this spec (arc_easy, piqa"),
        ({"objectives": ["params", "params"]}, "['params'] listed twice"),
        ({"objectives": []}, "list at least one objective"),
        ({"tasks": []}, "tasks: list at least one task"),
        ({"tasks": ["arc easy"]}, "task name 'arc easy' must be a plain lm-eval task name"),
        ({"tasks": ["piqa", "piqa"]}, "['piqa'] are listed twice"),
        ({"constraints": [{"metric": "params", "min": 10, "max": 1}]}, "has min 10 above max 1; nothing can be feasible"),
        ({"constraints": [{"metric": "params"}]}, "needs max and/or min"),
        ({"constraints": [{"metric": "accuracy", "min": 0.5}]}, "constraints[0].metric: 'accuracy' is not a cost"),
        ({"fidelities": ["full", 100]}, "fidelities: fidelities ['full', 'n100-s0'] must grow strictly"),
        ({"fidelities": [100, 100]}, "must grow strictly"),
        ({"budget": {}}, "budget: give n_trials and/or wall_time_s"),
        ({"budget": {"wall_time_s": "soon"}}, "'soon' is not a duration"),
        ({"budget": {"n_trials": 0}}, "budget.n_trials: Input should be greater than or equal to 1"),
        ({"dtype": "fp16"}, "dtype: Input should be 'auto', 'bf16' or 'fp32' (got 'fp16')"),
        ({"recheck_nats": -0.5}, "recheck_nats: Input should be greater than or equal to 0"),
        ({"recheck_nats": "nan"}, "recheck_nats: Input should be a finite number"),
        ({"name": "my study"}, "name: study name 'my study' must be letters"),
        ({"samplr": "tpe"}, "samplr: unknown field; remove it or check its spelling"),
        ({"supernet": None}, "supernet: Input should be a valid string"),
        ({"tasks": ["wikitext"], "objectives": ["accuracy"]}, "'accuracy' averages higher-is-better metrics but task(s) ['wikitext']"),
    ],
)
def test_bad_fields_name_the_field_and_the_fix(over: dict[str, Any], expected: str) -> None:
    with pytest.raises(NasError) as info:
        parse_spec(_spec(**over), source="study.yaml")
    message = str(info.value)
    assert message.startswith("study.yaml:")
    assert expected in message, message


def test_missing_required_fields_are_listed() -> None:
    with pytest.raises(NasError) as info:
        parse_spec({"name": "s"}, source="x.yaml")
    for field in ("supernet: required field is missing", "tasks: required field is missing", "budget: required field is missing"):
        assert field in str(info.value)


def test_load_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="does not exist; see examples/study_"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(NasError, match="is not valid YAML"):
        load_spec(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(NasError, match="expected a mapping of fields"):
        load_spec(scalar)


def test_relative_supernet_resolves_next_to_the_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "models" / "sn").mkdir(parents=True)
    path = tmp_path / "study.yaml"
    path.write_text("name: s\nsupernet: models/sn\ntasks: [piqa]\nbudget: 3\n")
    monkeypatch.chdir(REPO)
    assert load_spec(path).supernet == str(tmp_path / "models" / "sn")


def test_every_example_spec_is_valid() -> None:
    examples = sorted((REPO / "examples").glob("study_*.yaml"))
    assert examples, "examples/study_*.yaml missing"
    for path in examples:
        spec = load_spec(path)
        assert spec.name and spec.tasks and spec.objectives
