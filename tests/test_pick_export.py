"""Pick (ranking under constraints) and export (round trip, transformers loading, verify)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import storage
from nas.cli import app
from nas.errors import NasError
from nas.export import ExportSource, ScoreRecord, export_source, export_subnet, load_exported, verify_export
from nas.metrics import ACCURACY
from nas.model.config import SupernetConfig
from nas.model.directory import save_supernet
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet
from nas.pick import Bound, describe_empty, pick
from nas.search.spec import parse_spec
from tests._study_rows import view

# ------------------------------------------------------------------------------ pick


def _trials(result) -> list[int]:  # noqa: ANN001
    return [c.trial for c in result.candidates]


def test_bound_parsing() -> None:
    assert Bound.parse("params=50e6") == Bound("params", max=5e7)
    assert Bound.parse("latency_ms<=20") == Bound("latency_ms", max=20.0)
    assert Bound.parse("hellaswag/acc_norm=0.3", "min") == Bound("hellaswag/acc_norm", min=0.3)
    for bad in ("params", "params=lots", "=5", "params=inf"):
        with pytest.raises(NasError, match="params=50e6|finite"):
            Bound.parse(bad)
    with pytest.raises(NasError, match="above max"):
        Bound("params", max=1, min=2)


def test_pick_ranks_efficient_feasible_candidates_within_bounds() -> None:
    frame = view().frame
    r = pick(frame, metric=ACCURACY, bounds=[Bound("params", max=350)])
    # 4 (acc .70, 150 params) is only low-fidelity, 5 is infeasible, 2 (.35, 300) is beaten by 1 (.40, 200)
    assert _trials(r) == [7, 1, 0]
    assert [c.score for c in r.candidates] == pytest.approx([0.5, 0.4, 0.3])
    assert r.n_trials == 8 and r.n_eligible == 6 and r.n_within_bounds == 4 and r.n_efficient == 3
    assert all(c.values["params"] <= 350 for c in r.candidates)
    assert r.candidates[0].stderr == pytest.approx((0.01**2 + 0.02**2) ** 0.5 / 2)
    assert _trials(pick(frame, metric=ACCURACY, bounds=[Bound("params", max=350)], top=2)) == [7, 1]
    # two bounds at once (tightest wins when a column is bounded twice)
    r2 = pick(frame, metric=ACCURACY, bounds=[Bound("params", max=450), Bound("params", max=350), Bound("prefill_latency_ms", max=2.0)])
    assert _trials(r2) == [1, 0]


def test_a_subnetwork_sampled_twice_is_one_front_point_and_one_pick() -> None:
    from reports.data import build_view
    from tests._study_rows import SPEC

    base = view().frame
    again = base[base["trial"] == 7].assign(trial=8)  # the sampler proposed trial 7's sub-network again
    frame = pd.concat([base, again], ignore_index=True)[base.columns]
    v = build_view(frame, name="dup", status="finished", supernet_hash="abc", spec=SPEC)
    assert set(v.front["trial"]) == {0, 1, 3, 7}  # trial 8 is the same point: listed once
    assert _trials(pick(v.frame, metric=ACCURACY, bounds=[Bound("params", max=350)])) == [7, 1, 0]


def test_pick_trades_off_study_costs_and_ranks_by_any_metric() -> None:
    frame = view().frame
    # no budget: the study's front (accuracy vs params), best first; 6 (.60, 500) is beaten by 3 (.60, 400)
    assert _trials(pick(frame, metric=ACCURACY, tradeoffs=[("params", "minimize")], top=None)) == [3, 7, 1, 0]
    # only the metric: the best (ties kept, by trial number)
    assert _trials(pick(frame, metric=ACCURACY)) == [3, 6]
    # minimised metric: cheapest first
    assert _trials(pick(frame, metric="params", direction="minimize", bounds=[Bound(ACCURACY, min=0.45)])) == [7]
    with pytest.raises(NasError, match="no column 'nope'"):
        pick(frame, metric="nope")
    with pytest.raises(NasError, match="--top"):
        pick(frame, metric=ACCURACY, top=0)
    empty = pick(frame, metric=ACCURACY, bounds=[Bound("params", max=50)])
    assert empty.candidates == () and "loosen" in describe_empty(empty)


# ---------------------------------------------------------------------------- export
CONFIG = SupernetConfig(vocab_size=120, d_model=32, n_layer=4, n_head=4, n_kv_head=2, d_ff=64)


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Supernet, str]:
    torch.manual_seed(0)
    model = Supernet(CONFIG).eval()
    path = tmp_path_factory.mktemp("supernet") / "sn"
    digest = save_supernet(model, path)
    return path, model, digest


def _source(path: Path, digest: str, subnet: SubnetConfig, **kw) -> ExportSource:  # noqa: ANN003
    scores = (ScoreRecord("piqa", "acc", 0.61, 0.012, 500, "full", "0.4.9", "abc123"),)
    return ExportSource(study="toy", trial=7, subnet=subnet, supernet_hash=digest, supernet_path=str(path),
                        fidelity="full", spec={}, scores=scores, **kw)


HOMOGENEOUS = SubnetConfig(layers=(0, 1, 3), n_head=(2, 2, 2), d_ff=(48, 48, 48), d_model=32)
PER_LAYER = SubnetConfig(layers=(0, 2, 3), n_head=(4, 2, 4), d_ff=(64, 16, 32), d_model=32)


@pytest.mark.parametrize("subnet,fmt", [(HOMOGENEOUS, "hf-llama"), (PER_LAYER, "nas-dense")])
def test_export_round_trip_parity(supernet_dir, tmp_path: Path, subnet: SubnetConfig, fmt: str) -> None:  # noqa: ANN001
    path, model, digest = supernet_dir
    out = tmp_path / "export"
    confirmed = (ScoreRecord("piqa", "acc", 0.58, 0.02, 200, "call-h200-s0", "0.4.9", "abc123"),) if fmt == "nas-dense" else ()
    result = export_subnet(_source(path, digest, subnet, confirmed=confirmed), out)
    assert result.format == fmt
    assert result.params == model.num_params(subnet)
    assert {"model.safetensors", "config.json", "README.md", "nas_export.json"} <= set(result.files)
    loaded = load_exported(out)
    tokens = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(tokens, subnet)
    torch.testing.assert_close(loaded(tokens), expected, rtol=0, atol=0)
    # greedy generation with the KV cache = argmax of repeated full forwards
    new = loaded.generate(tokens[0, :4].tolist(), max_new_tokens=6, stop_at_eos=False)
    seq = tokens[:1, :4]
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, model(seq, subnet)[:, -1:].argmax(-1)], dim=1)
    assert new == seq[0, 4:].tolist()
    card = (out / "README.md").read_text()
    assert subnet.summary() in card and digest in card and "0.4.9" in card and "| 0.6100 | 0.0235 | 500 | full |" in card
    if confirmed:  # the unbiased estimate first, the search's (optimistic) score beside it
        assert "| piqa | acc | 0.5800 | 0.0392 | 0.6100 | 200 / 500 |" in card
    else:
        assert "not confirmed: run `nas confirm`" in card
    assert json.loads((out / "nas_export.json").read_text())["subnet"] == subnet.to_dict()
    with pytest.raises(NasError, match="not empty"):
        export_subnet(_source(path, digest, subnet), out)


def test_export_of_an_moe_subnet_runs_with_our_loader(tmp_path: Path) -> None:
    torch.manual_seed(2)
    cfg = SupernetConfig(vocab_size=64, d_model=16, n_layer=2, n_head=2, n_kv_head=1, d_ff=16, n_expert=4, top_k=2)
    model = Supernet(cfg).eval()
    digest = save_supernet(model, tmp_path / "moe")
    subnet = SubnetConfig(layers=(0, 1), n_head=(2, 2), d_ff=(16, 8), d_model=16, n_expert=(4, 2), top_k=(2, 1))
    result = export_subnet(_source(tmp_path / "moe", digest, subnet), tmp_path / "out")
    assert result.format == "nas-dense"
    tokens = torch.randint(0, 64, (1, 5))
    torch.testing.assert_close(load_exported(tmp_path / "out")(tokens), model(tokens, subnet).detach(), rtol=0, atol=0)


def test_export_refuses_a_different_supernet(supernet_dir, tmp_path: Path) -> None:  # noqa: ANN001
    path, _model, _digest = supernet_dir
    with pytest.raises(NasError, match="content hash"):
        export_subnet(_source(path, "0123456789abcdef", HOMOGENEOUS), tmp_path / "x")
    with pytest.raises(NasError, match="not an export|nas_export.json"):
        load_exported(path)


def test_transformers_loads_a_homogeneous_export(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    cfg = CONFIG.replace(qkv_bias=True, tie_embeddings=True)
    model = Supernet(cfg).eval()
    with torch.no_grad():  # non-zero biases, so the mapping of q/k/v biases is exercised
        for block in model.layers:
            for proj in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj):
                proj.bias.normal_(0, 0.1)
    digest = save_supernet(model, tmp_path / "sn")
    result = export_subnet(_source(tmp_path / "sn", digest, HOMOGENEOUS), tmp_path / "hf")
    assert result.format == "hf-llama"
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert type(hf).__name__ == "LlamaForCausalLM" and hf.config.num_hidden_layers == 3
    tokens = torch.randint(0, cfg.vocab_size, (2, 11))
    with torch.no_grad():
        ours = model(tokens, HOMOGENEOUS)
        theirs = hf(tokens).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)


# ------------------------------------------------------------------- study + verify
def _record_heldout_study(db: storage.Database, path: Path, model: Supernet, digest: str, subnets: list[SubnetConfig]) -> None:
    """A study whose stored scores come from the search's own scorer on the supernet views."""
    from evaluators.scorer import build_scorers
    from evaluators.types import Fidelity
    from nas.model.directory import load_supernet

    spec = parse_spec({"name": "heldout", "supernet": str(path), "tasks": [{"name": "heldout_loss", "n_examples": 8, "seq_len": 12}],
                       "objectives": ["heldout_loss", "params"], "budget": {"n_trials": len(subnets)}, "dtype": "fp32",
                       "confirmation": None})
    loaded = load_supernet(path, dtype="fp32")
    (scorer,) = build_scorers(spec, loaded)
    sn = storage.upsert_supernet(db, content_hash=digest, name="tiny", path=str(path), config=CONFIG.to_dict(),
                                 space=SearchSpace.default(CONFIG).to_dict(), provenance={})
    study = storage.create_study(db, name="heldout", optuna_study_name="heldout", spec={**spec.to_dict(), "supernet_hash": digest}, supernet_id=sn)
    for number, subnet in enumerate(subnets):
        sub = storage.get_or_create_subnet(db, supernet_id=sn, config_json=subnet.to_json(), config_hash=subnet.hash,
                                           n_layer=subnet.n_layer, params=model.num_params(subnet))
        metrics = scorer.evaluate(subnet, Fidelity())
        for s in metrics.scores:
            storage.record_evaluation(db, storage.NewEvaluation(subnet_id=sub, task=s.task, metric=s.metric, value=s.value, stderr=s.stderr,
                                      n_examples=s.n_examples, fidelity=metrics.fidelity, harness_version=metrics.harness_version,
                                      task_hash=metrics.task_hashes[s.task], settings=scorer.settings[s.task], wall_s=metrics.wall_s))
        storage.record_cost(db, subnet_id=sub, device="cpu", metric="params", value=float(model.num_params(subnet)), method="analytic")
        storage.record_trial(db, study_id=study, trial_number=number, subnet_id=sub, fidelity="full", feasible=True, state="COMPLETE")


