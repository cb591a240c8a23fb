"""Every supported model family, dense and mixture-of-experts, against transformers itself.

For each family a tiny randomly initialised transformers model (built from its config,
saved with ``save_pretrained``; no download) is imported from its directory, and:
its full-model logits match transformers in fp32 (also decoding with the KV cache, past
the sliding window), importance ordering leaves them unchanged, a smaller sub-network's
view equals its extracted copy, and a uniform sub-network exports as the family's own
architecture that transformers loads with the same logits. MoE families also check that
fewer experts and a smaller top-k equal transformers with the dropped experts' router
logits masked.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.testing import assert_close

from evaluators.cost import cost_breakdown
from evaluators.latency_table import LatencyTable, TableOptions, space_variants
from evaluators.plan import build_plan
from evaluators.prefix import run_plan
from nas.errors import NasError
from nas.export.format import exportable_as_hf, hf_config_dict, hf_tensors
from nas.export.loading import load_exported
from nas.export.source import ExportSource
from nas.export.writer import export_subnet
from nas.importing import importance
from nas.importing.families import FAMILIES, check_architecture, config_from_hf
from nas.importing.hf import from_hf_model
from nas.importing.sources import load_hf
from nas.model.directory import load_supernet, save_supernet
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

V, T, WINDOW = 96, 24, 8
TOL = 1e-4
COMMON = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)
#: family -> (transformers class prefix, config overrides): sliding windows, soft-capping,
#: local RoPE, biases, clipping and dense MoE layers where the family has them.
SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("Llama", dict(attention_bias=True)),
    "mistral": ("Mistral", dict(sliding_window=WINDOW)),
    "qwen2": ("Qwen2", dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)),
    "qwen3": ("Qwen3", dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1, tie_word_embeddings=True)),
    "olmo2": ("Olmo2", dict()),
    "olmo3": ("Olmo3", dict(sliding_window=WINDOW)),
    "gemma": ("Gemma", dict()),
    "gemma2": ("Gemma2", dict(sliding_window=WINDOW, query_pre_attn_scalar=12, attn_logit_softcapping=4.0,
                              final_logit_softcapping=3.0)),
    "gemma3": ("Gemma3Text", dict(sliding_window=WINDOW, query_pre_attn_scalar=12,
                                  layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                  rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e5},
                                                   "sliding_attention": {"rope_type": "default", "rope_theta": 1e3}})),
    "mixtral": ("Mixtral", dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=WINDOW)),
    "qwen2_moe": ("Qwen2Moe", dict(MOE, shared_expert_intermediate_size=24, mlp_only_layers=[1])),
    "qwen3_moe": ("Qwen3Moe", dict(MOE, norm_topk_prob=True, use_sliding_window=True, sliding_window=WINDOW)),
    "olmoe": ("Olmoe", dict(num_experts=4, num_experts_per_tok=2, clip_qkv=2.0)),
}
MOE_FAMILIES = [name for name in SPECS if FAMILIES[name].moe]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add contention
    yield
    torch.set_num_threads(threads)


def _tokenizer() -> Any:
    vocab = {f"<{i}>": i for i in range(V)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<0>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<0>")


def tiny_hf(name: str, seed: int = 0) -> Any:
    """A random fp32 transformers model of family ``name``, weights large enough to matter."""
    prefix, overrides = SPECS[name]
    config = getattr(transformers, f"{prefix}Config")(**{**COMMON, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix.removesuffix('Text')}ForCausalLM")(config)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.15)
    return model.eval()


_IMPORTED: dict[str, tuple[Any, Supernet]] = {}


def imported(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Supernet]:
    """(transformers model loaded back from its directory, our supernet imported via ``hf:DIR``)."""
    if name not in _IMPORTED:
        folder = tmp_path_factory.mktemp(name)
        tiny_hf(name).save_pretrained(folder)
        _tokenizer().save_pretrained(folder)
        hf, _tok, provenance = load_hf(f"hf:{folder}")
        assert provenance["format"] == "hf" and check_architecture(provenance["architecture"], "x") == name
        model = from_hf_model(hf)
        assert model.config.architecture == name
        _IMPORTED[name] = (hf, model)
    return _IMPORTED[name]


def ids(batch: int = 2, length: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def smaller(model: Supernet, *, uniform: bool) -> SubnetConfig:
    """Layers 0 and 2, one KV group (all heads for OLMoE, whose config ties its q/k norms to
    hidden_size), half the FFN (experts: 2 kept, top-1)."""
    cfg = model.config
    heads = cfg.n_head if cfg.architecture == "olmoe" else cfg.q_per_kv
    layers = (0, 2)
    moe = [cfg.layer(i).n_expert > 0 for i in layers]
    d_ff = tuple(cfg.layer(i).d_ff // 2 for i in layers)
    return SubnetConfig(
        layers=layers, n_head=(heads,) * 2, d_ff=d_ff if uniform else (d_ff[0], cfg.layer(2).d_ff),
        d_model=cfg.d_model, n_expert=tuple(2 if m else 0 for m in moe) if any(moe) else (),
        top_k=tuple((1 if uniform else 2) if m else 0 for m in moe) if any(moe) else (),
    )


# ------------------------------------------------------------------- parity
@pytest.mark.parametrize("name", list(SPECS))
def test_full_model_logits_match_transformers(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    hf, model = imported(name, tmp_path_factory)
    x = ids()
    with torch.no_grad():
        diff = (hf(x).logits - model(x)).abs().max().item()
    assert diff <= TOL, f"{name}: max |logit diff| {diff:.2e}"
    assert model.num_params() == sum(p.numel() for p in hf.parameters())  # the one formula, against real tensors
    if model.config.sliding_window:
        assert T > model.config.sliding_window  # the comparison runs past the window


@pytest.mark.parametrize("name", list(SPECS))
def test_kv_cached_decoding_matches_transformers_past_the_window(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    hf, model = imported(name, tmp_path_factory)
    x = ids()
    cache = model.new_cache()
    with torch.no_grad():
        reference = hf(x).logits
        parts = [model(x[:, :5], cache=cache), model(x[:, 5:12], cache=cache)]  # a prefill, then a chunk after it
        parts += [model(x[:, t : t + 1], cache=cache) for t in range(12, T)]  # then one token at a time
    assert (torch.cat(parts, dim=1) - reference).abs().max().item() <= TOL


@pytest.mark.parametrize("name", list(SPECS))
def test_importance_ordering_leaves_the_full_model_unchanged(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    _hf, source = imported(name, tmp_path_factory)
    model = copy.deepcopy(source)
    x = ids()
    with torch.no_grad():
        before = model(x).clone()
    scores = importance.measure(model, ids(4, 16, seed=7), dtype=torch.float32)
    importance.apply(model, scores)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    with torch.no_grad():
        assert_close(model(x), before, rtol=1e-5, atol=TOL)
    channels = importance.measure(model, ids(4, 16, seed=7), dtype=torch.float32).channels
    assert torch.all(channels[:-1] >= channels[1:] - 1e-5)  # d_model's prefixes keep the loudest channels


@pytest.mark.parametrize("name", list(SPECS))
def test_smaller_view_equals_its_extracted_copy(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    _hf, model = imported(name, tmp_path_factory)
    x = ids()
    for sub in (smaller(model, uniform=True), smaller(model, uniform=False)):
        dense = model.extract(sub)
        assert dense.num_params() == model.num_params(sub) == sum(p.numel() for p in dense.parameters())
        with torch.no_grad():
            assert_close(dense(x), model(x, sub), rtol=0, atol=0)
            cache = dense.new_cache()
            steps = [dense(x[:, :10], cache=cache)] + [dense(x[:, t : t + 1], cache=cache) for t in range(10, T)]
            assert_close(torch.cat(steps, dim=1), model(x, sub), rtol=1e-5, atol=TOL)


@pytest.mark.parametrize("name", list(SPECS))
def test_uniform_export_loads_in_transformers_as_its_own_architecture(name: str, tmp_path: Path,
                                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    _hf, model = imported(name, tmp_path_factory)
    sub = smaller(model, uniform=True)
    dense = model.extract(sub)
    assert exportable_as_hf(dense.config)
    assert not exportable_as_hf(model.extract(smaller(model, uniform=False)).config)
    save_file(hf_tensors(dense), str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(hf_config_dict(dense.config)))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert type(hf).__name__ == FAMILIES[name].model_class
    x = ids()
    with torch.no_grad():
        assert (hf(x).logits - model(x, sub)).abs().max().item() <= TOL


# ---------------------------------------------------------------------- MoE
def _mask_router(hf: Any, n_expert: int, top_k: int) -> None:
    """Make every router of ``hf`` see only its first ``n_expert`` experts (logits of the rest
    at -inf) and route to ``top_k``: the reference for a sub-network with fewer experts."""
    for layer in hf.model.layers:
        gate = getattr(layer.mlp, "gate", None)
        if gate is None or not hasattr(gate, "top_k"):
            continue  # a dense layer

        def forward(hidden: torch.Tensor, gate: Any = gate) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            hidden = hidden.reshape(-1, gate.hidden_dim)
            logits = torch.nn.functional.linear(hidden, gate.weight)
            logits[:, n_expert:] = float("-inf")
            probs = logits.float().softmax(dim=-1)
            top, index = probs.topk(top_k, dim=-1)
            if getattr(gate, "norm_topk_prob", True):
                top = top / top.sum(dim=-1, keepdim=True)
            return logits, top.to(logits.dtype), index

        gate.forward = forward


@pytest.mark.parametrize("name", MOE_FAMILIES)
def test_fewer_experts_and_smaller_top_k_match_a_masked_router(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    _hf, model = imported(name, tmp_path_factory)
    full = model.full_subnet()
    x = ids()
    for n_expert, top_k in ((4, 2), (3, 2), (2, 1), (4, 1)):
        sub = SubnetConfig(layers=full.layers, n_head=full.n_head, d_ff=full.d_ff, d_model=full.d_model,
                           n_expert=tuple(n_expert if e else 0 for e in full.n_expert),
                           top_k=tuple(top_k if e else 0 for e in full.n_expert))
        reference = tiny_hf(name)  # the same seed: the same weights as the imported model
        _mask_router(reference, n_expert, top_k)
        with torch.no_grad():
            diff = (reference(x).logits - model(x, sub)).abs().max().item()
        assert diff <= TOL, f"{name}: {n_expert} experts top-{top_k}: max |logit diff| {diff:.2e}"


@pytest.mark.parametrize("name", MOE_FAMILIES)
def test_experts_are_ranked_and_permuted_with_their_router_rows(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    _hf, source = imported(name, tmp_path_factory)
    model = copy.deepcopy(source)
    calib = ids(4, 16, seed=7)
    importance.apply(model, importance.measure(model, calib, dtype=torch.float32))
    again = importance.measure(model, calib, dtype=torch.float32)
    for i, scores in enumerate(again.experts):
        if scores is None:
            continue
        assert torch.all(scores[:-1] >= scores[1:] - 1e-6)  # "keep the first n experts" keeps the best n
        neurons = again.expert_ffn[i]
        assert torch.all(neurons[:, :-1] >= neurons[:, 1:] - 1e-6)  # and each expert's best neurons first


def test_a_qwen3_moe_sub_network_exports_through_the_writer_and_loads_back(tmp_path: Path,
                                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    _hf, model = imported("qwen3_moe", tmp_path_factory)
    digest = save_supernet(model, tmp_path / "supernet")
    assert load_supernet(tmp_path / "supernet", verify=True).content_hash == digest
    sub = smaller(model, uniform=True)
    source = ExportSource(study="toy", trial=1, subnet=sub, supernet_hash=digest, supernet_path=str(tmp_path / "supernet"),
                          fidelity="full", spec={})
    result = export_subnet(source, tmp_path / "export")
    assert result.format == "hf-llama" and result.params == model.num_params(sub)
    assert "Qwen3MoeForCausalLM" in (tmp_path / "export" / "README.md").read_text()
    x = ids()
    with torch.no_grad():
        expected = model(x, sub)
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).eval()
        assert (hf(x).logits - expected).abs().max().item() <= TOL
        assert_close(load_exported(tmp_path / "export")(x), expected, rtol=0, atol=0)


# ------------------------------------------------------------------- details
@pytest.mark.parametrize("name", list(SPECS))
def test_packed_scoring_plan_matches_one_forward_per_request(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The evaluators' packed rounds (several sequences in one row, attention per sequence,
    sliding windows and soft-caps included) give each request's log-likelihood and greedy
    flag as running it alone would, for the full model and a smaller sub-network."""
    _hf, model = imported(name, tmp_path_factory)
    gen = torch.Generator().manual_seed(7)
    requests = []
    for i in range(14):
        ctx = torch.randint(3, V, (int(torch.randint(2, 20, (1,), generator=gen)),), generator=gen).tolist()
        for j in range(1 + i % 3):  # contexts shared by up to three continuations
            cont = torch.randint(3, V, (1 + (i + j) % 6,), generator=gen).tolist()
            requests.append((ctx, cont))
    # small rounds and batches: several rounds, padded context batches, chunks of several lengths
    plan = build_plan(requests, max_length=128, batch_size=3, max_batch_tokens=40, pack_tokens=60)
    assert len(plan.rounds) > 2 and plan.n_tokens == sum(r.n_tokens for r in plan.rounds)
    for subnet in (model.full_subnet(), smaller(model, uniform=False)):
        got, counts = run_plan(model, subnet, plan, logprobs="hflm", softmax_dtype=torch.float32)
        assert counts["n_forward"] == len(plan.rounds)
        with torch.no_grad():
            for (ctx, cont), (ll, greedy) in zip(requests, got, strict=True):
                logits = model(torch.tensor([ctx + cont]), subnet)[0, len(ctx) - 1 : -1].float()
                logp = logits.log_softmax(-1)
                target = torch.tensor(cont)
                assert ll == pytest.approx(float(logp.gather(1, target[:, None]).sum()), abs=TOL)
                assert greedy == bool((logits.argmax(-1) == target).all())


