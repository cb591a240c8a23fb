"""The ERNIE 5 elastic schedule: per-axis frequencies, restricted-expert steps equal scoring the
sub-network, and the schedules a space cannot run refused before any step."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.directory import load_supernet
from nas.model.space import SearchSpace
from nas.model.supernet import Supernet
from nas.training import Arm, ErnieConfig, ErnieSampler, SandwichLoss, ernie_sampler, parse_train_config, sandwich_step, train
from nas.training.trainer import train_flops_per_token

from _train_fixtures import tiny_config, write_corpus

MOE = SupernetConfig(vocab_size=64, d_model=32, n_layer=4, n_head=4, n_kv_head=2, d_ff=16, n_expert=8, top_k=4)
SPACE = {"n_layer_choices": [2, 3, 4], "n_head_choices": [4], "d_ff_choices": [16],
         "n_expert_choices": [4, 6, 8], "top_k_choices": [1, 2, 4], "tied": True}
#: a 6-step ERNIE run of a 2-layer MoE, every axis full on half the steps
ERNIE_RUN = dict(
    model={"d_model": 32, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_ff": 16, "n_expert": 4, "top_k": 2},
    space={"n_layer_choices": [1, 2], "n_head_choices": [4], "d_ff_choices": [16],
           "n_expert_choices": [2, 4], "top_k_choices": [1, 2], "tied": True},
    steps=6, schedule="ernie", ernie={"n_layer": 0.5, "n_expert": 0.5, "top_k": 0.5},
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _space(cfg: SupernetConfig = MOE, **changes) -> SearchSpace:
    return SearchSpace.from_dict({**SPACE, **changes}, cfg)


def test_each_axis_takes_its_full_value_with_the_configured_frequency() -> None:
    space = _space()
    sampler = ernie_sampler(space, ErnieConfig(top_k=0.5), rng=random.Random(0))  # depth, experts: ERNIE's defaults
    assert sampler.probabilities == {"n_layer": 0.75, "n_expert": 0.8, "top_k": 0.5}
    n = 4000
    draws = [sampler.draw() for _ in range(n)]
    full = {"n_layer": 4, "n_expert": 8, "top_k": 4}
    for axis, p in sampler.probabilities.items():
        hits = sum(d[axis] == full[axis] for d in draws)
        assert abs(hits / n - p) <= 4 * math.sqrt(p * (1 - p) / n), (axis, hits / n, p)  # binomial, 4 sigma
        reduced = Counter(d[axis] for d in draws if d[axis] != full[axis])
        values = {"n_layer": space.n_layer_choices, "n_expert": space.layers[0].n_expert, "top_k": space.layers[0].top_k}[axis]
        assert set(reduced) == set(values[:-1])  # otherwise a smaller choice, each about equally often
        m = sum(reduced.values())
        for count in reduced.values():
            share = 1 / len(reduced)
            assert abs(count / m - share) <= 4 * math.sqrt(share * (1 - share) / m)
    # independent axes: all three full on about 0.75 * 0.8 * 0.5 of the steps
    joint = sum(all(d[a] == full[a] for a in full) for d in draws) / n
    assert abs(joint - 0.3) <= 4 * math.sqrt(0.3 * 0.7 / n)
    # the arm is that sub-network, every other dim at its largest; the same seed gives the same arms
    arms = [ernie_sampler(space, ErnieConfig(), rng=random.Random(3)).arms(s) for s in range(2)]
    again = ernie_sampler(space, ErnieConfig(), rng=random.Random(3))
    assert [again.arms(s) for s in range(2)] == arms
    sub = sampler.subnet({"n_layer": 3, "n_expert": 4, "top_k": 2})
    assert sub.n_layer == 3 and set(sub.n_expert) == {4} and set(sub.top_k) == {2} and set(sub.d_ff) == {16}
    assert ErnieSampler(space, {"n_layer": 1.0, "n_expert": 1.0, "top_k": 1.0}, rng=random.Random(0)).arms(0) == [
        Arm("largest", space.largest())
    ]


def test_a_restricted_expert_step_routes_only_to_its_experts_and_its_loss_is_the_subnetworks_score() -> None:
    space = _space()
    sampler = ernie_sampler(space, ErnieConfig(), rng=random.Random(0))
    sub = sampler.subnet({"n_layer": 4, "n_expert": 4, "top_k": 2})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Supernet(MOE)
    seq = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(1))
    x, y = seq[:, :-1], seq[:, 1:]
    routed: list[torch.Tensor] = []
    for layer in model.layers:
        route = layer.ffn.route

        def spy(tokens, n_expert, top_k, _route=route):
            probs, weights, index = _route(tokens, n_expert, top_k)
            routed.append(index)
            assert probs.shape[-1] == n_expert  # the softmax runs over the kept experts only
            return probs, weights, index

        layer.ffn.route = spy
    stats = sandwich_step(model, x, y, [Arm("reduced", sub)], SandwichLoss(aux_loss_weight=0.01))["reduced"]
    assert routed and all(int(i.max()) < 4 for i in routed) and len({int(v) for i in routed for v in i.unique()}) == 4
    for layer in model.layers:
        ffn = layer.ffn
        for w in (ffn.gate, ffn.up, ffn.down, ffn.router.weight):
            assert torch.count_nonzero(w.grad[4:]) == 0 and torch.count_nonzero(w.grad[:4]) > 0
        del ffn.route  # back to the class's method
    # its loss is exactly what scoring that sub-network gives: CE of the view, plus its aux over 4 experts
    with torch.no_grad():
        out = model.run(x, sub, return_aux=True)
        ce = F.cross_entropy(out.logits.reshape(-1, 64), y.reshape(-1))
    assert stats.ce == pytest.approx(float(ce), rel=1e-6)
    assert stats.aux == pytest.approx(float(out.aux_loss), rel=1e-6)
    assert stats.loss == pytest.approx(float(ce) + 0.01 * float(out.aux_loss), rel=1e-6)
    extracted = model.extract(sub)  # an independent 4-expert model scores the same
    with torch.no_grad():
        ce_extracted = F.cross_entropy(extracted(x).reshape(-1, 64), y.reshape(-1))
    assert float(ce_extracted) == pytest.approx(float(ce), rel=1e-5)


def test_schedules_a_space_cannot_run_are_refused_with_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (1.5, -0.1):
        with pytest.raises(NasError, match=r"ernie\.n_expert: .*probability of the full value must be within \[0, 1\]"):
            parse_train_config({**tiny_config(tmp_path, tmp_path).model_dump(mode="json"),
                                "schedule": "ernie", "ernie": {"n_expert": bad}})
    with pytest.raises(NasError, match=r"ernie\.distill belongs to the ernie schedule.*use schedule: ernie"):
        parse_train_config({**tiny_config(tmp_path, tmp_path).model_dump(mode="json"), "ernie": {"distill": True}})
    with pytest.raises(NasError, match=r"ernie\.train_full belongs to the ernie schedule.*use schedule: ernie"):
        parse_train_config({**tiny_config(tmp_path, tmp_path).model_dump(mode="json"), "ernie": {"train_full": True}})
    with pytest.raises(NasError, match="not elastic in n_layer"):
        ernie_sampler(_space(n_layer_choices=[4]), ErnieConfig(n_layer=0.75), rng=random.Random(0))
    dense = SupernetConfig(vocab_size=64, d_model=32, n_layer=3, n_head=4, n_kv_head=2, d_ff=64)
    with pytest.raises(NasError, match=r"ernie\.n_expert: .*not elastic in n_expert .*dense supernet"):
        ernie_sampler(SearchSpace.default(dense), ErnieConfig(n_expert=0.8), rng=random.Random(0))
    with pytest.raises(NasError, match="elastic in n_layer, n_expert or top_k"):
        ernie_sampler(SearchSpace.from_dict({"n_layer_choices": [3]}, dense), ErnieConfig(), rng=random.Random(0))
    with pytest.raises(NasError, match=r"top_k_choices \[1, 2, 6\] go above n_expert_choices \[4, 6, 8\]"):
        ernie_sampler(_space(top_k_choices=[1, 2, 6]), ErnieConfig(), rng=random.Random(0))
    # and in a run: refused before any training step (no step logged, nothing saved)
    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path / "work"))
    corpus = write_corpus(tmp_path / "corpus", n_files=1, sentences=100)
    cfg = tiny_config(tmp_path, corpus, schedule="ernie", ernie={"n_expert": 0.8})
    with pytest.raises(NasError, match="not elastic in n_expert"):
        train(cfg)
    log = Path(cfg.out) / "train" / "log.jsonl"
    assert not log.exists() or all(json.loads(line)["event"] != "step" for line in log.read_text().splitlines())
    assert not (Path(cfg.out) / "config.json").exists()


def test_an_ernie_run_trains_one_subnetwork_per_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path / "work"))
    corpus = write_corpus(tmp_path / "corpus", n_files=1, sentences=200)
    cfg = tiny_config(tmp_path, corpus, **ERNIE_RUN)
    result = train(cfg)
    events = [json.loads(line) for line in (Path(cfg.out) / "train" / "log.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 6 and all(len(e["arms"]) == 1 and set(e["arms"]) <= {"largest", "reduced"} for e in steps)
    loaded = load_supernet(cfg.out)
    replay = ernie_sampler(loaded.space, cfg.ernie, rng=random.Random(cfg.seed))  # the run's seed, the run's arms
    assert [next(iter(e["arms"])) for e in steps] == [replay.arms(s)[0].name for s in range(6)]
    assert all(e["arms"][name]["aux"] > 0 for e in steps for name in e["arms"])
    assert result.steps == 6 and set(result.val_loss) == {"largest", "smallest"}


def test_a_distilled_reduced_step_learns_the_full_subnetworks_distribution_and_a_full_step_the_data() -> None:
    space = _space()
    sampler = ernie_sampler(space, ErnieConfig(distill=True), rng=random.Random(0))
    sub, largest = sampler.subnet({"n_layer": 3, "n_expert": 4, "top_k": 2}), space.largest()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Supernet(MOE)
        with torch.no_grad():  # sharper distributions than at init, so that the sub-network's differ clearly
            for p in model.parameters():
                p.mul_(4.0)
    seq = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(1))
    x, y = seq[:, :-1], seq[:, 1:]
    mix = SandwichLoss(distill_weight=0.7, ce_weight=0.3, aux_loss_weight=0.0)
    stats = sandwich_step(model, x, y, [Arm("reduced", sub)], mix, teacher_subnet=largest)["reduced"]
    with torch.no_grad():  # the teacher: the full sub-network of the same weights, on the same batch
        p_full = F.softmax(model(x, largest).reshape(-1, 64), dim=-1)
        logp_sub = F.log_softmax(model(x, sub).reshape(-1, 64), dim=-1)
        kl = float((p_full * (p_full.log() - logp_sub)).sum(-1).mean())
        ce = float(F.nll_loss(logp_sub, y.reshape(-1)))
    assert kl > 0.05  # the two differ, so the test tells a KL term from none
    assert stats.kd == pytest.approx(kl, rel=1e-4) and stats.ce == pytest.approx(ce, rel=1e-5)
    assert stats.loss == pytest.approx(0.7 * kl + 0.3 * ce, rel=1e-4)
    # the teacher's pass leaves no gradient: the layer the reduced sub-network drops has none
    dropped = sorted(set(range(4)) - set(sub.layers))
    assert dropped and all(p.grad is None for i in dropped for p in model.layers[i].parameters())
    # a full step has no teacher: it learns the data, as without distillation
    model.zero_grad(set_to_none=True)
    full = sandwich_step(model, x, y, [Arm("largest", largest)], mix, teacher_subnet=largest)["largest"]
    assert full.kd is None
    with torch.no_grad():
        assert full.ce == pytest.approx(float(F.cross_entropy(model(x, largest).reshape(-1, 64), y.reshape(-1))), rel=1e-5)


def test_a_distilled_ernie_run_counts_the_teachers_forward_in_its_flops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path / "work"))
    corpus = write_corpus(tmp_path / "corpus", n_files=1, sentences=200)
    settings = ERNIE_RUN
    plain = train(tiny_config(tmp_path / "plain", corpus, **settings))
    distilled_cfg = tiny_config(tmp_path / "distilled", corpus, **{**settings, "ernie": {**settings["ernie"], "distill": True}},
                                sandwich={"distill_weight": 1.0, "ce_weight": 0.0})
    distilled = train(distilled_cfg)
    events = [json.loads(line) for line in (Path(distilled_cfg.out) / "train" / "log.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    reduced = [e["arms"]["reduced"] for e in steps if "reduced" in e["arms"]]
    assert reduced and all(arm.get("kd", -1.0) >= 0 for arm in reduced)  # reduced steps distil (kd logged)
    assert all("kd" not in e["arms"]["largest"] for e in steps if "largest" in e["arms"])  # full steps learn the data
    # same seed, same arms: the distilled run costs the plain one plus one full forward (a third of a
    # full training step) per reduced step
    loaded = load_supernet(distilled_cfg.out)
    replay = ernie_sampler(loaded.space, distilled_cfg.ernie, rng=random.Random(distilled_cfg.seed))
    n_reduced = sum(replay.arms(s)[0].name == "reduced" for s in range(6))
    assert n_reduced == len(reduced) > 0
    full_forward = train_flops_per_token(loaded.model.config, loaded.space.largest(), distilled_cfg.seq_len) / 3.0
    extra = distilled.train_flops - plain.train_flops
    assert extra == pytest.approx(n_reduced * distilled_cfg.tokens_per_step * full_forward, rel=1e-9)


def test_train_full_adds_the_full_subnetwork_to_every_reduced_draw_and_nothing_else() -> None:
    space = _space()
    plain = ernie_sampler(space, ErnieConfig(), rng=random.Random(5))
    with_full = ernie_sampler(space, ErnieConfig(train_full=True), rng=random.Random(5))
    largest = space.largest()
    seen = Counter()
    for step in range(200):  # the same draws: each step is the plain run's arm, after the full one when reduced
        one, both = plain.arms(step), with_full.arms(step)
        seen[one[0].name] += 1
        assert both == (one if one[0].subnet == largest else [Arm("largest", largest), *one])
    assert seen["largest"] > 0 and seen["reduced"] > 0


@pytest.mark.parametrize("distill", [False, True])
def test_a_train_full_run_trains_the_full_subnetwork_every_step_and_counts_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, distill: bool) -> None:
    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path / "work"))
    corpus = write_corpus(tmp_path / "corpus", n_files=1, sentences=200)
    plain = train(tiny_config(tmp_path / "plain", corpus, **ERNIE_RUN))
    mix = {"distill_weight": 0.7, "ce_weight": 0.3, "aux_loss_weight": 0.01}
    cfg = tiny_config(tmp_path / "full", corpus, **{**ERNIE_RUN, "ernie": {**ERNIE_RUN["ernie"], "train_full": True,
                                                                           "distill": distill}}, sandwich=mix)
    result = train(cfg)
    steps = [e for e in (json.loads(line) for line in (Path(cfg.out) / "train" / "log.jsonl").read_text().splitlines())
             if e["event"] == "step"]
    assert all("largest" in e["arms"] and "kd" not in e["arms"]["largest"] for e in steps)  # the full arm learns the data
    reduced = [e["arms"]["reduced"] for e in steps if "reduced" in e["arms"]]
    loaded = load_supernet(cfg.out)
    replay = ernie_sampler(loaded.space, cfg.ernie, rng=random.Random(cfg.seed))
    assert [sorted(e["arms"]) for e in steps] == [sorted(a.name for a in replay.arms(s)) for s in range(6)]
    assert reduced  # (the seed draws a reduced sub-network on every step of this run; the sampler test covers full draws)
    for arm in reduced:  # undistilled: the reduced arm learns the data alone; distilled: 0.7 KL to the full arm + 0.3 CE
        objective = (0.7 * arm["kd"] + 0.3 * arm["ce"]) if distill else arm["ce"]
        assert arm["loss"] == pytest.approx(objective + 0.01 * arm["aux"], rel=1e-4)
        assert arm["kd"] >= 0  # logged either way: how far the reduced arm is from the full one
    # the same draws as the plain run, plus one full training step a reduced step (the teacher comes free)
    full_step = train_flops_per_token(loaded.model.config, loaded.space.largest(), cfg.seq_len)
    extra = result.train_flops - plain.train_flops
    assert extra == pytest.approx(len(reduced) * cfg.tokens_per_step * full_step, rel=1e-9)
