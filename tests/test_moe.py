"""Elastic mixture of experts: routing over the kept experts only, views against a reference,
extraction, expert permutation, active-parameter arithmetic, training and search, bad input."""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from evaluators.cost import analytic_costs, cost_breakdown
from nas.errors import NasError
from nas.importing import importance
from nas.model.config import LayerDims, SupernetConfig
from nas.model.directory import load_supernet, save_supernet
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import MixtureOfExperts, Supernet
from nas.search.spec import parse_spec
from nas.training import Arm, ArmSampler, SandwichLoss, evaluate_loss, parse_train_config, sandwich_step, train

V = 61
#: Mixed dense/MoE layers, a shared expert and an untied head: the hardest case for views.
MOE = SupernetConfig(vocab_size=V, d_model=32, n_layer=3, n_head=4, n_kv_head=2, d_ff=16, n_expert=6, top_k=3,
                     moe_layers=(0, 2), shared_expert=True)
#: Every layer MoE, no shared expert, tied embeddings.
ALL_MOE = SupernetConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=16, n_expert=4, top_k=2,
                         tie_embeddings=True)
MOE_SPACE = {"n_expert_choices": [2, 3, 4, 6], "top_k_choices": [1, 2, 3], "d_ff_choices": [8, 16],
             "n_layer_choices": [2, 3], "d_model_choices": [24, 32]}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add contention
    yield
    torch.set_num_threads(threads)


def make(config: SupernetConfig = MOE, seed: int = 0) -> Supernet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Supernet(config, layer_rank=list(reversed(range(config.n_layer))))
        # larger than the init scale, so that experts differ clearly and errors show
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.endswith("norm"):
                    p.normal_(0.0, 0.2)
    return model.eval()