def test_left_padding_with_sliding_windows_matches_unpadded(tmp_path_factory: pytest.TempPathFactory) -> None:
    _hf, model = imported("gemma3", tmp_path_factory)
    x = ids(1, 20)
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), x], dim=1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 20, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert_close(model(padded, attention_mask=mask)[:, 5:], model(x), rtol=1e-5, atol=TOL)


def test_family_features_round_trip_through_a_supernet_directory(tmp_path: Path,
                                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    _hf, model = imported("gemma3", tmp_path_factory)
    save_supernet(model, tmp_path / "g")
    saved = json.loads((tmp_path / "g" / "config.json").read_text())
    assert saved["norm_placement"] == "sandwich" and saved["sliding_layers"] == [0, 2] and saved["qk_norm"] == "head"
    loaded = load_supernet(tmp_path / "g", verify=True).model
    x = ids()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_unsupported_architectures_get_one_clear_error() -> None:
    with pytest.raises(NasError, match=r"architecture 'gpt2', which is not supported; supported: \[.*'gemma3_text'.*'qwen3_moe'"):
        check_architecture("gpt2", "the model")
    with pytest.raises(NasError, match="multimodal Gemma 3"):
        config_from_hf(transformers.Gemma3Config())


def test_sliding_layers_cost_and_time_what_their_window_holds(tmp_path_factory: pytest.TempPathFactory) -> None:
    _hf, model = imported("gemma3", tmp_path_factory)
    cfg = model.config  # layers 0 and 2 slide over 8 positions, layer 1 is global
    full = model.full_subnet()
    short, long = cost_breakdown(cfg, full, context_len=8), cost_breakdown(cfg, full, context_len=100)
    kv_per_position = 2 * cfg.n_kv_head * cfg.head_dim
    assert short.kv_elements == 3 * 8 * kv_per_position
    assert long.kv_elements == (100 + 2 * 8) * kv_per_position
    assert long.attention_flops_per_token == 4 * cfg.n_head * cfg.head_dim * (100 + 2 * 8)
    space = SearchSpace.from_dict({"n_layer_choices": [2, 3], "d_ff_choices": [24, 48]}, cfg, model.layer_rank)
    table = LatencyTable.build(model, space, prompt_len=8, threads=1, calibrate_on=[],
                               options=TableOptions(repeats=1, warmup=0, max_blocks=1))
    assert sorted(table.layer_ms) == sorted(v.key for v in space_variants(space))  # the blocks of this family ran
    assert table.predict(space.largest()) > 0 and table.predict(space.smallest()) > 0


class _BosTokenizer:
    """Word ids, with BOS (id 1) in front by default, as Gemma's tokenizer does."""

    bos_token_id = 1

    def __init__(self, adds_bos: bool) -> None:
        self.adds_bos = adds_bos

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [3 + len(word) for word in text.split()]
        return {"input_ids": ([1] if add_special_tokens and self.adds_bos else []) + ids}


def test_calibration_rows_start_with_bos_only_where_the_tokenizer_adds_it() -> None:
    text = "calibration text with words of several lengths " * 40
    with_bos = importance.tokenize_for_calibration(_BosTokenizer(True), text, n_tokens=64, seq_len=16)
    plain = importance.tokenize_for_calibration(_BosTokenizer(False), text, n_tokens=64, seq_len=16)
    assert with_bos.shape == plain.shape == (4, 16)
    assert torch.all(with_bos[:, 0] == 1) and not torch.any(plain == 1)
    assert torch.equal(with_bos[0, 1:], plain.reshape(-1)[:15])  # the same text, one token shorter per row
