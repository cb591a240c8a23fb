"""The sandwich step: learning, detached in-place distillation, frozen teacher, MoE aux loss, arm sampling."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.model.supernet import Supernet
from nas.training import (
    Arm,
    ArmSampler,
    SandwichLoss,
    StageConfig,
    check_memory,
    distill_loss,
    estimate_memory,
    level_pick,
    parse_train_config,
    sandwich_step,
    student_objective,
)
from nas.training import sandwich as sandwich_module
from nas.training.sandwich import DistillTarget

CFG = SupernetConfig(vocab_size=64, d_model=32, n_layer=3, n_head=4, n_kv_head=2, d_ff=64)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(cfg: SupernetConfig = CFG, seed: int = 0) -> Supernet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Supernet(cfg)


def _batch(vocab: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, vocab, (4, 17), generator=g)
    return seq[:, :-1], seq[:, 1:]


def test_sandwich_step_reduces_loss_of_largest_and_smallest() -> None:
    model = _model()
    space = SearchSpace.default(CFG)
    sampler = ArmSampler(space, n_random=2, rng=random.Random(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = _batch()
    history = []
    for step in range(25):
        opt.zero_grad(set_to_none=True)
        stats = sandwich_step(model, x, y, sampler.arms(step), SandwichLoss())
        opt.step()
        history.append((stats["largest"].ce, stats["smallest"].ce))
    (l0, s0), (l1, s1) = history[0], history[-1]
    assert l1 < l0 - 1.0, history
    assert s1 < s0 - 1.0, history  # the smallest learns only from the largest's logits, and still learns the data


def test_distillation_target_is_detached() -> None:
    space = SearchSpace.default(CFG)
    arms = [Arm("largest", space.largest()), Arm("smallest", space.smallest())]
    x, y = _batch()
    loss = SandwichLoss(temperature=2.0, distill_weight=0.7, ce_weight=0.2)

    model = _model()
    sandwich_step(model, x, y, arms, loss)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    def reference(detach: bool) -> dict[str, torch.Tensor]:
        ref = _model()
        big = ref(x, arms[0].subnet).float()
        small = ref(x, arms[1].subnet).float()
        target = big.detach().clone() if detach else big
        t = loss.temperature
        kd = F.kl_div(
            F.log_softmax(small / t, -1).flatten(0, 1), F.log_softmax(target / t, -1).flatten(0, 1),
            log_target=True, reduction="batchmean",
        ) * t * t
        ce = lambda logits: F.cross_entropy(logits.reshape(-1, 64), y.reshape(-1))  # noqa: E731
        (ce(big) + loss.distill_weight * kd + loss.ce_weight * ce(small)).backward()
        return {n: p.grad for n, p in ref.named_parameters()}

    detached, leaky = reference(True), reference(False)
    for name, grad in got.items():
        torch.testing.assert_close(grad, detached[name], rtol=1e-5, atol=1e-7)
    # the check can fail: letting the KL flow into the teacher changes the gradients
    assert any(not torch.allclose(got[n], leaky[n], rtol=1e-4, atol=1e-6) for n in got)

    teacher = torch.randn(2, 3, 8, requires_grad=True)
    student = torch.randn(2, 3, 8, requires_grad=True)
    distill_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None and student.grad is not None


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("temperature", "kd_weight", "ce_weight"), [(1.0, 1.0, 0.0), (2.0, 1.0, 0.0), (1.0, 0.6, 0.4)])
def test_fused_student_loss_is_the_kl_and_cross_entropy_with_their_gradient(
    compiled: bool, dtype: torch.dtype, temperature: float, kd_weight: float, ce_weight: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not compiled:
        monkeypatch.setattr(sandwich_module, "_use_compiled", lambda device: False)
    g = torch.Generator().manual_seed(0)
    N, V = 150, 300  # more rows than one eager chunk
    logits = (3 * torch.randn(N, V, generator=g)).to(dtype).requires_grad_()
    teacher = 3 * torch.randn(N, V, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    target = DistillTarget.from_logits(teacher, temperature)
    objective, kd, ce = student_objective(logits, target, targets, distill_weight=kd_weight, ce_weight=ce_weight)
    (0.5 * objective).backward()  # an upstream scale (a micro-batch's share) reaches the gradient

    # float64 by hand: KL(p || q) at T, times T**2, and the cross-entropy of the unscaled logits
    z = logits.detach().double().requires_grad_()
    p = F.softmax(teacher.double() / temperature, dim=-1)
    kl = (p * (p.log() - F.log_softmax(z / temperature, dim=-1))).sum() / N * temperature**2
    want_ce = F.cross_entropy(z, targets)
    (0.5 * (kd_weight * kl + ce_weight * want_ce)).backward()
    kl_v, ce_v = kl.item(), want_ce.item()
    assert abs(kd.item() - kl_v) < 1e-4 * kl_v
    assert abs(ce.item() - ce_v) < 1e-5 * ce_v
    assert abs(objective.item() - (kd_weight * kl_v + ce_weight * ce_v)) < 1e-4 * objective.item()
    assert logits.grad is not None and logits.grad.dtype == dtype
    step = 2.0**-8 if dtype == torch.bfloat16 else 1e-5  # the gradient is rounded to the logits' dtype
    torch.testing.assert_close(logits.grad.double(), z.grad, rtol=step, atol=step * float(z.grad.abs().max()))
    with pytest.raises(NasError, match="temperature 1"):
        student_objective(logits, DistillTarget.from_logits(teacher, 2.0), targets, ce_weight=0.5)


def test_distillation_sums_keep_the_kl_at_a_vocabulary_sized_batch() -> None:
    """Millions of p log q terms: one fp32 dot over all of them drifts by a visible part of a KL
    of a few nats; sums per row then over rows in fp64 stay within 1e-7 of the total."""
    g = torch.Generator().manual_seed(0)
    logp = F.log_softmax(4 * torch.randn(512, 8192, generator=g), dim=-1)
    want = float((logp.double().exp() * logp.double()).sum())
    target = DistillTarget.from_log_probs(logp)
    assert abs(target.plogp.item() - want) < 1e-7 * abs(want)
    assert target.loss(logp).item() == pytest.approx(0.0, abs=1e-6)  # KL(p || p) = 0


def test_fused_and_unfused_sandwich_steps_agree() -> None:
    """The fused students' loss changes how the step is computed, not what it computes."""
    space = SearchSpace.default(CFG)
    arms = [Arm("largest", space.largest()), Arm("smallest", space.smallest()), Arm("random0", space.sample(random.Random(3)))]
    x, y = _batch()
    grads, stats = [], []
    for fused in (True, False):
        for frozen in (True, False):
            model = _model()
            teacher = model.extract(model.full_subnet()).requires_grad_(False) if frozen else None
            loss = SandwichLoss(frozen_teacher=frozen, ce_weight=0.25, fused=fused)
            stats.append(sandwich_step(model, x, y, arms, loss, teacher=teacher))
            grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    for fused, unfused in ((grads[0], grads[2]), (grads[1], grads[3])):
        assert fused.keys() == unfused.keys() and len(fused) > 10
        for name in fused:
            torch.testing.assert_close(fused[name], unfused[name], rtol=1e-4, atol=1e-7)
    for a, b in ((stats[0], stats[2]), (stats[1], stats[3])):
        for arm in a:
            assert a[arm].ce == pytest.approx(b[arm].ce, rel=1e-5)
            assert (a[arm].kd is None) == (b[arm].kd is None)
            if a[arm].kd is not None:
                assert a[arm].kd == pytest.approx(b[arm].kd, rel=1e-4, abs=1e-6)


