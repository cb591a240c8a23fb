"""Weight formats: our torch quantise/dequantise against the ``gguf`` package's reference, prefix
slicing of a fake-quantised supernet, and the weight bytes the cost model charges per format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluators.cost import analytic_costs, quant_weight_bytes
from evaluators.errors import EvaluatorError
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.fakequant import dequantize, fake_quantized, quantize, quantize_dequantize
from nas.model.quant import QUANT_FORMATS, block_problems, parse_quant
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

FORMATS = [name for name in QUANT_FORMATS if name != "f32"]


def _awkward(seed: int = 0) -> torch.Tensor:
    """(48, 256) weights with the cases rounding code gets wrong: an all-zero block, ties of
    equal magnitude and opposite sign, exact grid points, one huge outlier per block."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48, 256, generator=g) * 0.05
    x[0, :32] = 0.0
    x[1, :32] = 0.25
    x[1, 7] = -0.25
    x[2] = torch.randint(-8, 8, (256,), generator=g).float() / 16
    x[3, ::32] = 3.0
    x[4] = x[4] * 1e-6
    return x


@pytest.mark.parametrize("name", FORMATS)
def test_quantize_dequantize_matches_the_gguf_reference_bit_for_bit(name: str) -> None:
    import gguf
    from gguf.quants import dequantize as ref_dequantize
    from gguf.quants import quantize as ref_quantize

    qtype = getattr(gguf.GGMLQuantizationType, parse_quant(name).ggml_type)
    for seed in range(3):
        x = _awkward(seed)
        packed = ref_quantize(x.numpy(), qtype)
        fmt = parse_quant(name)
        assert packed.nbytes == fmt.weight_bytes(x.shape[1]) * x.shape[0]  # the byte count we cost
        ref = ref_dequantize(packed, qtype)
        ours = quantize_dequantize(x, name).numpy()
        assert np.array_equal(ref.view(np.uint32), ours.view(np.uint32)), name
    if fmt.is_block:
        q = quantize(x, name)
        assert q.d.dtype == torch.float16 and q.q.shape == (x.numel() // 32, 32)
        assert int(q.q.min()) >= (-127 if name == "q8_0" else 0) and int(q.q.max()) <= {"q8_0": 127}.get(name, 31)
        torch.testing.assert_close(dequantize(q), quantize_dequantize(x, name), rtol=0, atol=0)
        with pytest.raises(NasError, match="blocks of 32"):
            quantize(x[:, :40], name)


def test_quantisation_error_shrinks_with_bits() -> None:
    x = _awkward()
    err = {n: float((quantize_dequantize(x, n) - x).abs().mean()) for n in ("q8_0", "q5_0", "q4_0")}
    assert err["q8_0"] < err["q5_0"] < err["q4_0"]
    assert float((quantize_dequantize(x, "f32") - x).abs().max()) == 0.0


CONFIG = SupernetConfig(vocab_size=96, d_model=64, n_layer=3, n_head=4, n_kv_head=2, d_ff=128, head_dim=16)


def test_fake_quantized_supernet_slices_exactly_at_block_multiples() -> None:
    """Quantising the supernet once and slicing = quantising the extracted sub-network, when
    every kept input width is a multiple of the block size; a width inside a block is not."""
    torch.manual_seed(0)
    model = Supernet(CONFIG).eval()
    tokens = torch.randint(0, CONFIG.vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))
    good = SubnetConfig(layers=(0, 2), n_head=(2, 4), d_ff=(64, 96), d_model=32)
    bad = SubnetConfig(layers=(0, 2), n_head=(2, 4), d_ff=(48, 96), d_model=64)
    for name in ("q8_0", "q4_0", "q5_1", "bf16"):
        fq = fake_quantized(model, name)
        assert fq is not model and fq.layers[0].ffn.gate_proj.weight.data_ptr() != model.layers[0].ffn.gate_proj.weight.data_ptr()
        sliced = fq(tokens, good)
        extracted = fake_quantized(model.extract(good), name)(tokens)
        torch.testing.assert_close(sliced, extracted, rtol=0, atol=0)
        assert not torch.equal(sliced, model(tokens, good))  # quantisation changed something
        # norms stay f32 (untouched)
        assert torch.equal(fq.layers[1].attn_norm, model.layers[1].attn_norm)
    assert block_problems(parse_quant("q4_0"), good, 16) == []
    assert block_problems(parse_quant("q4_0"), bad, 16) == ["layer 0 keeps d_ff=48, not a multiple of 32 (keep 32 or 64)"]
    # at d_ff=48 the slice cuts a block: the supernet's view runs, but no q4_0 file can hold that layer
    fake_quantized(model, "q4_0")(tokens, bad)
    with pytest.raises(NasError, match="a row of 48 weights is not a whole number of blocks"):
        fake_quantized(model.extract(bad), "q4_0")


def test_weight_bytes_per_format_in_the_cost_model(tmp_path) -> None:  # noqa: ANN001
    """The cost model's bytes are the GGUF file's tensor bytes, and the old figure is unchanged."""
    from nas.export.gguf import gguf_tensors

    torch.manual_seed(0)
    cfg = CONFIG.replace(qkv_bias=True)
    model = Supernet(cfg).eval()
    subnet = SubnetConfig(layers=(0, 1, 2), n_head=(4, 2, 4), d_ff=(128, 32, 64), d_model=64)
    dense = model.extract(subnet)
    for name, fmt in QUANT_FORMATS.items():
        expected = sum(fmt.weight_bytes(a.shape[1]) * a.shape[0] if a.ndim == 2 else a.size * 4 for _, a in gguf_tensors(dense))
        assert quant_weight_bytes(cfg, subnet, name) == expected, name
        costs = analytic_costs(cfg, subnet, quant=name)
        assert costs.values["weight_memory_bytes"].value == expected and costs.context["quant"] == name
    params = model.num_params(subnet)
    assert quant_weight_bytes(cfg, subnet, "f32") == 4 * params
    assert analytic_costs(cfg, subnet).values["weight_memory_bytes"].value == 2 * params  # bf16, as before
    assert quant_weight_bytes(cfg, subnet, "q4_0") < quant_weight_bytes(cfg, subnet, "q8_0") < quant_weight_bytes(cfg, subnet, "bf16")
    with pytest.raises(EvaluatorError, match="unknown quantisation 'q2'; valid ones"):
        quant_weight_bytes(cfg, subnet, "q2")
