"""Invariants of the elastic supernet: views, extraction, KV cache, MoE routing."""

from __future__ import annotations

import random

import pytest
import torch
from torch.testing import assert_close

from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

DENSE = SupernetConfig(vocab_size=97, d_model=48, n_layer=4, n_head=6, n_kv_head=3, d_ff=64, qkv_bias=True)
MOE = SupernetConfig(vocab_size=97, d_model=32, n_layer=3, n_head=4, n_kv_head=2, d_ff=24, n_expert=4, top_k=2,
                     moe_layers=(0, 2), shared_expert=True, tie_embeddings=True)


def make(config: SupernetConfig, seed: int = 0) -> Supernet:
    torch.manual_seed(seed)
    return Supernet(config, layer_rank=list(reversed(range(config.n_layer)))).eval()


def tokens(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 97, (batch, length), generator=torch.Generator().manual_seed(seed))


def subnets(model: Supernet, n: int = 4) -> list[SubnetConfig]:
    space = SearchSpace.default(model.config, model.layer_rank)
    rng = random.Random(0)
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("config", [DENSE, MOE], ids=["dense", "moe"])
def test_largest_subnetwork_equals_full_model(config):
    model = make(config)
    x = tokens()
    space = SearchSpace.default(config, model.layer_rank)
    with torch.no_grad():
        assert torch.equal(model(x, space.largest()), model(x))


@pytest.mark.parametrize("config", [DENSE, MOE], ids=["dense", "moe"])
def test_view_equals_extracted_copy(config):
    model = make(config)
    x = tokens()
    with torch.no_grad():
        for sub in subnets(model):
            dense = model.extract(sub)
            assert_close(dense(x), model(x, sub), rtol=1e-5, atol=1e-5)
            assert dense.num_params() == model.num_params(sub)
            assert sum(p.numel() for p in dense.parameters()) == model.num_params(sub)


def test_extracted_copy_is_independent():
    model = make(DENSE)
    sub = SearchSpace.default(DENSE).smallest()
    dense = model.extract(sub)
    x = tokens()
    with torch.no_grad():
        before = dense(x).clone()
        for p in model.parameters():
            p.add_(1.0)
        assert torch.equal(dense(x), before)


def test_views_share_storage_with_the_supernet():
    """The sliced weights used by a sub-network are views of the supernet's tensors."""
    model = make(DENSE)
    block = model.layers[1]
    w = block.ffn.gate_proj.weight
    view = w[:16, :32]
    assert view.data_ptr() == w.data_ptr()
    assert view.untyped_storage().data_ptr() == w.untyped_storage().data_ptr()
    # a gradient through a sub-network lands in the shared weight, only on the kept prefix
    sub = SubnetConfig(layers=(0, 1, 2, 3), n_head=(4, 4, 4, 4), d_ff=(16, 16, 16, 16), d_model=48)
    model.zero_grad()
    model(tokens(), sub).sum().backward()
    assert w.grad[:16].abs().sum() > 0
    assert w.grad[16:].abs().sum() == 0
    assert block.attn.q_proj.weight.grad[4 * DENSE.head_dim :].abs().sum() == 0
    assert block.attn.k_proj.weight.grad[2 * DENSE.head_dim :].abs().sum() == 0


@pytest.mark.parametrize("config", [DENSE, MOE], ids=["dense", "moe"])
def test_kv_cached_decoding_equals_full_recompute(config):
    model = make(config)
    x = tokens(length=10)
    for sub in subnets(model, n=2):
        with torch.no_grad():
            full = model(x, sub)
            cache = model.new_cache(sub)
            parts = [model(x[:, :6], sub, cache=cache)]
            parts.append(model(x[:, 6:8], sub, cache=cache))  # a chunk of 2
            for t in range(8, 10):  # then one token at a time
                parts.append(model(x[:, t : t + 1], sub, cache=cache))
        assert cache.length == 10
        assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


def test_cache_select_shares_a_context():
    model = make(DENSE)
    ctx, cont = tokens(batch=1, length=7), tokens(batch=3, length=3, seed=5)
    with torch.no_grad():
        cache = model.new_cache()
        model(ctx, cache=cache)
        repeated = cache.select([0, 0, 0])
        shared = model(cont, cache=repeated)
        unshared = model(torch.cat([ctx.expand(3, -1), cont], dim=1))[:, 7:]
    assert_close(shared, unshared, rtol=1e-5, atol=1e-5)


