"""Healing a supernet (`nas heal`): a tiny imported supernet distilled from its frozen full model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from nas.errors import NasError
from nas.model.directory import load_supernet, save_supernet
from nas.model.tokenizer import eos_id
from nas.paths import work_dir
from nas.training import evaluate_loss, list_checkpoints, train
from nas.training.data import eval_windows, load_tokens, split_tokens
from nas.training.heal import (
    HealBudget,
    HealTiming,
    heal,
    heal_settings,
    measure_heal_timing,
    parse_duration,
    parse_tokens,
    plan_heal,
    run_heal,
    subnet_space,
)

from _train_fixtures import tiny_config, write_corpus

SPACE = {"n_layer_choices": [2, 3], "n_head_choices": [2, 4], "d_ff_choices": [16, 32, 64]}


@pytest.fixture(autouse=True)
def _env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path_factory.getbasetemp() / "heal_work"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """A dense model pre-trained by `nas train` (one-member space: only the full model learns)."""
    root = tmp_path_factory.mktemp("scratch")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAS_WORK_DIR", str(root / "work"))
        cfg = tiny_config(root, corpus, steps=40, space={"n_layer_choices": [3], "n_head_choices": [4], "d_ff_choices": [64]},
                          sandwich={"n_random": 0}, optim={"lr": 1e-2, "warmup_fraction": 0.0})
        train(cfg)
    return Path(cfg.out)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, scratch: Path) -> Path:
    """The pre-trained dense model as an *imported* supernet would be: its own provenance, a space to search."""
    loaded = load_supernet(scratch)
    from nas.model.space import SearchSpace

    out = tmp_path_factory.mktemp("imported") / "supernet"
    space = SearchSpace.from_dict(SPACE, loaded.config, loaded.model.layer_rank)
    save_supernet(loaded.model, out, space=space, tokenizer=loaded.load_tokenizer(),
                  provenance={"source": "test import", "format": "hf"})
    return out


def _settings(corpus: Path, **changes):
    base = dict(corpus=str(corpus), batch_size=4, seq_len=32, lr=3e-3, n_random=1, dtype="fp32", eval_tokens=512,
                max_chars=None, val_fraction=0.05, evals=0)
    base.update(changes)
    return heal_settings("cpu", **base)


def _val(corpus: Path, supernet: Path):
    """The held-out split the heal never trains on."""
    loaded = load_supernet(supernet)
    tok = loaded.load_tokenizer()
    settings = _settings(corpus)
    from nas.training.data import CorpusSpec

    stream, _ = load_tokens(CorpusSpec(sources=(str(corpus),)), tok, cache_dir=work_dir() / "cache", eos=eos_id(tok))
    _, val = split_tokens(stream, val_fraction=settings.val_fraction, seq_len=settings.seq_len)
    return eval_windows(val, settings.seq_len, 2048)


def test_budgets_parse_tokens_and_time() -> None:
    assert parse_tokens("2M") == 2_000_000 and parse_tokens("500k") == 500_000 and parse_tokens("2e6") == 2_000_000
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert HealBudget.parse("10m") == HealBudget(seconds=600) and HealBudget.parse("3M") == HealBudget(tokens=3_000_000)
    for bad in ("soon", "10x", "", "0s"):
        with pytest.raises(NasError, match="token count|duration|no time"):
            HealBudget.parse(bad)
    with pytest.raises(NasError, match="tokens or time"):
        HealBudget()
    cpu = heal_settings("cpu")
    assert cpu.budget.seconds == 600 and cpu.batch_size * cpu.seq_len == 1024
    assert "arm_draw" not in cpu.resumable()  # heals recorded before the setting resume as uniform
    assert heal_settings("cpu", arm_draw="spread").resumable()["arm_draw"] == "spread"
    with pytest.raises(NasError, match="--arm-draw 'wide' is not one of uniform, spread"):
        heal_settings("cpu", arm_draw="wide")


def test_heal_improves_the_smallest_and_keeps_the_full_model(tmp_path: Path, corpus: Path, imported: Path) -> None:
    parent = load_supernet(imported)
    val = _val(corpus, imported)
    smallest, largest = parent.space.smallest(), parent.space.largest()
    before_small = evaluate_loss(parent.model, val, smallest, dtype="fp32")
    before_full = evaluate_loss(parent.model, val, largest, dtype="fp32")
    assert before_small > before_full + 0.2  # pruning without healing costs the smallest a lot

    result = heal(imported, tmp_path / "healed", budget=HealBudget(tokens=20 * 4 * 32), settings=_settings(corpus, lr=1.5e-3))
    assert result.steps == 20 and result.tokens == 20 * 4 * 32
    healed = load_supernet(result.out)
    after_small = evaluate_loss(healed.model, val, smallest, dtype="fp32")
    after_full = evaluate_loss(healed.model, val, largest, dtype="fp32")
    assert after_small < before_small - 0.1, (before_small, after_small)
    assert abs(after_full - before_full) < 0.06, (before_full, after_full)  # 2.5%; the smallest gains > 0.3
    # an ordinary supernet directory over the same space, whose provenance names the parent and the data
    assert healed.space == parent.space and healed.config == parent.config
    prov = healed.provenance
    assert prov["source"] == "nas heal" and prov["init_from"]["content_hash"] == parent.content_hash
    assert prov["heal"]["parent_hash"] == parent.content_hash and prov["heal"]["teacher"] == "parent"
    assert prov["heal"]["tokens"] == result.tokens == prov["train_tokens"]
    assert prov["heal"]["data"]["corpus"] == [str(corpus)] and prov["corpus"]["cache_key"]
    assert healed.content_hash == result.content_hash != parent.content_hash


def test_heal_over_a_narrower_residual_stream_trains_it(tmp_path: Path, corpus: Path, imported: Path) -> None:
    parent = load_supernet(imported)
    space = {**SPACE, "d_model_choices": [16, 32]}
    narrow = dataclasses.replace(parent.space.smallest(), d_model=16)  # the smallest sub-network on half the channels
    val = _val(corpus, imported)
    before = evaluate_loss(parent.model, val, narrow, dtype="fp32")
    result = heal(imported, tmp_path / "healed", budget=HealBudget(tokens=20 * 4 * 32), space=space,
                  settings=_settings(corpus, lr=1.5e-3))
    healed = load_supernet(result.out)
    assert healed.space.d_model_choices == (16, 32)  # the healed supernet keeps the space it was healed over
    after = evaluate_loss(healed.model, val, narrow, dtype="fp32")
    assert after < before - 0.1, (before, after)


def test_interrupted_heal_resumes_bit_exactly(tmp_path: Path, corpus: Path, imported: Path) -> None:
    settings = _settings(corpus, checkpoints=6, keep_checkpoints=10)
    budget = HealBudget(tokens=6 * 4 * 32)
    full = heal(imported, tmp_path / "a", budget=budget, settings=settings)
    killed = heal(imported, tmp_path / "b", budget=budget, settings=settings, stop_after=4)
    assert killed.stopped_early and len(list_checkpoints(tmp_path / "b")) == 4
    with pytest.raises(NasError, match="--resume or start over with --fresh"):
        plan_heal(imported, tmp_path / "b", budget=budget, settings=settings)
    # other settings than the interrupted heal's: refused, naming the setting
    with pytest.raises(NasError, match=r"settings\.lr was 0\.003, now 0\.001"):
        plan_heal(imported, tmp_path / "b", budget=budget, settings=_settings(corpus, lr=1e-3, checkpoints=6), resume=True)
    with pytest.raises(NasError, match=r"settings\.arm_draw was 'uniform', now 'spread'"):  # a uniform heal records no key
        plan_heal(imported, tmp_path / "b", budget=budget, settings=_settings(corpus, arm_draw="spread", checkpoints=6,
                                                                             keep_checkpoints=10), resume=True)
    with pytest.raises(NasError, match=r"budget\.tokens was 768, now 1024"):
        plan_heal(imported, tmp_path / "b", budget=HealBudget(tokens=8 * 4 * 32), settings=settings, resume=True)
    # no budget on resume: the recorded one
    plan = plan_heal(imported, tmp_path / "b", settings=settings, resume=True)
    assert plan.steps == 6
    resumed = run_heal(plan)
    assert resumed.resumed_from and resumed.resumed_from.endswith("step_00000004.pt")
    assert resumed.content_hash == full.content_hash
    a, b = load_supernet(full.out).model.state_dict(), load_supernet(resumed.out).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_heal_run_costs_its_steps_evaluations_checkpoints_and_start(corpus: Path) -> None:
    timing = HealTiming(step_s=2.5, eval_s=4.0, checkpoint_s=1.0, startup_s=3.0)
    settings = _settings(corpus, evals=10, checkpoints=10)
    # 12 steps: an evaluation and a checkpoint after every step (the last evaluation is the final
    # one), then the healed supernet's files (as long as a checkpoint)
    assert timing.run_s(12, settings) == 3 + 12 * 2.5 + 12 * 4.0 + 13 * 1.0
    # 20 steps: every second step, so 10 of each; more steps, fewer evaluations
    assert timing.run_s(20, settings) == 3 + 20 * 2.5 + 10 * 4.0 + 11 * 1.0
    # not monotone: 19 steps evaluate after every step (146.5 s), so 110 s buys 20 steps, not 19
    assert timing.run_s(19, settings) == 146.5 and timing.steps_within(110.0, settings) == 20
    assert timing.steps_within(100.0, settings) == 12  # 13 steps need 101.5 s, 20 need 104
    assert timing.steps_within(11.0, settings) == 0  # 3 + 2.5 + 4 + 2 * 1 = 11.5 s for one step


def test_time_budget_is_turned_into_steps_that_fit_it(tmp_path: Path, corpus: Path, imported: Path) -> None:
    """The whole heal fits the time: its timing run, steps, evaluations and checkpoints."""
    timing = HealTiming(step_s=2.5, eval_s=4.0, checkpoint_s=1.0, startup_s=3.0)
    settings = _settings(corpus, evals=10)
    plan = plan_heal(imported, tmp_path / "t", budget=HealBudget(seconds=110.0), settings=settings, measure=lambda cfg: timing)
    # evaluations get a tenth of the time: 11 s buys 2 of 4 s (one after step 17, the final one), not 10
    assert timing.evals_within(110.0, settings) == plan.record["evals"] == 2
    assert plan.steps == 34 and plan.record["timing"]["step_s"] == 2.5 and plan.record["budget"]["seconds"] == 110.0
    assert timing.run_s(34, dataclasses.replace(settings, evals=2)) == 3 + 34 * 2.5 + 2 * 4.0 + 13 * 1.0 <= 110.0
    assert plan.config.eval_every == 17 and plan.config.checkpoint_every == 3  # as run_s counted them
    # the real timing run: positive parts, nothing left behind, and a budget under one step refused
    measured = measure_heal_timing(plan.config.with_overrides(out=str(tmp_path / "probe")))
    assert min(measured.step_s, measured.eval_s) > 0 and measured.checkpoint_s >= 0 and measured.startup_s >= 0
    with pytest.raises(NasError, match=r"--time 1e-06 s is shorter than one heal step .* give at least --time \d+s"):
        plan_heal(imported, tmp_path / "t", budget=HealBudget(seconds=1e-6), settings=_settings(corpus))
    assert not list((tmp_path).glob(".heal-calibrate-*"))  # the timing runs leave nothing behind


def test_bad_inputs(tmp_path: Path, corpus: Path, imported: Path, scratch: Path) -> None:
    settings = _settings(corpus)
    budget = HealBudget(tokens=4 * 32)
    with pytest.raises(NasError, match="trained from scratch .* --teacher self"):
        plan_heal(scratch, tmp_path / "s", budget=budget, settings=settings)
    # explicitly: its own full model as the teacher
    own = plan_heal(scratch, tmp_path / "s", budget=budget, settings=settings, teacher="self")
    assert own.record["teacher"] == "self"
    bad = tmp_path / "space.yaml"
    bad.write_text("n_head_choices: [3]\n")
    with pytest.raises(NasError, match=r"--space .*space\.yaml does not fit the supernet .*n_head_choices \[3\]"):
        plan_heal(imported, tmp_path / "x", budget=budget, settings=settings, space=bad)
    with pytest.raises(NasError, match="less than one heal step"):
        plan_heal(imported, tmp_path / "x", budget=HealBudget(tokens=10), settings=settings)
    with pytest.raises(NasError, match="is the supernet being healed"):
        plan_heal(imported, imported, budget=budget, settings=settings)
    with pytest.raises(NasError, match="nothing to resume"):
        plan_heal(imported, tmp_path / "x", budget=budget, settings=settings, resume=True)


def test_heal_reads_jsonl_text_from_the_named_field(tmp_path: Path, corpus: Path, imported: Path) -> None:
    data = tmp_path / "passages.jsonl"
    data.write_text("".join(json.dumps({"id": i, "passage": f.read_text()}) + "\n" for i, f in enumerate(sorted(corpus.glob("*.txt")))))
    budget = HealBudget(tokens=4 * 32)
    plan = plan_heal(imported, tmp_path / "p", budget=budget, settings=_settings(data, text_field="passage"))
    assert plan.config.data.text_field == "passage" and plan.record["data"]["text_field"] == "passage"
    assert plan.record["settings"]["text_field"] == "passage"  # a resume with another field is refused
    assert "text_field" not in _settings(corpus).resumable()  # heals recorded before the field existed resume
    healed = run_heal(plan)
    assert load_supernet(healed.out).provenance["heal"]["data"]["text_field"] == "passage"
    with pytest.raises(NasError, match=r"passages\.jsonl:1 has no 'text' field; .* --text-field for nas heal"):
        heal(imported, tmp_path / "q", budget=budget, settings=_settings(data))


def test_subnet_space_holds_one_member(imported: Path) -> None:
    loaded = load_supernet(imported)
    sub = loaded.space.from_params({**loaded.space.to_params(loaded.space.smallest()), "layer_1.d_ff": 32})
    only = subnet_space(loaded, sub)
    assert only.size() == 1 and only.largest() == only.smallest() == sub
    wrong = sub.__class__(layers=(0, 1) if sub.layers != (0, 1) else (1, 2), n_head=sub.n_head, d_ff=sub.d_ff,
                          d_model=sub.d_model)
    with pytest.raises(NasError, match="highest-ranked layers"):
        subnet_space(loaded, wrong)


def test_export_heal_writes_before_and_after_into_the_card(tmp_path: Path, corpus: Path, imported: Path) -> None:
    import json

    from typer.testing import CliRunner

    import storage
    from evaluators.scorer import build_scorers
    from evaluators.types import Fidelity
    from nas.cli import app
    from nas.search.spec import parse_spec

    loaded = load_supernet(imported, dtype="fp32")
    text = sorted(corpus.glob("*.txt"))[0]
    spec = parse_spec({"name": "tiny-heal", "supernet": str(imported), "dtype": "fp32", "confirmation": None,
                       "tasks": [{"name": "heldout_loss", "n_examples": 8, "seq_len": 32, "source": str(text)}],
                       "objectives": ["heldout_loss", "params"], "budget": {"n_trials": 1}})
    (scorer,) = build_scorers(spec, loaded)
    subnet = loaded.space.smallest()
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    with storage.open_database(url) as db:
        sn = storage.upsert_supernet(db, content_hash=loaded.content_hash, name="tiny", path=str(imported),
                                     config=loaded.config.to_dict(), space=loaded.space.to_dict(), provenance={})
        study = storage.create_study(db, name="tiny-heal", optuna_study_name="tiny-heal", supernet_id=sn,
                                     spec={**spec.to_dict(), "supernet_hash": loaded.content_hash})
        sub = storage.get_or_create_subnet(db, supernet_id=sn, config_json=subnet.to_json(), config_hash=subnet.hash,
                                           n_layer=subnet.n_layer, params=loaded.model.num_params(subnet))
        metrics = scorer.evaluate(subnet, Fidelity())
        (s,) = metrics.scores
        storage.record_evaluation(db, storage.NewEvaluation(
            subnet_id=sub, task=s.task, metric=s.metric, value=s.value, stderr=s.stderr, n_examples=s.n_examples,
            fidelity=metrics.fidelity, harness_version=metrics.harness_version, task_hash=metrics.task_hashes[s.task],
            settings=scorer.settings[s.task], wall_s=metrics.wall_s))
        storage.record_trial(db, study_id=study, trial_number=0, subnet_id=sub, fidelity="full", feasible=True, state="COMPLETE")

    out = tmp_path / "export"
    res = CliRunner().invoke(app, ["export", "tiny-heal", "0", "--out", str(out), "--heal", "16k", "--heal-data", str(corpus),
                                   "--verify", "--storage", url])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "nas_export.json").read_text())
    heal_meta = meta["heal"]
    (change,) = heal_meta["scores"]
    assert change["task"] == "heldout_loss" and change["fidelity"] == "full" and change["n_examples"] == 8
    assert change["before"] == pytest.approx(s.value, rel=1e-6)  # the unhealed sub-network, as the study stored it
    assert change["after"] < change["before"] and change["diff"] == pytest.approx(change["after"] - change["before"])
    assert change["diff_stderr"] > 0 and heal_meta["parent_hash"] == loaded.content_hash and heal_meta["tokens"] == 15 * 1024  # whole steps of 4 x 256 within 16k
    assert [t["prompt"] for t in heal_meta["continuations"]] == list(heal_meta_prompts())
    assert all(isinstance(t["before"], str) and isinstance(t["after"], str) for t in heal_meta["continuations"])
    card = (out / "README.md").read_text()
    assert "## Healing" in card and f"| heldout_loss | loss | {change['before']:.4f} ± " in card
    assert f"{change['diff']:+.4f} ± " in card and "- prompt: `The capital of France is`" in card
    # the export holds the healed weights and --verify reproduced the healed score
    assert json.loads((out / "verify.json").read_text())["ok"]
    from nas.export import load_exported

    exported = load_exported(out).model.state_dict()
    unhealed = loaded.model.extract(subnet).state_dict()
    assert any(not torch.equal(exported[k], unhealed[k]) for k in unhealed)
    # a second export reuses the healed sub-network (no second heal)
    res = CliRunner().invoke(app, ["export", "tiny-heal", "0", "--out", str(tmp_path / "again"), "--heal", "16k",
                                   "--heal-data", str(corpus), "--storage", url])
    assert res.exit_code == 0 and "healed sub-network found" in res.output, res.output
    # other text to heal on is another heal, not the one found
    data = tmp_path / "passages.jsonl"
    data.write_text("".join(json.dumps({"passage": f.read_text()}) + "\n" for f in sorted(corpus.glob("*.txt"))))
    res = CliRunner().invoke(app, ["export", "tiny-heal", "0", "--out", str(tmp_path / "other"), "--heal", "4k",
                                   "--heal-data", str(data), "--heal-text-field", "passage", "--storage", url])
    assert res.exit_code == 0 and "healed sub-network found" not in res.output, res.output
    other = json.loads((tmp_path / "other" / "nas_export.json").read_text())["heal"]
    assert other["tokens"] == 3 * 1024 and other["data"]["text_field"] == "passage"


def heal_meta_prompts() -> tuple[str, ...]:
    from nas.export.heal import PROMPTS

    return PROMPTS


def test_report_compares_the_same_subnetworks_side_by_side() -> None:
    from reports.html import compare_table, render_report
    from tests._study_rows import view

    unhealed, healed = view("unhealed"), view("healed", shift=0.05)
    table = compare_table(unhealed, healed)
    # the six trials scored at the top fidelity in both, smallest first; trial 4 (low fidelity only) and 5 are not
    assert len(table["rows"]) == 6 and table["header"][3:6] == ["unhealed ± 1.96 se", "healed ± 1.96 se", "difference ± 1.96 se"]
    se = (0.02**2 + 0.01**2) ** 0.5 / 2  # the mean of two tasks' independent errors
    first = table["rows"][0]
    assert first[2:] == ["search", f"0.3000 ± {1.96 * se:.4f}", f"0.3500 ± {1.96 * se:.4f}",
                         f"+0.0500 ± {1.96 * se * 2 ** 0.5:.4f}", "yes"]
    same = compare_table(unhealed, view("again", shift=0.01))
    assert all(row[-1] == "" for row in same["rows"])  # +0.01 is inside the interval
    html = render_report(unhealed, [healed])
    assert "The same sub-networks in unhealed and healed (6 scored in both)" in html and "compare-table" in html


def test_demo_heal_heals_the_demo_supernet_once(tmp_path: Path) -> None:
    from nas.cli.demo import _heal_demo, _spec, _tiny_supernet

    supernet = tmp_path / "demo-quick-supernet"
    _tiny_supernet(supernet)
    healed = _heal_demo(supernet, "2k", quick=True, model="smollm2-135m")
    assert healed == tmp_path / "demo-quick-supernet-healed"
    loaded, parent = load_supernet(healed), load_supernet(supernet)
    assert loaded.provenance["heal"]["parent_hash"] == parent.content_hash and loaded.provenance["heal"]["tokens"] == 1024
    assert _heal_demo(supernet, "2k", quick=True, model="smollm2-135m") == healed  # found, not healed again
    assert load_supernet(healed).content_hash == loaded.content_hash
    spec = _spec(quick=True, supernet=healed, storage="sqlite://", trials=2, low=5, high=10, healed=True)
    assert spec["name"] == "demo-quick-healed" and spec["supernet"] == str(healed.resolve())


def test_cli_heals_and_refuses_bad_input_with_one_line(tmp_path: Path, corpus: Path, imported: Path, scratch: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    from nas.cli import main

    def nas(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out = capsys.readouterr()
        return int(exc.value.code or 0), " ".join(out.out.split()), out.err  # rich wraps long lines

    common = ["--data", str(corpus), "--batch-size", "4", "--seq-len", "32", "--lr", "3e-3", "--quiet"]
    code, out, _ = nas("heal", str(imported), "--out", str(tmp_path / "h"), "--tokens", "512", *common)
    assert code == 0 and "4 steps of 4 x 32 tokens = 512 tokens" in out and "healed supernet" in out
    assert load_supernet(tmp_path / "h").provenance["heal"]["settings"]["lr"] == 3e-3
    code, out, _ = nas("heal", str(imported), "--out", str(tmp_path / "t"), "--time", "20s", *common)
    assert code == 0 and "s an evaluation)" in out and "healed supernet" in out and "s of steps)" in out
    assert load_supernet(tmp_path / "t").provenance["heal"]["timing"]["step_s"] > 0
    for args, message in (
        (["--tokens", "1k", "--time", "5m"], "give --tokens or --time, not both"),
        (["--time", "soon"], "--time 'soon' is not a duration"),
        (["--tokens", "512", "--resume", "--fresh"], "--fresh starts over; it cannot be combined with --resume"),
    ):
        code, _, err = nas("heal", str(imported), "--out", str(tmp_path / "bad"), *args, *common)
        assert code == 2 and err.startswith(f"error: {message}") and "Traceback" not in err, err
    code, _, err = nas("heal", str(scratch), "--out", str(tmp_path / "bad"), "--tokens", "512", *common)
    assert code == 2 and "trained from scratch" in err and err.count("\n") == 1
