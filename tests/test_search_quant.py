"""Quantisation as a search axis: spec ``quant_choices``, the space check, and a tiny study
whose candidates are (sub-network, weight format) pairs scored on fake-quantised weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import storage
from evaluators.cost import quant_weight_bytes
from evaluators.heldout import HeldOutLoss
from evaluators.types import Fidelity
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.directory import load_supernet, save_supernet
from nas.model.fakequant import fake_quantized
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet
from nas.pareto import as_minimization, non_dominated_mask
from nas.search.quant import check_quant_space
from nas.search.study import open_search
from tests._search import make_spec

CONFIG = SupernetConfig(vocab_size=64, d_model=64, n_layer=3, n_head=4, n_kv_head=2, d_ff=128, head_dim=16)
SPACE = {"n_layer_choices": [2, 3], "n_head_choices": [2, 4], "d_ff_choices": [32, 64, 128]}


def test_spec_quant_choices_are_checked(tmp_path: Path) -> None:
    spec = make_spec(tmp_path / "sn", "sqlite://", quant_choices=["BF16", "q8_0", "q4_0", "q8_0"])
    assert spec.quant_choices == ("bf16", "q8_0", "q4_0") and "quant_choices" in spec.identity()
    with pytest.raises(NasError, match=r"quant_choices.*unknown quantisation 'int3'; valid ones: f32, bf16, q8_0"):
        make_spec(tmp_path / "sn", "sqlite://", quant_choices=["int3"])
    assert make_spec(tmp_path / "sn", "sqlite://").quant_choices == ()
    space = SearchSpace.from_dict({**SPACE, "d_ff_choices": [48, 128]}, CONFIG)
    with pytest.raises(NasError, match=r"q4_0 stores weight rows in blocks of 32.*layer 0 d_ff_choices \[48\] \(e.g. \[32\] instead\)"):
        check_quant_space(["bf16", "q4_0"], space)
    check_quant_space(["bf16"], space)  # no blocks: any width
    check_quant_space(["q4_0", "q8_0"], SearchSpace.from_dict(SPACE, CONFIG))
    sub = SubnetConfig(layers=(0, 1), n_head=(2, 4), d_ff=(32, 128), d_model=64)
    assert sub.hash != SubnetConfig(**{**sub.__dict__, "quant": "q4_0"}).hash  # a format is part of the identity
    assert SubnetConfig.from_json(sub.to_json()).quant == "" and "quant" not in sub.to_json()


def test_a_study_over_subnetworks_and_weight_formats(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Supernet(CONFIG)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm"):
                p.normal_(0.0, 0.1)
    save_supernet(model, tmp_path / "sn")
    loaded = load_supernet(tmp_path / "sn", dtype="fp32")
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    spec = make_spec(tmp_path / "sn", url, name="deploy", space=SPACE, quant_choices=["bf16", "q8_0", "q4_0"],
                     objectives=["heldout_loss", "weight_memory_bytes"], budget={"n_trials": 14}, seed=3)
    search = open_search(spec, loaded=loaded)
    summary = search.optimize()
    assert summary.complete == 14
    heldout = {"n_examples": 16, "seq_len": 16, "batch_size": 16, "seed": 3}
    base = HeldOutLoss(loaded.model, **heldout)
    by_quant = {q: HeldOutLoss(fake_quantized(loaded.model, q), **heldout) for q in spec.quant_choices}
    with storage.open_database(url, create=False) as db:
        rows = storage.list_trials(db, "deploy")
        points = []
        for row in rows:
            sub_row = storage.get_subnet(db, row.subnet_id)
            subnet = SubnetConfig.from_json(sub_row.config_json)
            assert subnet.quant in spec.quant_choices
            (loss,) = [e.value for e in storage.list_evaluations(db, row.subnet_id) if e.metric == "loss"]
            costs = {c.metric: c.value for c in storage.find_costs(db, supernet_hash=loaded.content_hash,
                                                                   config_hash=subnet.hash, method="analytic")}
            # what was scored: the sub-network on its format's quantise-dequantised weights
            assert loss == pytest.approx(by_quant[subnet.quant].evaluate(subnet, Fidelity()).scores[0].value, rel=1e-6)
            if subnet.quant == "q4_0":
                assert abs(loss - base.evaluate(subnet, Fidelity()).scores[0].value) > 1e-4  # not the unquantised weights
            assert costs["weight_memory_bytes"] == quant_weight_bytes(CONFIG, subnet, subnet.quant)
            points.append((subnet, [loss, costs["weight_memory_bytes"]]))
    quants = {s.quant for s, _ in points}
    assert len(quants) >= 2
    # the front over (loss, weight bytes) holds quantised members: q4_0 buys memory a smaller bf16 model cannot
    mask = non_dominated_mask(as_minimization([v for _, v in points], ["minimize", "minimize"]))
    front = [s for (s, _), keep in zip(points, mask) if keep]
    assert any(s.quant in ("q8_0", "q4_0") for s in front)
    smallest = min(points, key=lambda p: p[1][1])[0]
    assert smallest.quant == "q4_0"
    # pick answers "the best model under B bytes" across formats
    from nas.pick import Bound, pick
    from reports.data import load_study

    budget = sorted(v[1] for _, v in points)[len(points) // 2]
    with storage.open_database(url, create=False) as db:
        frame = load_study(db, "deploy").frame
    best = pick(frame, metric="heldout_loss/loss", direction="minimize", bounds=[Bound("weight_memory_bytes", max=budget)], top=1)
    within = [(v[0], s) for s, v in points if v[1] <= budget]
    assert best.candidates[0].score == pytest.approx(min(within, key=lambda t: t[0])[0])
    assert best.candidates[0].summary.endswith(tuple(spec.quant_choices))
