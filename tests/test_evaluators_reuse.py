"""Scoring plans built once per study, prefix reuse across candidates, fp32-accumulated bf16.

Every property here is an exact one: a plan reused by a later candidate gives the same
per-request results as one built for it; resuming from a stored boundary gives bit-identical
per-example scores to running every layer (dense and MoE supernets, with and without depth
changes, under a byte budget so small that boundaries are evicted or thinned).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

import pytest
import torch

from evaluators import Evaluator, Fidelity, SubnetLM
from evaluators.evaluate import reuse_order
from evaluators.plan import build_plan, plan_requests
from evaluators.prefix import PrefixCache, boundaries_to_store, exact_logprobs, hflm_logprobs, prefix_path
from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

from _tiny import tiny_llama, tiny_supernet, tiny_tokenizer

MAX_LEN = 256
TASKS = ["arc_easy", "piqa"]
FIDELITY = Fidelity(limit=6, seed=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def dense(tok) -> Supernet:
    return tiny_supernet(tiny_llama(tok, n_layer=4, seed=1))


def moe(tok) -> Supernet:
    config = SupernetConfig(vocab_size=len(tok), d_model=32, n_layer=4, n_head=4, n_kv_head=2, d_ff=16, n_expert=4,
                            top_k=2, moe_layers=(1, 2, 3), shared_expert=True, max_seq_len=MAX_LEN)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = Supernet(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.endswith("norm"):
                    p.normal_(0.0, 0.2)
    return model.eval()


def candidates(model: Supernet, n: int = 8, seed: int = 0, *, d_model: bool = False) -> list[SubnetConfig]:
    """Random sub-networks, plus pairs that share their first layers (a later layer, or the
    depth, differs), so that a study's stream of candidates has prefixes to reuse; with
    ``d_model``, each also at half the residual stream's width (the same layers: only d_model
    tells their boundaries apart)."""
    space = SearchSpace.default(model.config, model.layer_rank)
    rng = random.Random(seed)
    out = []
    for _ in range(n // 2):
        a = space.sample(rng)
        out.append(a)
        b = space.sample(rng)
        keep = max(1, a.n_layer - 1)  # b: a's first layers, then its own
        out.append(_share_prefix(a, b, keep))
    if d_model:
        out += [dataclasses.replace(s, d_model=model.config.d_model // 2) for s in out]
    return out


def _share_prefix(a: SubnetConfig, b: SubnetConfig, keep: int) -> SubnetConfig:
    """``a``'s first ``keep`` layers (same layers, sizes and d_model), then ``b``'s later layers."""
    tail = [p for p, layer in enumerate(b.layers) if layer > a.layers[keep - 1]]
    pick = lambda seq_a, seq_b: tuple(seq_a[:keep]) + tuple(seq_b[p] for p in tail)  # noqa: E731
    return SubnetConfig(
        layers=pick(a.layers, b.layers), n_head=pick(a.n_head, b.n_head), d_ff=pick(a.d_ff, b.d_ff), d_model=a.d_model,
        n_expert=pick(a.n_expert, b.n_expert) if a.n_expert else (), top_k=pick(a.top_k, b.top_k) if a.top_k else (),
    )


def scores_of(evaluator: Evaluator, subnets: list[SubnetConfig]) -> list[list[tuple]]:
    out = []
    for metrics in evaluator.evaluate_many(subnets, FIDELITY):
        out.append([(s.task, s.metric, s.value, s.stderr, s.example_ids, s.example_scores) for s in metrics.scores])
    return out


@pytest.mark.parametrize(("make", "narrow"), [(dense, False), (moe, False), (dense, True)], ids=["dense", "moe", "d_model"])
def test_prefix_reuse_is_bit_identical_to_running_every_layer(tok, make, narrow) -> None:
    subnets = candidates(make(tok), d_model=narrow)
    depths = {s.n_layer for s in subnets}
    assert len(depths) > 1  # depth changes are covered
    if narrow:
        assert len({s.d_model for s in subnets}) == 2  # and two widths of the residual stream
    plain = Evaluator(make(tok), tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN, prefix_cache_bytes=0)
    reuse = Evaluator(make(tok), tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN, prefix_cache_bytes=1 << 30)
    try:
        expected = scores_of(plain, subnets)
        got = scores_of(reuse, subnets)
        assert plain.prefix_cache.layer_passes_skipped == 0
        assert reuse.prefix_cache.layer_passes_skipped > 0  # some candidates resumed from a stored boundary
        assert got == expected  # values, stderrs, ids and per-example scores, bit for bit
        if narrow:  # the narrow twins are other models, never served a wide twin's boundary
            half = len(subnets) // 2
            assert all(w != n for w, n in zip(expected[:half], expected[half:]))
        # scoring the same candidates again resumes from their own last layer and changes nothing
        assert scores_of(reuse, subnets) == expected
    finally:
        plain.close()
        reuse.close()


def test_a_tiny_byte_budget_evicts_and_still_gives_identical_scores(tok) -> None:
    subnets = candidates(dense(tok), n=10, seed=4)
    plain = Evaluator(dense(tok), tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN, prefix_cache_bytes=0)
    expected = scores_of(plain, subnets)
    plain.close()
    probe = Evaluator(dense(tok), tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN, prefix_cache_bytes=1 << 30)
    scores_of(probe, subnets[:1])
    one_task_boundary = min(b.nbytes for b in probe.prefix_cache._entries.values())
    probe.close()
    tight = Evaluator(dense(tok), tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN,
                      prefix_cache_bytes=3 * one_task_boundary)
    try:
        assert scores_of(tight, subnets) == expected
        cache = tight.prefix_cache
        assert cache.evicted > 0 and cache.nbytes <= cache.max_bytes
    finally:
        tight.close()


def test_the_plan_is_built_once_and_equals_one_built_per_candidate(tok) -> None:
    model = dense(tok)
    evaluator = Evaluator(model, tok, TASKS, dtype="fp32", batch_size=4, max_length=MAX_LEN, prefix_cache_bytes=0)
    try:
        subnets = candidates(model, n=4, seed=7)
        for subnet in subnets:
            evaluator.evaluate(subnet, FIDELITY)
        assert evaluator.plan_builds == len(TASKS)  # once per task and document set, not per candidate
        for subnet in subnets:
            lm = evaluator.lm(subnet)
            for task in TASKS:
                requests = [inst for d in evaluator.subset(task, FIDELITY) for inst in evaluator.instances(task, d)]
                planned = lm.run_plan(evaluator._plan(lm, task, tuple(evaluator.subset(task, FIDELITY)), requests))
                fresh = SubnetLM(model, subnet, tokenizer=tok, batch_size=4, max_length=MAX_LEN).loglikelihood(requests)
                assert planned == fresh
        assert evaluator.plan_builds == len(TASKS)
    finally:
        evaluator.close()


def test_fp32_accumulated_bf16_is_closer_to_fp32_than_hflm_style_bf16(tok) -> None:
    hf = tiny_llama(tok, n_layer=2, seed=5, std=0.3)  # peaked logits: log-probabilities far from 0
    texts = [("The quick brown fox", " jumps over the lazy dog and runs away"), ("First Citizen:", " speak, speak.")]
    texts += [(f"Line {i}: the people", " are all resolved rather to die than to famish") for i in range(6)]
    reference = SubnetLM(tiny_supernet(hf), "full", tokenizer=tok, dtype="fp32", max_length=MAX_LEN)
    requests = plan_requests(reference, [type("R", (), {"args": t})() for t in texts])
    truth = [ll for ll, _ in reference.run_plan(reference.plan([(None, c, x) for c, x in requests]))]
    got = {}
    for mode in ("exact", "hflm"):
        lm = SubnetLM(tiny_supernet(hf), "full", tokenizer=tok, dtype="bf16", max_length=MAX_LEN, logprobs=mode)
        got[mode] = [ll for ll, _ in lm.run_plan(lm.plan([(None, c, x) for c, x in requests]))]
    assert max(abs(a - b) for a, b in zip(got["exact"], got["hflm"], strict=True)) > 1e-3  # the mode is applied
    for mode in got:  # both near fp32: within 1 % of each request's log-likelihood
        assert all(abs(a - b) < 0.01 * abs(b) for a, b in zip(got[mode], truth, strict=True)), mode
    # end to end, both differ from fp32 by the bf16 forward's own error (a few tenths of a nat on
    # these ~-200-nat requests), whose sign is random: which mode lands closer to fp32 is noise
    # (each wins on some seeds), so the log-softmax's own error is asserted on the model's logits
    bf16 = tiny_supernet(hf).to(torch.bfloat16)
    ctx, cont = requests[0]
    with torch.inference_mode():
        model_logits = bf16(torch.tensor([ctx + cont]))[:, len(ctx) - 1 : -1]  # (1, K, V) in bf16
    model_target = torch.tensor([cont])
    truth64 = torch.log_softmax(model_logits.double(), dim=-1).gather(2, model_target[..., None]).squeeze(-1)
    ours, _ = exact_logprobs(model_logits, model_target)
    theirs, _ = hflm_logprobs(model_logits, model_target)
    assert (ours.double() - truth64).abs().sum() < (theirs.double() - truth64).abs().sum()
    # on the same bf16 logits, the fp32 logsumexp is the float64 answer; HFLM-style bf16 log-softmax is not
    logits = (torch.randn(3, 5, 400, generator=torch.Generator().manual_seed(0)) * 6).to(torch.bfloat16)
    target = torch.randint(0, 400, (3, 5), generator=torch.Generator().manual_seed(1))
    exact = torch.log_softmax(logits.double(), dim=-1).gather(2, target[..., None]).squeeze(-1)
    ours, _ = exact_logprobs(logits, target)
    theirs, _ = hflm_logprobs(logits, target)
    assert (ours.double() - exact).abs().max() < 1e-5
    assert (theirs.double() - exact).abs().max() > 1e-2  # bf16 rounding of values near -20 nats


def test_reuse_order_walks_the_prefix_trie() -> None:
    def sub(*d_ff: int, d_model: int = 64) -> SubnetConfig:
        return SubnetConfig(layers=tuple(range(len(d_ff))), n_head=(4,) * len(d_ff), d_ff=d_ff, d_model=d_model)

    subnets = [sub(64, 32, 16), sub(32, 32), sub(64, 32), sub(64, 16, 16), sub(64, 32, 16, d_model=32)]
    order = reuse_order(subnets)
    paths = [prefix_path(subnets[i]) for i in order]
    assert paths == sorted(paths) and sorted(order) == list(range(len(subnets)))
    # neighbours share at least as many layers as in the given order
    def shared(a, b):
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    given = [prefix_path(s) for s in subnets]
    assert sum(shared(a, b) for a, b in zip(paths, paths[1:])) >= sum(shared(a, b) for a, b in zip(given, given[1:]))


def test_boundaries_to_store_keeps_all_that_fit_else_evenly_spaced() -> None:
    assert boundaries_to_store(0, 6, per_boundary=10, budget=100) == [1, 2, 3, 4, 5, 6]
    assert boundaries_to_store(2, 6, per_boundary=10, budget=100) == [3, 4, 5, 6]
    spaced = boundaries_to_store(0, 12, per_boundary=10, budget=40)
    assert len(spaced) == 4 and spaced[-1] == 12 and max(b - a for a, b in zip([0] + spaced, spaced)) == 3
    assert boundaries_to_store(0, 6, per_boundary=10, budget=5) == []


def test_prefix_cache_finds_the_deepest_boundary_and_evicts_least_recently_used() -> None:
    from evaluators.prefix import Boundary

    cache = PrefixCache(max_bytes=3 * 4 * 8)
    path = (8, (0, 1, 1, 0, 0), (1, 1, 1, 0, 0), (2, 1, 1, 0, 0))
    key = ("weights", "plan")
    for depth in (1, 2, 3):
        assert cache.put(key, path, Boundary(depth, [torch.zeros(8)]))
    assert cache.deepest(key, path).depth == 3
    other = path[:2] + ((5, 1, 1, 0, 0),)
    assert cache.deepest(key, other).depth == 1
    assert cache.deepest(("weights", "another plan"), path) is None and cache.deepest(("other weights", "plan"), path) is None
    cache.put(key, other, Boundary(2, [torch.zeros(8)]))  # evicts the least recently used: depth 2 of path
    assert cache.evicted == 1 and cache.deepest(key, path[:3]).depth == 1
    assert not cache.put(key, path, Boundary(3, [torch.zeros(100)]))  # larger than the whole budget: not stored


def test_plan_refuses_empty_requests_and_keys_on_tokens_and_settings() -> None:
    from evaluators.errors import EvaluatorError

    settings = dict(max_length=16, batch_size=4, max_batch_tokens=256, pack_tokens=1024)
    a = build_plan([([1, 2, 3], [4, 5]), ([1, 2, 3], [6])], **settings)
    assert a.key == build_plan([([1, 2, 3], [4, 5]), ([1, 2, 3], [6])], **settings).key
    assert a.key != build_plan([([1, 2, 3], [4, 5]), ([1, 2, 3], [7])], **settings).key
    assert a.key != build_plan([([1, 2, 3], [4, 5]), ([1, 2, 3], [6])], **{**settings, "batch_size": 2}).key
    assert [int(r.tokens.numel()) for r in a.rounds] == [4]  # the shared context runs once: 3 tokens, then 4 fed
    with pytest.raises(EvaluatorError, match="empty context or continuation"):
        build_plan([([1], [])], **settings)


def test_the_cache_budget_comes_from_the_environment_or_free_memory(monkeypatch) -> None:
    from evaluators.errors import EvaluatorError
    from evaluators.prefix import CACHE_ENV, default_cache_bytes

    monkeypatch.setenv(CACHE_ENV, "0")
    assert default_cache_bytes() == 0
    monkeypatch.setenv(CACHE_ENV, "64")
    assert default_cache_bytes() == 64 << 20
    monkeypatch.setenv(CACHE_ENV, "lots")
    with pytest.raises(EvaluatorError, match=CACHE_ENV):
        default_cache_bytes()
    monkeypatch.delenv(CACHE_ENV)
    assert 0 < default_cache_bytes() <= 8 << 30


def test_changed_weights_never_resume_from_boundaries_of_the_old_ones(tok) -> None:
    model = dense(tok)
    subnets = candidates(model, n=2, seed=9)
    evaluator = Evaluator(model, tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN, prefix_cache_bytes=1 << 30)
    try:
        scores_of(evaluator, subnets)
        with torch.no_grad():
            model.layers[0].ffn.up_proj.weight.mul_(1.5)  # an in-place update, as a training step makes
        skipped = evaluator.prefix_cache.layer_passes_skipped
        got = scores_of(evaluator, subnets[:1])
        assert evaluator.prefix_cache.layer_passes_skipped == skipped  # nothing reused across the change
        fresh = Evaluator(model, tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN, prefix_cache_bytes=0)
        assert got == scores_of(fresh, subnets[:1])
        fresh.close()
        evaluator.close()
        assert len(evaluator.prefix_cache) == 0  # close() drops the model's boundaries
    finally:
        evaluator.close()


def _shared_layers(a: SubnetConfig, b: SubnetConfig) -> int:
    """How many first kept layers ``a`` and ``b`` run identically (0 for another d_model)."""
    pa, pb = prefix_path(a), prefix_path(b)
    if pa[0] != pb[0]:
        return 0
    return next((i for i, (x, y) in enumerate(zip(pa[1:], pb[1:])) if x != y), min(a.n_layer, b.n_layer))


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "per-layer"])
@pytest.mark.parametrize("rank", [(0, 1, 2, 5, 3, 4), (3, 0, 5, 1, 4, 2)], ids=["late-last", "mixed"])
def test_branch_depths_are_exactly_where_two_subnetworks_of_the_space_part(tied, rank) -> None:
    config = SupernetConfig(vocab_size=50, d_model=32, n_layer=6, n_head=4, n_kv_head=2, d_ff=48)
    space = SearchSpace.from_dict({"n_layer_choices": [3, 4, 6], "n_head_choices": [4], "d_ff_choices": [24, 48],
                                   "tied": tied}, config, rank)
    members = list(space.enumerate())
    assert len(members) == space.size() >= 6
    for s in members:
        parts = {_shared_layers(s, q) for q in members if q != s} - {0}
        assert space.branch_depths(s) == parts, s.summary()
    # outside the space: no claim, every depth may be shared
    assert space.branch_depths(SubnetConfig(layers=(0, 1), n_head=(4, 4), d_ff=(48, 48), d_model=32)) is None


def test_storing_only_branch_depths_resumes_as_deep_with_identical_scores(tok) -> None:
    """A depth-only space: each candidate keeps only the boundaries where a depth choice parts
    from it, so a budget that holds a few boundaries serves every later candidate."""
    rank = (0, 1, 3, 2)  # kept layers: 2 -> (0, 1), 3 -> (0, 1, 3), 4 -> (0, 1, 2, 3): they part after 2
    model = dense(tok)
    space = SearchSpace.from_dict({"n_layer_choices": [2, 3, 4], "n_head_choices": [4], "d_ff_choices": [64, 128],
                                   "tied": True}, model.config, rank)
    subnets = [space.from_params({"n_layer": n, "d_ff": f}) for f in (128, 64) for n in (4, 3, 2)]
    assert {space.branch_depths(s) for s in subnets} == {frozenset({2})}
    plain = Evaluator(dense(tok), tok, TASKS, space=space, dtype="bf16", batch_size=4, max_length=MAX_LEN,
                      prefix_cache_bytes=0)
    expected = [scores_of(plain, [s])[0] for s in subnets]  # one at a time, in this order
    plain.close()
    probe = Evaluator(dense(tok), tok, TASKS, space=space, dtype="bf16", batch_size=4, max_length=MAX_LEN,
                      prefix_cache_bytes=1 << 30)
    scores_of(probe, subnets[:1])
    largest_boundary = max(b.nbytes for b in probe.prefix_cache._entries.values())
    probe.close()
    skipped = {}
    for branch in (True, False):
        ev = Evaluator(dense(tok), tok, TASKS, space=space, dtype="bf16", batch_size=4, max_length=MAX_LEN,
                       prefix_cache_bytes=2 * largest_boundary + 1)  # room for two boundaries: one per task
        ev.reuse_branch_depths = branch
        try:
            assert [scores_of(ev, [s])[0] for s in subnets] == expected
            skipped[branch] = ev.prefix_cache.layer_passes_skipped
            if branch:
                assert {len(key[2]) - 1 for key in ev.prefix_cache._entries} == {2}  # only depth-2 boundaries stored
        finally:
            ev.close()
    # with branch depths the depth-3 and depth-2 candidates of each width resume at layer 2; keeping
    # every depth, a two-boundary budget holds the last candidate's deepest ones, which others cannot use
    assert skipped[True] > skipped[False]