def test_frozen_teacher_heals_without_touching_the_teacher() -> None:
    model = _model()
    teacher = model.extract(model.full_subnet()).requires_grad_(False)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    space = SearchSpace.default(CFG)
    arms = [Arm("largest", space.largest()), Arm("smallest", space.smallest())]
    x, y = _batch()
    stats = sandwich_step(model, x, y, arms, SandwichLoss(frozen_teacher=True), teacher=teacher)
    assert stats["largest"].kd == pytest.approx(0.0, abs=1e-6)  # the largest starts equal to the teacher
    assert stats["smallest"].kd > 0.0
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(p, before[n]) for n, p in teacher.named_parameters())
    assert model.layers[0].ffn.up_proj.weight.grad.abs().sum() > 0
    with pytest.raises(NasError, match="teacher"):
        sandwich_step(model, x, y, arms, SandwichLoss(frozen_teacher=True))


def test_moe_samples_experts_and_adds_the_aux_loss() -> None:
    cfg = SupernetConfig(vocab_size=64, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=32, n_expert=4, top_k=2)
    space = SearchSpace.default(cfg)
    sampled = [ArmSampler(space, n_random=1, rng=random.Random(s)).arms(0)[-1].subnet for s in range(12)]
    assert len({(s.n_expert, s.top_k) for s in sampled}) > 1  # experts and top_k are elastic in the sandwich
    x, y = _batch()
    arms = ArmSampler(space, n_random=1, rng=random.Random(0)).arms(0)

    def router_grad(weight: float) -> tuple[torch.Tensor, dict]:
        model = _model(cfg)
        stats = sandwich_step(model, x, y, arms, SandwichLoss(aux_loss_weight=weight))
        return model.layers[0].ffn.router.weight.grad.clone(), stats

    g0, _ = router_grad(0.0)
    g1, stats = router_grad(1.0)
    assert all(s.aux is not None and s.aux > 0 for s in stats.values())
    assert stats["largest"].loss == pytest.approx(stats["largest"].ce + stats["largest"].aux, rel=1e-5)
    assert not torch.allclose(g0, g1)