def test_export_verify_reproduces_stored_scores(supernet_dir, tmp_path: Path) -> None:  # noqa: ANN001
    path, model, digest = supernet_dir
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    with storage.open_database(url) as db:
        _record_heldout_study(db, path, model, digest, [HOMOGENEOUS, PER_LAYER])
        source = export_source(db, "heldout", 1)
    assert source.subnet == PER_LAYER and source.fidelity == "full" and source.costs[0].method == "analytic"
    export_subnet(source, tmp_path / "exp")
    report = verify_export(tmp_path / "exp", source)
    assert report.ok and report.dtype == "fp32" and report.rows[0].task == "heldout_loss"
    assert report.rows[0].rel_diff <= 1e-6
    # a stored score the export does not reproduce fails the check
    tampered = ExportSource(**{**source.__dict__, "scores": (ScoreRecord(**{**source.scores[0].__dict__, "value": source.scores[0].value * 1.001}),)})
    assert not verify_export(tmp_path / "exp", tampered).ok

    # the CLI: pick --json, then export --pick --verify
    runner = CliRunner()
    res = runner.invoke(app, ["pick", "heldout", "--metric", "heldout_loss", "--json", "--storage", url])
    assert res.exit_code == 0, res.output
    picked = json.loads(res.output)
    assert picked["metric"] == "heldout_loss/loss" and picked["direction"] == "minimize"
    best = picked["candidates"][0]["trial"]
    res = runner.invoke(app, ["export", "heldout", "--pick", "--metric", "heldout_loss", "--out", str(tmp_path / "cli"),
                              "--verify", "--storage", url])
    assert res.exit_code == 0, res.output
    assert "parity" in res.output and json.loads((tmp_path / "cli" / "verify.json").read_text())["ok"]
    assert json.loads((tmp_path / "cli" / "nas_export.json").read_text())["lineage"]["trial"] == best
    res = runner.invoke(app, ["export", "heldout", "9", "--out", str(tmp_path / "none"), "--storage", url])
    assert res.exit_code != 0