def tokens(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def reference_moe(moe: MixtureOfExperts, x: torch.Tensor, n_expert: int, top_k: int, d_ff: int) -> torch.Tensor:
    """A token-by-token float64 mixture of experts written from the definition: softmax over
    the kept experts' router logits, the top_k renormalised, their SwiGLU outputs mixed."""
    D = x.shape[-1]
    w = {k: v.detach().double() for k, v in moe.state_dict().items()}
    out = []
    for row in x.double():
        p = (w["router.weight"][:n_expert, :D] @ row).softmax(-1)
        top = p.topk(top_k)
        y = torch.zeros(D, dtype=torch.float64)
        for weight, e in zip(top.values / top.values.sum(), top.indices.tolist()):
            h = F.silu(w["gate"][e, :d_ff, :D] @ row) * (w["up"][e, :d_ff, :D] @ row)
            y += weight * (w["down"][e, :D, :d_ff] @ h)
        if moe.shared is not None:
            h = F.silu(w["shared.gate_proj.weight"][:d_ff, :D] @ row) * (w["shared.up_proj.weight"][:d_ff, :D] @ row)
            y += w["shared.down_proj.weight"][:D, :d_ff] @ h
        out.append(y)
    return torch.stack(out)


def moe_subnet(model: Supernet, n_expert: int, top_k: int, **kw: object) -> SubnetConfig:
    full = model.full_subnet()
    return SubnetConfig(
        layers=full.layers, n_head=full.n_head, d_ff=full.d_ff, d_model=full.d_model,
        n_expert=tuple(n_expert if e else 0 for e in full.n_expert),
        top_k=tuple(top_k if e else 0 for e in full.n_expert), **kw,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ routing
def test_routing_is_a_distribution_over_the_kept_experts_only() -> None:
    moe = make().layers[0].ffn
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    for kept in (1, 2, 4, 6):
        for k in range(1, kept + 1):
            probs, weights, index = moe.route(x, kept, k)
            assert probs.shape == (64, kept) and weights.shape == index.shape == (64, k)
            assert_close(probs.sum(-1), torch.ones(64))
            assert_close(weights.sum(-1), torch.ones(64))
            assert int(index.max()) < kept and torch.all(weights > 0)
            assert torch.all(index.sort(-1).values.diff(dim=-1) > 0)  # k distinct experts per token
    # dropping experts renormalises the softmax over the survivors, it does not truncate it
    full, _, _ = moe.route(x, 6, 1)
    two, _, _ = moe.route(x, 2, 1)
    assert_close(two, full[:, :2] / full[:, :2].sum(-1, keepdim=True))


def test_experts_beyond_the_kept_prefix_are_never_used_and_get_no_gradient() -> None:
    model = make()
    x = tokens(batch=4, length=16)
    sub = moe_subnet(model, n_expert=3, top_k=2)
    with torch.no_grad():
        before = model(x, sub).clone()
        for layer in MOE.moe_layers or ():
            moe = model.layers[layer].ffn
            for t in (moe.router.weight, moe.gate, moe.up, moe.down):
                t[3:] = float("nan")  # any token sent to a dropped expert would poison the output
        after = model(x, sub)
    assert torch.isfinite(after).all()
    assert torch.equal(before, after)

    model = make()
    model.train()
    out = model.run(x, sub, return_aux=True)
    (F.cross_entropy(out.logits.flatten(0, 1), x.flatten()) + out.aux_loss).backward()
    for layer in MOE.moe_layers or ():
        moe = model.layers[layer].ffn
        for t in (moe.router.weight, moe.gate, moe.up, moe.down):
            assert t.grad is not None
            assert torch.count_nonzero(t.grad[3:]) == 0
            assert torch.count_nonzero(t.grad[:3]) > 0  # with 64 tokens every kept expert gets some


def test_moe_layer_matches_a_token_by_token_reference() -> None:
    model = make()
    for layer in (0, 2):
        moe = model.layers[layer].ffn
        for D, E, k, Fd in ((32, 6, 3, 16), (32, 6, 6, 16), (24, 4, 2, 8), (32, 1, 1, 16), (16, 3, 1, 5)):
            x = torch.randn(1, 10, D, generator=torch.Generator().manual_seed(E * 10 + k))
            with torch.no_grad():
                got = moe(x, E, k, Fd)[0]
            assert_close(got.double(), reference_moe(moe, x[0], E, k, Fd), rtol=1e-5, atol=1e-5)


def test_experts_that_no_token_chose_are_skipped_and_get_zero_gradient() -> None:
    """Dispatch groups a batch's assignments by expert: a batch of one token leaves all but
    top-k experts empty, and the output and gradients must still be the definition's."""
    moe = make().layers[0].ffn
    x = torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(3), requires_grad=True)
    got = moe(x, 6, 2, 16)
    assert_close(got[0].detach().double(), reference_moe(moe, x[0].detach(), 6, 2, 16), rtol=1e-5, atol=1e-5)
    got.sum().backward()
    _, _, index = moe.route(x[0].detach(), 6, 2)
    chosen = set(index.reshape(-1).tolist())
    for e in range(6):
        used = torch.count_nonzero(moe.gate.grad[e]) > 0
        assert bool(used) == (e in chosen), e
    assert torch.isfinite(moe.down.grad).all() and x.grad is not None and torch.isfinite(x.grad).all()
    assert moe(torch.zeros(2, 0, 32), 6, 2, 16).shape == (2, 0, 32)  # no token at all: no expert runs


def test_largest_view_equals_the_full_moe_forward() -> None:
    for config in (MOE, ALL_MOE):
        model = make(config)
        space = SearchSpace.from_dict({"n_expert_choices": [1, 2, config.n_expert], "top_k_choices": [1, config.top_k]},
                                      config, model.layer_rank)
        largest = space.largest()
        assert largest.n_expert == tuple(config.n_expert if config.layer(i).n_expert else 0 for i in largest.layers)
        assert largest.top_k == tuple(config.top_k if config.layer(i).n_expert else 0 for i in largest.layers)
        x = tokens()
        with torch.no_grad():
            assert torch.equal(model(x, largest), model(x))
            assert torch.equal(model(x, model.full_subnet()), model(x))


# ------------------------------------------------------------ views and copies
def test_extract_equals_view_for_random_moe_subnetworks() -> None:
    model = make()
    space = SearchSpace.from_dict(MOE_SPACE, MOE, model.layer_rank)
    rng = random.Random(0)
    subs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(8)]
    assert len({(s.n_expert, s.top_k) for s in subs}) >= 6
    x = tokens()
    with torch.no_grad():
        for sub in subs:
            dense = model.extract(sub)
            assert all(b.ffn.shared is not None for b in dense.layers if isinstance(b.ffn, MixtureOfExperts))
            assert_close(dense(x), model(x, sub), rtol=1e-5, atol=1e-5)
            assert sum(p.numel() for p in dense.parameters()) == model.num_params(sub) == cost_breakdown(MOE, sub).params
            # decoding with a KV cache is unaffected by the experts
            cache = model.new_cache(sub)
            steps = [model(x[:, :7], sub, cache=cache)[:, -1]] + [model(x[:, t:t + 1], sub, cache=cache)[:, -1] for t in range(7, 12)]
            assert_close(torch.stack(steps, 1), model(x, sub)[:, 6:], rtol=1e-4, atol=1e-4)