def test_sampler_arms_and_progressive_stages() -> None:
    space = SearchSpace.default(CFG)
    stages = [StageConfig(until=0.5, elastic=["d_ff"]), StageConfig(until=1.0, elastic=["d_ff", "n_head", "n_layer"])]
    sampler = ArmSampler(space, n_random=3, rng=random.Random(0), stages=stages, total_steps=10)
    early = sampler.arms(0)
    assert [a.name for a in early] == ["largest", "smallest", "random0", "random1", "random2"]
    for arm in early:
        assert arm.subnet.n_layer == 3 and set(arm.subnet.n_head) == {4}  # only d_ff is elastic yet
    assert set(early[1].subnet.d_ff) == {min(space.layers[0].d_ff)}
    late = sampler.arms(9)
    assert late[1].subnet == space.smallest()
    again = ArmSampler(space, n_random=3, rng=random.Random(0), stages=stages, total_steps=10)
    assert again.arms(0) == early  # same seed, same arms
    grow_first = ArmSampler(space, n_random=2, rng=random.Random(0), total_steps=8,
                            stages=[StageConfig(until=0.25, elastic=[]), StageConfig(until=1.0, elastic=["n_layer", "n_head", "d_ff"])])
    assert [a.name for a in grow_first.arms(1)] == ["largest"]  # the first quarter trains the full model alone
    assert [a.name for a in grow_first.arms(2)] == ["largest", "smallest", "random0", "random1"]
    assert grow_first.arms(2)[1].subnet == space.smallest()
    fixed = SearchSpace.from_dict({"n_layer_choices": [3], "n_head_choices": [4], "d_ff_choices": [64]}, CFG)
    assert [a.name for a in ArmSampler(fixed, n_random=2, rng=random.Random(0)).arms(0)] == ["largest"]


