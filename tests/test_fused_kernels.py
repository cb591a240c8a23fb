"""Fused kernels (a block's norms and RoPE compiled by Inductor) for scoring.

They compute what the eager operations compute, up to bf16 rounding (within a bf16 step of
the eager result); scores made with them carry their own cache key and prefix-cache entries,
so nothing made with one kind is served as the other's; and a bad mode, or a machine where
they cannot build, gets one clear answer.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

import nas.model.fused as fused
from evaluators import Evaluator, EvaluatorError, Fidelity, SubnetLM
from evaluators.plan import plan_requests
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.layers import add_rms_norm, compiled, rms_norm, rope_qk
from nas.model.supernet import Supernet

from _tiny import tiny_llama, tiny_supernet, tiny_tokenizer

MAX_LEN = 256
TASKS = ["arc_easy", "piqa"]
pytestmark = pytest.mark.usefixtures("one_thread")
needs_inductor = pytest.mark.skipif(not fused.probe()[0], reason=f"Inductor cannot build here: {fused.probe()[1]}")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def model(tok) -> Supernet:
    return tiny_supernet(tiny_llama(tok, n_layer=3, seed=4))


def loglikelihoods(lm: SubnetLM, texts: list[tuple[str, str]]) -> list[float]:
    requests = plan_requests(lm, [type("R", (), {"args": t})() for t in texts])
    return [ll for ll, _ in lm.run_plan(lm.plan([(None, c, x) for c, x in requests]))]


TEXTS = [("First Citizen:", " speak, speak."), ("The quick brown fox", " jumps over the lazy dog")]
TEXTS += [(f"Line {i}: the people", " are all resolved rather to die than to famish") for i in range(5)]


@needs_inductor
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["llama", "gemma"])
def test_the_compiled_kernels_compute_the_eager_ones(offset) -> None:
    gen = torch.Generator().manual_seed(0)
    x, h = torch.randn(2, 7, 24, generator=gen), torch.randn(2, 7, 24, generator=gen)
    w = torch.randn(24, generator=gen)
    q, k = torch.randn(2, 4, 7, 8, generator=gen), torch.randn(2, 2, 7, 8, generator=gen)
    cos, sin = torch.randn(7, 8, generator=gen), torch.randn(7, 8, generator=gen)
    with torch.inference_mode():
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2**-7)):  # bf16: one rounding step apart at most
            xs, hs, ws, qs, ks, c, s = (t.to(dtype) for t in (x, h, w, q, k, cos, sin))
            rows, more = xs.reshape(-1, 24), hs.reshape(-1, 24)  # as blocks call them: rows of channels
            pairs = [
                (compiled(rms_norm)(rows, ws, 1e-5, offset), rms_norm(rows, ws, 1e-5, offset)),
                (compiled(rms_norm)(rows[:5, :16], ws[:16], 1e-6, offset), rms_norm(rows[:5, :16], ws[:16], 1e-6, offset)),
                *zip(compiled(add_rms_norm)(rows, more, ws, 1e-5, offset), add_rms_norm(rows, more, ws, 1e-5, offset)),
                *zip(compiled(rope_qk)(qs, ks, c, s), rope_qk(qs, ks, c, s)),
            ]
            for got, want in pairs:
                assert got.dtype == want.dtype == dtype and got.shape == want.shape
                scale = want.float().abs().clamp_min(1.0)
                assert ((got.float() - want.float()).abs() / scale).max() <= 2 * tol, dtype


@needs_inductor
@pytest.mark.parametrize(("placement", "offset"), [("pre", 0.0), ("post", 0.0), ("sandwich", 1.0)])
def test_fused_blocks_compute_the_eager_blocks_for_every_norm_placement(placement, offset) -> None:
    config = SupernetConfig(vocab_size=50, d_model=32, n_layer=3, n_head=4, n_kv_head=2, d_ff=48, max_seq_len=64,
                            norm_placement=placement, norm_offset=offset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = Supernet(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(6))
    subnet = model.full_subnet()
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 0.05)):
        model.to(dtype)
        ctx = model.context(2, 9, dtype=dtype, device="cpu")
        with torch.inference_mode():
            x = model.embed_tokens(tokens, subnet)
            eager = model.run_layers(x, subnet, ctx).float()
            fused = model.run_layers(x, subnet, dataclasses.replace(ctx, fused=True)).float()
        assert ((fused - eager).abs().max() / eager.abs().max()) < tol, dtype
        if dtype == torch.bfloat16:
            assert not torch.equal(fused, eager)  # the compiled kernels ran (they round bf16 once, not per step)


@needs_inductor
def test_fused_scoring_is_eager_scoring_up_to_bf16_rounding_and_keyed_apart(tok) -> None:
    truth = loglikelihoods(SubnetLM(model(tok), "full", tokenizer=tok, dtype="fp32", max_length=MAX_LEN), TEXTS)
    got = {}
    for kernels in ("eager", "fused"):
        lm = SubnetLM(model(tok), "full", tokenizer=tok, dtype="bf16", max_length=MAX_LEN, kernels=kernels)
        assert lm.fused == (kernels == "fused")
        got[kernels] = loglikelihoods(lm, TEXTS)
    assert got["fused"] != got["eager"]  # the compiled kernels ran: bf16 rounds differently in them
    for kernels, lls in got.items():  # both are bf16 scorings of the fp32 answer: within 2 % of it
        assert all(abs(a - b) < 0.02 * abs(b) for a, b in zip(lls, truth, strict=True)), kernels
    settings = {}
    for kernels in ("eager", "fused"):
        ev = Evaluator(model(tok), tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN, prefix_cache_bytes=0,
                       kernels=kernels)
        settings[kernels] = ev.settings
        ev.close()
    assert all('"kernels"' not in s for s in settings["eager"].values())  # eager keeps the key scores always had
    assert all('"kernels":"fused"' in s for s in settings["fused"].values())


@needs_inductor
def test_fused_prefix_reuse_is_bit_identical_and_never_resumes_from_eager_streams(tok) -> None:
    base = model(tok)
    subnets = [base.full_subnet(), base.full_subnet()]  # the second resumes from the first's last layer
    fid = Fidelity(limit=4, seed=1)

    def evaluator(kernels: str, cache_bytes: int) -> Evaluator:
        return Evaluator(base, tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN,
                         prefix_cache_bytes=cache_bytes, kernels=kernels)

    def scores(ev: Evaluator, subnet) -> list:
        return [(s.task, s.metric, s.example_scores) for s in ev.evaluate(subnet, fid).scores]

    plain, eager, reuse = evaluator("fused", 0), evaluator("eager", 1 << 30), evaluator("fused", 1 << 30)
    reuse.prefix_cache = eager.prefix_cache  # one cache for both kinds, as a process's shared cache is
    cache = eager.prefix_cache
    try:
        expected = [scores(plain, s) for s in subnets]
        scores(eager, subnets[0])  # stores eager boundaries of the same weights and plans
        assert cache.nbytes > 0
        skipped = cache.layer_passes_skipped
        assert scores(reuse, subnets[0]) == expected[0]  # bit for bit, every layer run: no eager stream served it
        assert cache.layer_passes_skipped == skipped
        assert scores(reuse, subnets[1]) == expected[1]  # resumed from the fused streams just stored, bit for bit
        assert cache.layer_passes_skipped > skipped
    finally:
        for ev in (plain, eager, reuse):
            ev.close()


def test_kernel_modes_resolve_and_bad_input_is_refused(tok, monkeypatch, caplog) -> None:
    monkeypatch.delenv(fused.ENV, raising=False)
    assert fused.resolve_kernels("auto", torch.float32) is False  # fp32 is the parity reference: eager
    assert fused.resolve_kernels("eager", torch.bfloat16) is False
    assert fused.resolve_kernels("auto", torch.bfloat16, "meta") is False  # CPU only under auto
    assert fused.resolve_kernels(None, torch.bfloat16) is fused.probe()[0]
    monkeypatch.setenv(fused.ENV, "eager")
    assert fused.resolve_kernels(None, torch.bfloat16) is False
    with pytest.raises(NasError, match=r"kernels='turbo' is not one of auto, eager, fused"):
        fused.resolve_kernels("turbo", torch.bfloat16)
    with pytest.raises(EvaluatorError, match="kernels='turbo'"):
        SubnetLM(model(tok), "full", tokenizer=tok, dtype="bf16", max_length=MAX_LEN, kernels="turbo")
    monkeypatch.delenv(fused.ENV)
    monkeypatch.setattr(fused, "_probe", (False, "CppCompileError: no C++ compiler"))
    with pytest.raises(NasError, match="kernels=fused: .*no C\\+\\+ compiler.*kernels=eager"):
        fused.resolve_kernels("fused", torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger="nas.model.fused"):
        assert fused.resolve_kernels("auto", torch.bfloat16) is False  # falls back, and says so
    assert "fused kernels unavailable (CppCompileError: no C++ compiler)" in caplog.text
    ev = Evaluator(model(tok), tok, TASKS, dtype="bf16", batch_size=4, max_length=MAX_LEN, prefix_cache_bytes=0)
    try:
        assert ev.fused is False and all('"kernels"' not in s for s in ev.settings.values())
    finally:
        ev.close()