def test_attention_mask_left_padding_matches_unpadded():
    model = make(DENSE)
    x = tokens(batch=1, length=8)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 8)], dim=1)
    with torch.no_grad():
        assert_close(model(padded, attention_mask=mask)[:, 3:], model(x), rtol=1e-5, atol=1e-5)


def test_logits_index_selects_positions_of_the_full_logits():
    model = make(DENSE)
    x = tokens(batch=3, length=9)
    index = torch.tensor([[8], [2], [5]])
    for sub in subnets(model, n=1):
        with torch.no_grad():
            full = model(x, sub)
            picked = model(x, sub, logits_index=index)
            pairs = model(x, sub, logits_index=torch.tensor([[0, 8], [3, 3], [7, 1]]))
        assert picked.shape == (3, 1, DENSE.vocab_size)
        assert_close(picked[:, 0], full[torch.arange(3), index[:, 0]], rtol=1e-5, atol=1e-5)
        assert_close(pairs[1, 0], full[1, 3], rtol=1e-5, atol=1e-5)
        assert_close(pairs[2, 1], full[2, 1], rtol=1e-5, atol=1e-5)
    with pytest.raises(NasError, match="outside 0..8"):
        model(x, logits_index=torch.tensor([[9], [0], [0]]))
    with pytest.raises(NasError, match="shape"):
        model(x, logits_index=torch.tensor([1, 2, 3]))


def test_cache_of_another_subnetwork_is_refused():
    model = make(DENSE)
    space = SearchSpace.default(DENSE)
    cache = model.new_cache(space.smallest())
    with pytest.raises(NasError, match="another sub-network"):
        model(tokens(), space.largest(), cache=cache)


def test_moe_routing_over_kept_experts_only():
    model = make(MOE)
    moe = model.layers[0].ffn
    x = torch.randn(20, MOE.d_model)
    probs, weights, index = moe.route(x, n_expert=3, top_k=2)
    assert probs.shape == (20, 3)
    assert_close(probs.sum(-1), torch.ones(20))
    assert_close(weights.sum(-1), torch.ones(20))
    assert int(index.max()) < 3


def test_moe_aux_loss_is_reported():
    model = make(MOE)
    out = model.run(tokens(), return_aux=True)
    assert out.aux_loss is not None and out.aux_loss.item() > 0
    assert make(DENSE).run(tokens(), return_aux=True).aux_loss is None


def test_subnetwork_outside_the_supernet_is_refused():
    model = make(DENSE)
    bad = SubnetConfig(layers=(0, 1), n_head=(3, 6), d_ff=(64, 64), d_model=48)  # 3 is not whole KV groups
    with pytest.raises(NasError, match="multiple of 2"):
        model(tokens(), bad)
    with pytest.raises(NasError, match="does not exist"):
        model(tokens(), SubnetConfig(layers=(0, 7), n_head=(6, 6), d_ff=(64, 64), d_model=48))
    with pytest.raises(NasError, match="d_ff=65"):
        model(tokens(), SubnetConfig(layers=(0,), n_head=(6,), d_ff=(65,), d_model=48))


def test_config_validation_errors():
    with pytest.raises(NasError, match="n_head \\(6\\) must be a multiple of n_kv_head \\(4\\)"):
        SupernetConfig(vocab_size=10, d_model=48, n_layer=2, n_head=6, n_kv_head=4, d_ff=8)
    with pytest.raises(NasError, match="d_model"):
        SupernetConfig(vocab_size=10, d_model=0, n_layer=2, n_head=2, n_kv_head=1, d_ff=8)
    with pytest.raises(NasError, match="unknown field"):
        SupernetConfig.from_dict({**DENSE.to_dict(), "n_layers": 3})
    with pytest.raises(NasError, match="top_k"):
        SupernetConfig(vocab_size=10, d_model=8, n_layer=2, n_head=2, n_kv_head=1, d_ff=8, n_expert=2, top_k=3)