def test_extracted_moe_model_round_trips_through_a_supernet_directory(tmp_path: Path) -> None:
    model = make()
    sub = SubnetConfig(layers=(0, 2), n_head=(2, 4), d_ff=(8, 16), d_model=24, n_expert=(2, 4), top_k=(1, 3))
    dense = model.extract(sub)
    save_supernet(dense, tmp_path / "small")
    loaded = load_supernet(tmp_path / "small", dtype="fp32", verify=True)
    assert loaded.config.layer(0) == LayerDims(n_head=2, n_kv_head=1, d_ff=8, n_expert=2, top_k=1)
    x = tokens()
    with torch.no_grad():
        assert_close(loaded.model(x), model(x, sub), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------- expert permutation
def test_expert_permutation_leaves_the_full_model_unchanged() -> None:
    model = make()
    x = tokens()
    with torch.no_grad():
        before = model(x).clone()
        gen = torch.Generator().manual_seed(3)
        for layer in MOE.moe_layers or ():
            moe = model.layers[layer].ffn
            perm = torch.randperm(MOE.n_expert, generator=gen)
            assert not torch.equal(perm, torch.arange(MOE.n_expert))
            for t in (moe.router.weight, moe.gate, moe.up, moe.down):
                t.copy_(t[perm])
        assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_importance_ordering_puts_the_busiest_experts_first_without_changing_outputs() -> None:
    model = make()
    x = tokens()
    calib = tokens(batch=4, length=16, seed=5)
    with torch.no_grad():
        before = model(x).clone()
    importance.apply(model, importance.measure(model, calib, dtype=torch.float32))
    with torch.no_grad():
        assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    again = importance.measure(model, calib, dtype=torch.float32)
    for layer in MOE.moe_layers or ():
        scores = again.experts[layer]
        assert scores is not None and torch.all(scores[:-1] >= scores[1:] - 1e-6)
        assert scores[0] > scores[-1]


# ------------------------------------------------------------- active params
def test_active_params_depend_on_top_k_and_total_params_on_experts_kept() -> None:
    # D=32, hd=8, H=4, K=2 per layer: attention 32*8*(2*4 + 2*2) = 3072, norms 2*32 = 64,
    # one expert 3*32*16 = 1536, router E*32; final norm 32; tied 61x32 embedding = 1952.
    cfg = ALL_MOE
    model = make(cfg)

    def sub(e: int, k: int, n_layer: int = 2) -> SubnetConfig:
        return SubnetConfig(layers=tuple(range(n_layer)), n_head=(4,) * n_layer, d_ff=(16,) * n_layer, d_model=32,
                            n_expert=(e,) * n_layer, top_k=(k,) * n_layer)

    expected = {
        # (E, k): (non-embedding params, active params)
        (4, 2): (2 * (3072 + 64 + 4 * 1536 + 128) + 32, 2 * (3072 + 64 + 2 * 1536 + 128) + 32),  # 18848, 12704
        (4, 1): (18848, 2 * (3072 + 64 + 1536 + 128) + 32),  # 9632
        (2, 2): (2 * (3072 + 64 + 2 * 1536 + 64) + 32, 12576),  # 12576 both: every kept expert is active
        (2, 1): (12576, 2 * (3072 + 64 + 1536 + 64) + 32),  # 9504
    }
    assert [expected[k][1] for k in expected] == [12704, 9632, 12576, 9504]
    for (e, k), (total, active) in expected.items():
        b = cost_breakdown(cfg, sub(e, k))
        assert (b.non_embedding_params, b.active_params) == (total, active)
        assert b.params == total + 1952 == model.num_params(sub(e, k))
        # every token runs k experts of width 16 plus the router: 2 * matmul weights + attention
        matmul = 2 * (3072 + k * 1536 + e * 32) + 61 * 32
        assert b.flops_per_token == 2 * matmul + 2 * 4 * 4 * 8 * 512
    one_layer = cost_breakdown(cfg, sub(4, 2, n_layer=1))
    assert one_layer.active_params == 3072 + 64 + 2 * 1536 + 128 + 32
    # the Costs object the search reads carries the same figure
    c = analytic_costs(cfg, sub(4, 1))
    assert c.values["active_params"].value == 9632.0 and c.values["non_embedding_params"].value == 18848.0
    # with a shared expert every token also runs it, and dense layers count whole
    b = cost_breakdown(MOE, SubnetConfig(layers=(0, 1, 2), n_head=(4, 4, 4), d_ff=(16, 16, 16), d_model=32,
                                         n_expert=(6, 0, 2), top_k=(1, 0, 2)))
    dense = 3072 + 64 + 1536
    assert b.active_params == (3072 + 64 + 1536 + 6 * 32 + 1536) + dense + (3072 + 64 + 2 * 1536 + 2 * 32 + 1536) + 32
    assert b.non_embedding_params == (3072 + 64 + 6 * 1536 + 6 * 32 + 1536) + dense + (3072 + 64 + 2 * 1536 + 2 * 32 + 1536) + 32


def test_study_specs_accept_active_params_as_objective_and_constraint() -> None:
    spec = parse_spec({
        "name": "moe", "supernet": "work/moe", "tasks": [{"name": "heldout_loss"}],
        "objectives": ["heldout_loss", "active_params"], "constraints": {"active_params": 1.0e6},
        "budget": {"n_trials": 4},
    })
    assert [o.metric for o in spec.objectives] == ["heldout_loss/loss", "active_params"]
    assert [o.direction for o in spec.objectives] == ["minimize", "minimize"]
    assert spec.objective_kind(spec.objectives[1]) == "cost"
    assert "active_params" in spec.cost_metrics


# ----------------------------------------------------------------- training
def test_a_sandwich_step_on_a_tiny_moe_reduces_the_loss() -> None:
    cfg = ALL_MOE
    model = make(cfg)
    with torch.no_grad():
        model.reset_parameters()
    model.train()
    space = SearchSpace.from_dict({"n_expert_choices": [2, 4], "top_k_choices": [1, 2], "n_layer_choices": [2]}, cfg)
    sampler = ArmSampler(space, n_random=1, rng=random.Random(0))
    x = torch.randint(0, V, (4, 17), generator=torch.Generator().manual_seed(0))
    inputs, targets = x[:, :-1], x[:, 1:]
    largest, smallest = space.largest(), space.smallest()
    assert (smallest.n_expert, smallest.top_k) == ((2, 2), (1, 1))
    before = {s: evaluate_loss(model, x, s, dtype="fp32") for s in (largest, smallest)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    seen = set()
    for step in range(12):
        arms = sampler.arms(step)
        seen.update((a.subnet.n_expert, a.subnet.top_k) for a in arms)
        optimizer.zero_grad()
        stats = sandwich_step(model, inputs, targets, arms, SandwichLoss(aux_loss_weight=0.01))
        assert all(s.aux is not None and s.aux >= 0.99 for s in stats.values())  # E * sum f*P >= 1
        optimizer.step()
    assert len(seen) >= 3  # experts kept and top_k vary between arms
    after = {s: evaluate_loss(model, x, s, dtype="fp32") for s in (largest, smallest)}
    assert after[largest] < before[largest] - 0.5
    assert after[smallest] < before[smallest] - 0.5
    # bf16 autocast (the training default) runs the routed experts too
    stats = sandwich_step(model, inputs, targets, [Arm("largest", largest), Arm("smallest", smallest)],
                          SandwichLoss(), dtype="bf16")
    assert all(torch.isfinite(torch.tensor(s.loss)) for s in stats.values())


def _write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = random.Random(0)
    words = ["the", "cat", "saw", "a", "red", "ship", "on", "river", "and", "moon", "her", "brother"]
    (folder / "book.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(1500)))
    return folder


def test_training_a_moe_supernet_end_to_end_in_bf16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path / "work"))
    cfg = parse_train_config({
        "out": str(tmp_path / "moe"), "data": {"corpus": [str(_write_corpus(tmp_path / "corpus"))], "val_fraction": 0.05},
        "tokenizer": {"vocab_size": 300, "min_frequency": 1},
        "model": {"d_model": 32, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_ff": 16, "n_expert": 4, "top_k": 2},
        "space": {"n_expert_choices": [2, 4], "top_k_choices": [1, 2], "n_layer_choices": [2]},
        "sandwich": {"n_random": 1, "aux_loss_weight": 0.01}, "optim": {"lr": 3e-3, "warmup_fraction": 0.0},
        "steps": 3, "batch_size": 4, "seq_len": 32, "dtype": "bf16", "eval_tokens": 256, "log_every": 1,
    })
    result = train(cfg)
    assert set(result.val_loss) == {"largest", "smallest"}
    steps = [json.loads(line) for line in (tmp_path / "moe" / "train" / "log.jsonl").read_text().splitlines()]
    arms = [e["arms"] for e in steps if e["event"] == "step"]
    assert arms and all("aux" in a["largest"] for a in arms)  # the load-balancing loss is logged
    loaded = load_supernet(tmp_path / "moe")
    assert loaded.config.n_expert == 4 and loaded.space.smallest().top_k == (1, 1)


# -------------------------------------------------------------------- search
def test_search_explores_experts_and_top_k_on_a_moe_supernet(tmp_path: Path, sqlite_url: str) -> None:
    import optuna

    from nas.search.study import open_search

    model = make(ALL_MOE)
    space = SearchSpace.from_dict({"n_expert_choices": [2, 4], "top_k_choices": [1, 2], "n_head_choices": [4],
                                   "d_ff_choices": [16], "n_layer_choices": [2]}, ALL_MOE, model.layer_rank)
    save_supernet(model, tmp_path / "moe", space=space)
    spec = parse_spec({
        "name": "moe-search", "supernet": str(tmp_path / "moe"), "storage": sqlite_url, "dtype": "fp32",
        "tasks": [{"name": "heldout_loss", "n_examples": 8, "seq_len": 16}],
        "confirmation": None,
        "objectives": ["heldout_loss", "active_params"], "constraints": {"active_params": 12_000},
        "sampler": "grid", "budget": {"n_trials": space.size()},
    })
    summary = open_search(spec).optimize()
    assert summary.complete == space.size() == 16  # (2 experts x 2 top_k) per layer, 2 layers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trials = optuna.load_study(study_name="moe-search", storage=sqlite_url).get_trials(deepcopy=False)
    assert {t.params["layer_0.n_expert"] for t in trials} == {2, 4} and {t.params["layer_1.top_k"] for t in trials} == {1, 2}
    by_top_k = {(t.params["layer_0.top_k"], t.params["layer_1.top_k"]): t.user_attrs["costs"]["active_params"] for t in trials}
    assert by_top_k[(1, 1)] < by_top_k[(2, 2)]
    feasible = [t for t in trials if t.user_attrs["feasible"]]
    assert feasible and len(feasible) < len(trials)
    assert all(t.user_attrs["costs"]["active_params"] <= 12_000 for t in feasible)


# ----------------------------------------------------------------- bad input
def test_top_k_above_the_experts_kept_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="top_k=3 but keeps 2 experts"):
        SubnetConfig(layers=(0, 1), n_head=(4, 4), d_ff=(16, 16), d_model=32, n_expert=(4, 2), top_k=(2, 3))
    with pytest.raises(NasError, match="top_k \\(5\\) must be between 1 and the experts kept \\(4\\)"):
        LayerDims(n_head=4, n_kv_head=2, d_ff=16, n_expert=4, top_k=5)
    with pytest.raises(NasError, match="top_k \\(5\\) must be between 1 and n_expert \\(4\\)"):
        ALL_MOE.replace(top_k=5)
    with pytest.raises(NasError, match="top_k_choices \\[1, 5\\] must be within 1..4"):
        SearchSpace.from_dict({"top_k_choices": [1, 5]}, ALL_MOE)
    with pytest.raises(NasError, match="top_k"):
        train(parse_train_config({
            "out": str(tmp_path / "out"), "data": {"corpus": [str(tmp_path)]}, "steps": 1,
            "model": {"d_model": 32, "n_layer": 2, "n_head": 4, "d_ff": 16, "n_expert": 4, "top_k": 5},
        }))


def test_a_top_k_choice_above_the_experts_kept_is_lowered_and_stays_in_the_space() -> None:
    space = SearchSpace.from_dict({"n_expert_choices": [2, 4], "top_k_choices": [1, 4]}, ALL_MOE.replace(top_k=4))
    sub = space.from_params({"layer_0.n_expert": 2, "layer_0.top_k": 4})
    assert (sub.n_expert[0], sub.top_k[0]) == (2, 2)
    # what the space builds, it contains, and Optuna parameters name it (grid plans, caching)
    members = list(space.enumerate()) + [space.sample(random.Random(s)) for s in range(20)]
    assert len(set(members[:space.size()])) == space.size()
    for member in members:
        space.check(member)
        assert space.from_params(space.to_params(member)) == member
    with pytest.raises(NasError, match="top_k=3 not in top_k_choices \\[1, 4\\]"):
        space.check(SubnetConfig(layers=(0, 1), n_head=(4, 4), d_ff=(16, 16), d_model=32, n_expert=(4, 4), top_k=(3, 1)))


def test_zero_experts_are_refused() -> None:
    model = make(ALL_MOE)
    with pytest.raises(NasError, match="keeps 0 experts; keep at least 1"):
        SubnetConfig(layers=(0, 1), n_head=(4, 4), d_ff=(16, 16), d_model=32, n_expert=(0, 2), top_k=(1, 1))
    no_experts = SubnetConfig(layers=(0, 1), n_head=(4, 4), d_ff=(16, 16), d_model=32, n_expert=(0, 2), top_k=(0, 1))
    with pytest.raises(NasError, match="layer 0 is a mixture-of-experts layer in the supernet; set n_expert=1..4"):
        model(tokens(), no_experts)
    with pytest.raises(NasError, match="n_expert_choices \\[0, 2\\] must be within 1..4"):
        SearchSpace.from_dict({"n_expert_choices": [0, 2]}, ALL_MOE)
    with pytest.raises(NasError, match="top_k"):
        SupernetConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=16, n_expert=-1)
    with pytest.raises(NasError, match="n_expert_choices given but every layer is dense"):
        SearchSpace.from_dict({"n_expert_choices": [2]}, ALL_MOE.replace(n_expert=0, top_k=0))


def test_a_router_from_another_expert_count_is_refused_on_load(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = make(ALL_MOE)
    save_supernet(model, tmp_path / "moe")
    weights = tmp_path / "moe" / "model.safetensors"
    state = load_file(str(weights))
    state["layers.1.ffn.router.weight"] = torch.randn(6, 32)  # a router trained with 6 experts
    save_file(state, str(weights))
    with pytest.raises(NasError) as err:
        load_supernet(tmp_path / "moe")
    message = str(err.value)
    assert "layers.1.ffn.router.weight is (6, 32)" in message and "config says (4, 32)" in message
    assert "Traceback" not in message and "\n" not in message

    # the config claims another expert count than the weights hold
    save_supernet(model, tmp_path / "moe2")
    config = json.loads((tmp_path / "moe2" / "config.json").read_text())
    (tmp_path / "moe2" / "config.json").write_text(json.dumps({**config, "n_expert": 8}))
    with pytest.raises(NasError, match="does not match config.json"):
        load_supernet(tmp_path / "moe2")