def test_spread_draws_cover_the_range_of_sizes_with_uniform_marginals() -> None:
    rng = random.Random(0)
    picks = [level_pick(rng)((96, 32, 64)) for _ in range(3000)]  # a new size level each time
    assert all(0.30 < picks.count(w) / len(picks) < 0.367 for w in (32, 64, 96))  # Beta(1, 1)-binomial: uniform
    cfg = SupernetConfig(vocab_size=64, d_model=32, n_layer=16, n_head=4, n_kv_head=2, d_ff=96)
    space = SearchSpace.from_dict({"n_layer_choices": [8, 12, 16], "d_ff_choices": [32, 64, 96]}, cfg)

    def draws(arm_draw: str) -> list:
        sampler = ArmSampler(space, n_random=1, rng=random.Random(0), arm_draw=arm_draw)
        arms = [sampler.arms(step) for step in range(600)]
        assert all([a.name for a in arm[:2]] == ["largest", "smallest"] for arm in arms)
        return [arm[2].subnet for arm in arms if len(arm) == 3]  # a draw of the largest itself is left out

    uniform, spread = draws("uniform"), draws("spread")
    for subs in (uniform, spread):  # as many draws of each depth
        assert len(subs) > 570 and all(0.28 < sum(s.n_layer == n for s in subs) / len(subs) < 0.39 for n in (8, 12, 16))

    def narrow(s) -> bool:  # most of its layers at the smallest width, as the small sub-networks of a study are
        return sum(w == 32 for w in s.d_ff) >= 0.75 * s.n_layer
    # independent per-layer picks almost never give a narrow sub-network; one size level a draw often does
    assert sum(map(narrow, uniform)) <= 6 and sum(map(narrow, spread)) >= 80
    with pytest.raises(NasError, match="sandwich.arm_draw 'wide' is not one of uniform, spread"):
        ArmSampler(space, n_random=1, rng=random.Random(0), arm_draw="wide")


def test_memory_estimate_refuses_what_does_not_fit() -> None:
    small = estimate_memory(CFG, micro_batch=4, seq_len=16, dtype="bf16", frozen_teacher=False)
    bigger = estimate_memory(CFG, micro_batch=8, seq_len=16, dtype="bf16", frozen_teacher=True)
    assert bigger.activations > small.activations and bigger.teacher > 0 and small.teacher == 0
    assert small.weights == 4 * Supernet(CFG).num_params()
    check_memory(small, available=1 << 30, limit_gb=None)
    huge = SupernetConfig(vocab_size=50_000, d_model=8192, n_layer=64, n_head=64, n_kv_head=8, d_ff=28_672)
    estimate = estimate_memory(huge, micro_batch=8, seq_len=2048, dtype="bf16", frozen_teacher=False)
    with pytest.raises(NasError, match=r"needs about \d+\.\d GiB .*only 20\.0 GiB"):
        check_memory(estimate, available=None, limit_gb=20.0)


def test_a_sandwich_without_its_smallest_arm_trains_the_largest_and_random_ones() -> None:
    space = SearchSpace.default(CFG)
    with_smallest = ArmSampler(space, n_random=1, rng=random.Random(0))
    without = ArmSampler(space, n_random=1, rng=random.Random(0), train_smallest=False)
    for step in range(20):
        a, b = with_smallest.arms(step), without.arms(step)
        assert [arm.name for arm in a][:2] == ["largest", "smallest"]
        assert b[0] == Arm("largest", space.largest()) and all(arm.name != "smallest" for arm in b)
        assert b[1:] == a[2:]  # the same random draws, the smallest left out
    with pytest.raises(NasError, match="train_smallest=false with n_random 0 trains the largest alone"):
        parse_train_config({"out": "x", "data": {"corpus": ["x"]}, "model": {"d_model": 32, "n_layer": 2, "n_head": 4,
                            "n_kv_head": 2, "d_ff": 64}, "steps": 1, "sandwich": {"n_random": 0, "train_smallest": False}})
