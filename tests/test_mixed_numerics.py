"""Mixed numerics for bf16 scoring: the residual stream and the decisive logits in fp32.

A bf16 model scored with ``numerics: mixed`` runs every matmul in bf16 but keeps its residual
stream, the stream's adds and norms in fp32, and takes each target's logit and the top of each
distribution in fp32. The invariants: the stream really is fp32 in every norm placement; the
refined log-probability is the float64 answer on the logits it recomputes, and much closer to
it than the bf16 logits' own; where bf16 rounding of the stream is what loses the signal,
mixed keeps it; scores are keyed apart from all-bf16 ones (never served for each other, in the
evaluation cache or as prefix-cache streams); prefix reuse stays bit-identical; an fp32 model
is unchanged; a study resolves ``auto`` once and a study stored before the setting keeps
all-bf16 scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import storage
from evaluators import Evaluator, EvaluatorError, Fidelity, SubnetLM
from evaluators.prefix import exact_logprobs, refined_logprobs
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.directory import LoadedSupernet
from nas.model.space import SearchSpace
from nas.model.supernet import Supernet
from nas.search.spec import parse_spec, spec_from_json
from nas.search.study import open_search

from _search import heldout_scorer, make_spec, save_tiny_supernet
from _tiny import tiny_llama, tiny_supernet, tiny_tokenizer

MAX_LEN = 256
TASKS = ["arc_easy", "piqa"]
FIDELITY = Fidelity(limit=6, seed=2)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _model(placement: str = "pre", offset: float = 0.0, embed_scale: float = 0.0, *, n_layer: int = 6,
           embed_std: float = 0.2, std: float = 0.2, seed: int = 0) -> Supernet:
    config = SupernetConfig(vocab_size=300, d_model=64, n_layer=n_layer, n_head=4, n_kv_head=2, d_ff=128, max_seq_len=64,
                            norm_placement=placement, norm_offset=offset, embed_scale=embed_scale)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Supernet(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.endswith("norm"):
                    p.normal_(0.0, embed_std if name.startswith("embed") else std)
    return model.eval()


def _bf16_copy(model: Supernet) -> Supernet:
    copy = Supernet(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.to(torch.bfloat16).eval()


@pytest.mark.parametrize(("placement", "offset", "scale"), [("pre", 0.0, 0.0), ("post", 0.0, 0.0), ("sandwich", 1.0, 8.0)],
                         ids=["llama", "olmo2", "gemma"])
def test_the_stream_is_fp32_over_bf16_weights_in_every_norm_placement(placement, offset, scale) -> None:
    model = _model(placement, offset, scale)
    bf16 = _bf16_copy(model)
    tokens = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = bf16.run(tokens, return_hidden=True)
        mixed = bf16.run(tokens, return_hidden=True, residual_dtype=torch.float32)
        reference = model(tokens).double()
    assert all(h.dtype == torch.bfloat16 for h in plain.hidden)
    assert all(h.dtype == torch.float32 for h in mixed.hidden)  # entering every layer, and leaving the last
    assert mixed.logits.dtype == torch.bfloat16  # the head still runs in bf16
    # both are bf16 computations of the fp32 model: within bf16's error of it, and not the same numbers
    for logits in (plain.logits, mixed.logits):
        assert (logits.double() - reference).abs().max() < 0.05 * reference.abs().max()
    assert not torch.equal(plain.hidden[-1].float(), mixed.hidden[-1])
    with pytest.raises(NasError, match="residual_dtype must be torch.float32"):
        bf16.embed_tokens(tokens, bf16.full_subnet(), residual_dtype=torch.float64)


def test_mixed_keeps_small_updates_that_a_bf16_stream_rounds_away() -> None:
    # a large residual stream (big embeddings) with small per-layer updates: each bf16 add
    # rounds the update to the stream's 8-bit mantissa, so the updates are mostly lost; an fp32
    # stream keeps them, and the error left is the bf16 matmuls' own
    model = _model(n_layer=8, embed_std=8.0, std=0.02, seed=3)
    bf16 = _bf16_copy(model)
    tokens = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reference = model.run(tokens, return_hidden=True).hidden
        plain = bf16.run(tokens, return_hidden=True).hidden
        mixed = bf16.run(tokens, return_hidden=True, residual_dtype=torch.float32).hidden

    def update_error(hidden: list[torch.Tensor]) -> float:  # what the layers added, against fp32's
        want = (reference[-1] - reference[0]).double()
        got = (hidden[-1].float() - hidden[0].float()).double()
        return float((got - want).norm() / want.norm())

    assert update_error(mixed) < 0.25 * update_error(plain)
    assert update_error(mixed) < 0.05


def test_refined_logprobs_are_the_float64_answer_on_the_logits_they_recompute() -> None:
    gen = torch.Generator().manual_seed(0)
    R, V, D = 24, 500, 32
    h = torch.randn(R, D, generator=gen)
    weight = (torch.randn(V, D, generator=gen) * 0.7).to(torch.bfloat16)
    true = h.double() @ weight.double().T  # (R, V): the head's weights with every product in float64
    low = (h.to(torch.bfloat16) @ weight.T)[:, None]  # (R, 1, V) as a bf16 head computes them
    order = true.argsort(dim=1, descending=True)
    # half the targets are in each row's top, half far down the tail
    target = torch.where(torch.arange(R) % 2 == 0, order[:, 0], order[:, 200])[:, None]
    truth = torch.log_softmax(true, dim=-1).gather(1, target)  # (R, 1)
    refined, greedy = refined_logprobs(low, target, lambda index: (weight[index].double() @ h.double()[..., None])[..., 0].float())
    plain, _ = exact_logprobs(low, target)
    err_refined = (refined.double() - truth).abs()
    err_plain = (plain.double() - truth).abs()
    # what is left is the tail's (a tenth to a fifth of each row's mass here) bf16 rounding
    assert err_refined.max() < 5e-3
    assert err_refined.sum() < 0.1 * err_plain.sum()
    assert greedy[:, 0].tolist() == (torch.arange(R) % 2 == 0).tolist()  # the fp32 argmax, as the float64 one
    # a target tied with the maximum is greedy only as the first index at it (torch's argmax)
    tied = torch.zeros(1, 1, 4, dtype=torch.bfloat16)
    _, first = refined_logprobs(tied, torch.tensor([[0]]), lambda index: torch.zeros(index.shape))
    _, later = refined_logprobs(tied, torch.tensor([[2]]), lambda index: torch.zeros(index.shape))
    assert first.item() and not later.item()


def test_mixed_scores_are_keyed_apart_and_prefix_reuse_stays_bit_identical(tok) -> None:
    def evaluator(numerics: str, dtype: str = "bf16", cache: int = 0) -> Evaluator:
        return Evaluator(tiny_supernet(tiny_llama(tok, n_layer=4, seed=1)), tok, TASKS, dtype=dtype, batch_size=4,
                         max_length=MAX_LEN, prefix_cache_bytes=cache, numerics=numerics)

    model_ev, mixed_ev = evaluator("model"), evaluator("mixed")
    reuse = evaluator("mixed", cache=1 << 30)
    space = SearchSpace.default(mixed_ev.model.config, mixed_ev.model.layer_rank)
    subnets = [space.largest(), space.smallest(), space.largest()]
    try:
        assert json.loads(mixed_ev.settings["arc_easy"])["numerics"] == "mixed"
        assert "numerics" not in json.loads(model_ev.settings["arc_easy"])  # the key all-bf16 scores always had
        want = [m.scores for m in mixed_ev.evaluate_many(subnets, FIDELITY)]
        model_ev.evaluate_many(subnets, FIDELITY)
        lls = {ev: [inst.resps[0][0] for t in TASKS for d in ev.subset(t, FIDELITY) for inst in ev.instances(t, d)]
               for ev in (model_ev, mixed_ev)}  # of the last candidate scored
        assert lls[model_ev] != lls[mixed_ev]  # the setting is applied
        assert [m.scores for m in reuse.evaluate_many(subnets, FIDELITY)] == want  # bit for bit
        assert reuse.prefix_cache.layer_passes_skipped > 0
    finally:
        for ev in (model_ev, mixed_ev, reuse):
            ev.close()
    # an fp32 model has no bf16 to mix: one key, the same scores
    fp32 = [evaluator(n, dtype="fp32") for n in ("mixed", "model")]
    try:
        assert fp32[0].settings == fp32[1].settings
        assert fp32[0].evaluate(subnets[1], FIDELITY).scores == fp32[1].evaluate(subnets[1], FIDELITY).scores
    finally:
        for ev in fp32:
            ev.close()
    with pytest.raises(EvaluatorError, match=r"numerics='fp64' is not one of mixed, model"):
        SubnetLM(tiny_supernet(tiny_llama(tok, n_layer=2, seed=1)), "full", tokenizer=tok, numerics="fp64")


def test_a_model_numerics_stream_is_never_resumed_as_a_mixed_one(tok) -> None:
    model = tiny_supernet(tiny_llama(tok, n_layer=4, seed=1)).to(torch.bfloat16)
    space = SearchSpace.default(model.config, model.layer_rank)
    shared = Evaluator(model, tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN, prefix_cache_bytes=1 << 30,
                       numerics="model")
    mixed = Evaluator(model, tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN, numerics="mixed")
    mixed.prefix_cache = shared.prefix_cache  # one process-wide cache, as workers of a study share
    try:
        shared.evaluate(space.largest(), FIDELITY)
        skipped = shared.prefix_cache.layer_passes_skipped
        mixed.evaluate(space.largest(), FIDELITY)
        assert shared.prefix_cache.layer_passes_skipped == skipped  # nothing resumed across numerics
    finally:
        shared.close()
        mixed.close()


def test_a_study_resolves_auto_once_and_a_study_stored_before_it_keeps_all_bf16(tmp_path: Path) -> None:
    tiny: LoadedSupernet = save_tiny_supernet(tmp_path / "sn")
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    spec = make_spec(tiny.path, url, budget={"n_trials": 1})
    assert spec.numerics == "auto"
    search = open_search(spec, scorers=[heldout_scorer(tiny)], loaded=tiny)
    assert search.setup.spec.numerics == "mixed"
    search.optimize()
    db = search.db
    assert storage.get_study(db, "s").spec["numerics"] == "mixed"
    # stored before the setting existed: the study keeps all-bf16 numerics on resume
    older = {k: v for k, v in storage.get_study(db, "s").spec.items() if k != "numerics"}
    storage.update_study_spec(db, "s", older)
    assert spec_from_json(older).numerics == "model"
    again = open_search(make_spec(tiny.path, url, budget={"n_trials": 2}), scorers=[heldout_scorer(tiny)], loaded=tiny)
    assert again.setup.spec.numerics == "model"
    again.db.close()
    with pytest.raises(NasError, match="already exists with different numerics"):  # scores that would not compare
        open_search(make_spec(tiny.path, url, numerics="mixed"), scorers=[heldout_scorer(tiny)], loaded=tiny)
    db.close()
    with pytest.raises(NasError, match="numerics"):
        parse_spec({"name": "s", "supernet": "x", "tasks": TASKS, "budget": 1, "numerics": "fp64"}, source="s.yaml")


def test_a_spec_sets_its_scorers_numerics(tmp_path: Path, tok) -> None:
    from evaluators.scorer import build_scorers
    from nas.model.directory import load_supernet, save_supernet

    out = tmp_path / "tiny"
    save_supernet(tiny_supernet(tiny_llama(tok, n_layer=2, seed=7)), out, tokenizer=tok)
    for numerics, expected in (("auto", "mixed"), ("mixed", "mixed"), ("model", "model")):
        spec = parse_spec({"name": "s", "supernet": str(out), "tasks": TASKS, "budget": 1, "dtype": "bf16",
                           "numerics": numerics}, source="study.yaml")
        (scorer,) = build_scorers(spec, load_supernet(out, dtype="bf16"))
        assert scorer.evaluator.options.numerics == expected
        assert ('"numerics":"mixed"' in scorer.settings["arc_easy"]) == (expected == "mixed")
        scorer.evaluator.close()
