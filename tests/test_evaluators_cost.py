"""Cost model: analytic params/FLOPs/memory against the model itself and torch's flop
counter, measured latency, the latency lookup table, and bad input."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from evaluators.cost import analytic_costs, cost_breakdown, costs, resolve_dtype
from evaluators.errors import EvaluatorError
from evaluators.latency import device_fingerprint, measure_latency
from evaluators.latency_table import LatencyTable, TableOptions, space_variants, subnet_variants
from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

DENSE = SupernetConfig(vocab_size=97, d_model=48, n_layer=4, n_head=6, n_kv_head=2, d_ff=64, qkv_bias=True)
MOE = SupernetConfig(
    vocab_size=97, d_model=48, n_layer=4, n_head=4, n_kv_head=2, d_ff=32,
    n_expert=4, top_k=2, moe_layers=(1, 3), shared_expert=True, tie_embeddings=True,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run thousands of small ops; on a shared 2-core CPU two intra-op threads
    mostly wait for each other, so these tests use one (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(config: SupernetConfig) -> Supernet:
    torch.manual_seed(0)
    return Supernet(config).eval()


def _subnets(config: SupernetConfig) -> list[SubnetConfig]:
    space = SearchSpace.default(config)
    rng = random.Random(0)
    out = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(4)]
    # a narrower embedding than the supernet's (not in the default space)
    big = space.largest()
    out.append(SubnetConfig(big.layers[:3], big.n_head[:3], big.d_ff[:3], d_model=32,
                            n_expert=big.n_expert[:3], top_k=big.top_k[:3]))
    return out


def _counted_flops(model: Supernet, tokens: torch.Tensor, **kw: object) -> int:
    # torch's counter has no formula for the CPU flash-attention kernel; the math kernel
    # runs attention as plain bmm's, which it counts (without causal skipping).
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens, **kw)
    return counter.get_total_flops()


# ------------------------------------------------------------------ params
@pytest.mark.parametrize("config", [DENSE, MOE], ids=["dense", "moe"])
def test_params_match_supernet_and_extracted_model(config: SupernetConfig) -> None:
    model = _model(config)
    for subnet in _subnets(config):
        c = analytic_costs(config, subnet)
        extracted = model.extract(subnet)
        assert c["params"] == model.num_params(subnet) == sum(p.numel() for p in extracted.parameters())
        assert c["non_embedding_params"] == model.num_params(subnet, embedding=False)
        assert c["params"] - c["non_embedding_params"] == c["embedding_params"]
        assert c["weight_memory_bytes"] == 2 * c["params"]
        assert all(v.method == "analytic" for v in c.values.values())


def test_active_params_count_only_top_k_experts() -> None:
    space = SearchSpace.default(MOE)
    subnet = space.largest()
    c = analytic_costs(MOE, subnet)
    # two MoE layers keep 4 experts and route each token to 2: 2 idle experts each
    idle = 2 * 2 * 3 * MOE.d_model * MOE.d_ff
    assert c["active_params"] == c["non_embedding_params"] - idle
    dense_subnet = _subnets(DENSE)[0]
    d = analytic_costs(DENSE, dense_subnet)
    assert d["active_params"] == d["non_embedding_params"]


# ------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("config", [DENSE, MOE], ids=["dense", "moe"])
def test_flops_match_torch_flop_counter(config: SupernetConfig) -> None:
    """Prefill of T tokens / T and one decode step at position T both equal the analytic
    figure. For MoE the forward routes for real; every token still runs exactly top_k
    distinct experts, so counted expert FLOPs equal the top_k-active figure."""
    model = _model(config)
    T = 16
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, config.vocab_size, (2, T), generator=gen)
    for subnet in _subnets(config):
        analytic = analytic_costs(config, subnet, context_len=T)["flops_per_token"]
        extracted = model.extract(subnet).eval()
        prefill = _counted_flops(extracted, tokens) / tokens.numel()
        assert prefill == pytest.approx(analytic, rel=0.02)
        cache = extracted.new_cache()
        with torch.inference_mode():
            extracted(tokens[:, : T - 1], cache=cache)
        decode = _counted_flops(extracted, tokens[:, T - 1:], cache=cache) / tokens.shape[0]
        assert decode == pytest.approx(analytic, rel=0.02)


def test_flops_grow_with_context_by_the_attention_term() -> None:
    subnet = _subnets(DENSE)[0]
    a = cost_breakdown(DENSE, subnet, context_len=100)
    b = cost_breakdown(DENSE, subnet, context_len=200)
    per_position = sum(4 * h * DENSE.head_dim for h in subnet.n_head)
    assert b.flops_per_token - a.flops_per_token == 100 * per_position
    assert a.flops_per_token == 2 * a.matmul_params_per_token + 100 * per_position


# ---------------------------------------------------------------- KV cache
@pytest.mark.parametrize("config", [DENSE, MOE], ids=["dense", "moe"])
def test_kv_cache_bytes_equal_the_real_cache(config: SupernetConfig) -> None:
    model = _model(config).to(torch.bfloat16)
    for subnet in _subnets(config)[:3]:
        batch, context = 3, 11
        cache = model.new_cache(subnet)
        with torch.inference_mode():
            model(torch.zeros(batch, context, dtype=torch.long), subnet, cache=cache)
        real = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
        predicted = analytic_costs(config, subnet, context_len=context, batch=batch)["kv_cache_bytes"]
        assert predicted == real
        fp32 = analytic_costs(config, subnet, context_len=context, batch=batch, dtype="fp32")["kv_cache_bytes"]
        assert fp32 == 2 * predicted
        q = config.q_per_kv
        hand = 2 * batch * context * sum(h // q for h in subnet.n_head) * config.head_dim * 2
        assert predicted == hand


# ------------------------------------------------------------ measurement
def test_fingerprint_is_stable_and_names_the_setup() -> None:
    a = device_fingerprint("cpu", "bf16", threads=1)
    assert a == device_fingerprint("cpu", torch.bfloat16, threads=1)
    assert "threads=1" in a and torch.__version__ in a and a.endswith("bf16")
    assert device_fingerprint("cpu", "fp32", threads=1) != a


def test_measure_latency_returns_positive_figures_and_restores_threads() -> None:
    model = _model(DENSE)
    torch.set_num_threads(2)
    c = measure_latency(model, _subnets(DENSE)[1], prompt_len=8, decode_tokens=4, repeats=2, warmup=1, threads=1)
    assert torch.get_num_threads() == 2
    for name in ("prefill_latency_ms", "decode_latency_ms", "decode_tokens_per_s"):
        assert math.isfinite(c[name]) and c[name] > 0
        assert c.values[name].method == "measured"
    assert c.device == device_fingerprint("cpu", "bf16", threads=1)
    assert len(c.context["prefill_ms_samples"]) == 2
    cpu = measure_latency(model, _subnets(DENSE)[1], prompt_len=8, decode_tokens=0, repeats=1, warmup=0,
                          threads=1, clock="process")
    assert cpu["prefill_latency_ms"] > 0 and cpu.context["clock"] == "process"
    assert "decode_tokens_per_s" not in cpu.values


def test_latency_table_predicts_and_round_trips(tmp_path) -> None:
    config = SupernetConfig(vocab_size=512, d_model=64, n_layer=4, n_head=4, n_kv_head=2, d_ff=128)
    model = _model(config).to(torch.bfloat16)
    space = SearchSpace.from_dict({"d_ff_choices": [64, 128], "n_layer_choices": [2, 4]}, config)
    options = TableOptions(repeats=3, warmup=1, max_blocks=2)
    table = LatencyTable.build(model, space, prompt_len=16, threads=1, clock="process", options=options)
    assert set(table.layer_ms) == {v.key for v in space_variants(space)} and len(table.layer_ms) == 4
    assert len(table.calibration) == 4  # largest, smallest, two seeded samples
    for subnet in [space.largest(), space.smallest()]:
        assert {v.key for v in subnet_variants(config, subnet)} <= set(table.layer_ms)
        predicted = table.predict(subnet)
        measured = measure_latency(model, subnet, prompt_len=16, decode_tokens=0, repeats=3, warmup=1, threads=1,
                                   clock="process")
        assert 0.2 < predicted / measured["prefill_latency_ms"] < 5
    path = tmp_path / "latency.json"
    table.save(path)
    other = LatencyTable.from_dict({**table.to_dict(), "fingerprint": "cpu:other"})
    other.save(path)
    assert set(json.loads(path.read_text())["tables"]) == {table.fingerprint, "cpu:other"}
    loaded = LatencyTable.load(path, table.fingerprint, config=config)
    assert loaded.predict(space.largest()) == table.predict(space.largest())
    assert loaded.clock == "process" and loaded.calibration == table.calibration
    merged = costs(config, space.largest(), table=loaded)
    assert merged.values["predicted_latency_ms"].method == "predicted"
    assert merged.device == table.fingerprint and merged["params"] == model.num_params(space.largest())
    with pytest.raises(EvaluatorError, match="no table for device"):
        LatencyTable.load(path, "cpu:missing")
    with pytest.raises(EvaluatorError, match="another supernet config"):
        LatencyTable.load(path, table.fingerprint, config=DENSE)
    outside = SubnetConfig(layers=(0, 1), n_head=(2, 2), d_ff=(100, 100), d_model=64)
    with pytest.raises(EvaluatorError, match="no entry for layer variant"):
        table.predict(outside)


def test_latency_table_covers_moe_and_dense_layers_of_a_moe_space() -> None:
    model = _model(MOE).to(torch.bfloat16)
    space = SearchSpace.from_dict({"n_head_choices": [4], "d_ff_choices": [32], "n_expert_choices": [2, 4]}, MOE)
    table = LatencyTable.build(model, space, prompt_len=8, threads=1, calibrate_on=[],
                               options=TableOptions(repeats=1, warmup=0, max_blocks=1))
    assert sorted(table.layer_ms) == sorted(v.key for v in space_variants(space))
    assert {k.split(".e")[1] for k in table.layer_ms} == {"0.k0", "2.k1", "2.k2", "4.k1", "4.k2"}
    for subnet in (space.largest(), space.smallest()):
        assert table.predict(subnet) > 0 and (table.scale, table.offset_ms) == (1.0, 0.0)


# --------------------------------------------------------------- bad input
def test_subnet_that_does_not_fit_is_a_clear_error() -> None:
    too_wide = SubnetConfig(layers=(0, 1), n_head=(6, 6), d_ff=(999, 64), d_model=48)
    with pytest.raises(EvaluatorError, match="does not fit the supernet.*d_ff=999"):
        analytic_costs(DENSE, too_wide)
    too_deep = SubnetConfig(layers=(0, 9), n_head=(6, 6), d_ff=(64, 64), d_model=48)
    with pytest.raises(EvaluatorError, match="layer 9 does not exist"):
        costs(DENSE, too_deep)
    with pytest.raises(EvaluatorError, match="does not fit"):
        measure_latency(_model(DENSE), too_wide, prompt_len=4, decode_tokens=0, repeats=1, warmup=0)
    dense_in_moe = SubnetConfig(layers=(0, 1), n_head=(4, 4), d_ff=(32, 32), d_model=48)
    with pytest.raises(EvaluatorError, match="mixture-of-experts"):
        analytic_costs(MOE, dense_in_moe)


def test_dtypes_and_sizes_are_checked() -> None:
    subnet = _subnets(DENSE)[0]
    for bad in ("fp16", "float16", torch.float16):
        with pytest.raises(EvaluatorError, match="fp16 is unusably slow"):
            analytic_costs(DENSE, subnet, dtype=bad)
    with pytest.raises(EvaluatorError, match="'int4' is not supported"):
        resolve_dtype("int4")
    with pytest.raises(EvaluatorError, match="context_len must be a positive integer"):
        analytic_costs(DENSE, subnet, context_len=0)
    with pytest.raises(EvaluatorError, match="fp16"):
        measure_latency(_model(DENSE), subnet, dtype="fp16")
    with pytest.raises(EvaluatorError, match="not a torch device"):
        device_fingerprint("tpu-9000")
    with pytest.raises(EvaluatorError, match="clock 'sundial'"):
        measure_latency(_model(DENSE), subnet, prompt_len=4, decode_tokens=0, repeats=1, clock="sundial")
    with pytest.raises(EvaluatorError, match="only with one thread"):
        measure_latency(_model(DENSE), subnet, prompt_len=4, decode_tokens=0, repeats=1, threads=2, clock="process")
    with pytest.raises(EvaluatorError, match="threads must be a positive integer"):
        measure_latency(_model(DENSE), subnet, prompt_len=4, decode_tokens=0, repeats=1, threads=0)
