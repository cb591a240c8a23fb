"""Import from transformers models, importance ordering, checkpoints and their errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from nas.errors import NasError
from nas.importing import importance
from nas.importing.hf import from_hf_model, to_hf_model
from nas.importing.sources import gguf_architecture, load_hf
from nas.model.config import SupernetConfig
from nas.model.directory import content_hash, load_supernet, save_supernet
from nas.model.space import SearchSpace
from nas.model.supernet import Supernet


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    kwargs = dict(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rope_theta=50000.0, tie_word_embeddings=False,
    )
    config = LlamaConfig(**{**kwargs, **overrides})
    return LlamaForCausalLM(config).eval()


def english_ids(n: int = 300) -> torch.Tensor:
    text = "The supernet keeps its most important units first, so that every prefix is a model. " * 8
    ids = [b for b in text.encode()][:n]
    return torch.tensor([ids])


def test_logits_parity_with_transformers_llama():
    hf = tiny_llama()
    model = from_hf_model(hf)
    x = english_ids()
    with torch.no_grad():
        diff = (hf(x).logits - model(x)).abs().max().item()
    assert diff <= 1e-4


def test_logits_parity_with_llama3_rope_scaling_and_tied_embeddings():
    hf = tiny_llama(
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 50000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    )
    model = from_hf_model(hf)
    assert model.config.tie_embeddings and model.config.rope_scaling["rope_type"] == "llama3"
    x = english_ids()
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max().item() <= 1e-4


def test_qwen2_qkv_bias_parity():
    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)).eval()
    model = from_hf_model(hf)
    assert model.config.qkv_bias
    x = english_ids(100)
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max().item() <= 1e-4


def test_homogeneous_subnetwork_exports_to_transformers():
    model = from_hf_model(tiny_llama())
    space = SearchSpace.from_dict({"tied": True}, model.config)
    sub = space.smallest()
    dense = model.extract(sub)
    hf = to_hf_model(dense)
    x = english_ids(64)
    with torch.no_grad():
        assert_close(hf(x).logits, model(x, sub), rtol=1e-5, atol=1e-4)


def test_importance_permutation_leaves_outputs_unchanged():
    model = from_hf_model(tiny_llama())
    x = english_ids(128)
    with torch.no_grad():
        before = model(x).clone()
    scores = importance.measure(model, torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(0)),
                                dtype=torch.float32)
    importance.apply(model, scores)
    with torch.no_grad():
        assert (model(x) - before).abs().max().item() <= 1e-5
    rank = model.layer_rank
    assert rank[:2] == (0, 3)  # first and last layers are pinned on top
    # prefixes now hold the highest-scoring neurons
    assert set(rank) == {0, 1, 2, 3}


def test_importance_ordering_puts_high_scoring_neurons_first():
    model = from_hf_model(tiny_llama())
    calib = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(0))
    importance.apply(model, importance.measure(model, calib, dtype=torch.float32))
    again = importance.measure(model, calib, dtype=torch.float32)
    for scores in again.ffn:
        assert torch.all(scores[:-1] >= scores[1:] - 1e-6)
    for heads in again.heads:
        groups = heads.view(2, 2).sum(1)
        assert groups[0] >= groups[1] - 1e-6
    assert torch.all(again.channels[:-1] >= again.channels[1:] - 1e-6)  # so does d_model's prefix


def test_channel_ordering_brings_the_stream_s_loud_channels_to_the_front():
    hf = tiny_llama()
    planted = [40, 13, 57]
    with torch.no_grad():  # these channels carry most of the residual stream
        hf.model.embed_tokens.weight[:, planted] *= 30.0
    model = from_hf_model(hf)
    original = model.embed.weight.detach().clone()
    calib = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(0))
    scores = importance.measure(model, calib, dtype=torch.float32)
    assert set(torch.argsort(scores.channels, descending=True)[:3].tolist()) == set(planted)
    importance.apply(model, scores)
    front = model.embed.weight[:, :3].detach()
    for column in front.T:  # the first three channels are the planted ones, moved whole
        assert any(torch.equal(column, original[:, c]) for c in planted)


def test_moe_expert_permutation_leaves_outputs_unchanged():
    torch.manual_seed(0)
    config = SupernetConfig(vocab_size=64, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=16, n_expert=4, top_k=2)
    model = Supernet(config).eval()
    x = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        before = model(x).clone()
    scores = importance.measure(model, torch.randint(0, 64, (4, 16)), dtype=torch.float32)
    importance.apply(model, scores)
    with torch.no_grad():
        assert (model(x) - before).abs().max().item() <= 1e-5


def test_save_load_round_trip_with_stable_hash(tmp_path):
    model = from_hf_model(tiny_llama())
    model.layer_rank = (0, 3, 1, 2)
    space = SearchSpace.from_dict({"d_ff_choices": [48, 96]}, model.config, model.layer_rank)
    digest = save_supernet(model, tmp_path / "a", space=space, provenance={"source": "test"})
    again = save_supernet(model, tmp_path / "b", space=space)
    assert digest == again == content_hash(model)
    loaded = load_supernet(tmp_path / "a", verify=True)
    assert loaded.content_hash == digest
    assert loaded.space == space and loaded.model.layer_rank == (0, 3, 1, 2)
    assert loaded.provenance == {"source": "test"}
    x = english_ids(32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    loaded_bf16 = load_supernet(tmp_path / "a", dtype="bf16")
    assert loaded_bf16.model.lm_head_weight.dtype == torch.bfloat16
    # changing one weight changes the hash
    with torch.no_grad():
        model.layers[0].ffn.up_proj.weight[0, 0] += 1
    assert content_hash(model) != digest


def test_corrupt_or_incomplete_checkpoints_are_refused(tmp_path):
    model = from_hf_model(tiny_llama())
    save_supernet(model, tmp_path / "ok")
    weights = tmp_path / "ok" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(NasError, match="not a readable safetensors file"):
        load_supernet(tmp_path / "ok")
    with pytest.raises(NasError, match="does not exist"):
        load_supernet(tmp_path / "missing")
    save_supernet(model, tmp_path / "cfg")
    cfg = json.loads((tmp_path / "cfg" / "config.json").read_text())
    cfg["d_ff"] = 128
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NasError, match="does not match config.json"):
        load_supernet(tmp_path / "cfg")
    (tmp_path / "cfg" / "supernet.json").write_text("{not json")
    with pytest.raises(NasError, match="not valid JSON"):
        load_supernet(tmp_path / "cfg")


def test_unsupported_gguf_architecture_is_refused(tmp_path):
    import gguf

    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_architecture(path) == "bert"
    with pytest.raises(NasError, match="architecture 'bert', which is not supported"):
        load_hf(f"gguf:{path}")


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(NasError, match="does not exist"):
        load_hf(f"gguf:{tmp_path / 'nope.gguf'}")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    with pytest.raises(NasError, match="not a readable GGUF"):
        load_hf(f"gguf:{tmp_path / 'junk.gguf'}")
    with pytest.raises(NasError, match="must be hf:"):
        load_hf("s3://bucket/model")
    with pytest.raises(NasError, match="no config.json"):
        load_hf(f"hf:{tmp_path}")


def test_hf_directory_import_round_trip(tmp_path):
    hf = tiny_llama()
    hf.save_pretrained(tmp_path / "hf")
    loaded, _tok, provenance = _load_without_tokenizer(tmp_path / "hf")
    assert provenance["format"] == "hf"
    model = from_hf_model(loaded)
    x = english_ids(50)
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max().item() <= 1e-4


def test_import_ranks_every_unit_and_records_the_ordering_check(tmp_path):
    from nas.cli.supernet import _ordering_lines
    from nas.importing.sources import import_source

    hf = tiny_llama()
    hf.save_pretrained(tmp_path / "hf")
    _load_without_tokenizer(tmp_path / "hf")  # saves the byte-level tokenizer beside the model
    text = tmp_path / "calibration.txt"
    text.write_text("The supernet keeps its most important units first, so that every prefix is a model. " * 60)
    result = import_source(f"hf:{tmp_path / 'hf'}", calibration=text, calibration_tokens=1024)
    check = result.provenance["ordering_check"]
    assert result.provenance["importance"]["channels_ranked"] and check["narrow_d_model"] == 56  # 7/8 of 64
    assert all(math.isfinite(check[k]) for k in check)
    x = english_ids(64)
    with torch.no_grad():  # ranking every unit, channels included, left the model's outputs as they were
        assert (hf(x).logits - result.model(x)).abs().max().item() <= 1e-4
    lines = _ordering_lines(check)
    assert len(lines) == 2 and "d_model 56" in lines[1]
    older = {k: v for k, v in check.items() if not k.startswith("narrow")}  # imported before channels were ranked
    assert len(_ordering_lines(older)) == 1


def _load_without_tokenizer(path):
    """load_hf needs a tokenizer; a tiny byte-level one is saved beside the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(i) if 32 <= i < 127 else f"<{i}>": i for i in range(256)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<0>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<0>").save_pretrained(path)
    return load_hf(f"hf:{path}")


def test_narrowing_d_model_on_an_import_with_unranked_channels_is_warned(caplog):
    from nas.search.study import _warn_unranked_channels

    config = from_hf_model(tiny_llama()).config
    narrowing = SearchSpace.from_dict({"d_model_choices": [32, 64]}, config)
    fixed = SearchSpace.from_dict({}, config)
    cases = [
        (narrowing, {"reordered": True, "importance": {"channels_ranked": True}}, False),
        (narrowing, {"reordered": True, "importance": {}}, True),  # imported before channels were ranked
        (narrowing, {"reordered": False}, True),  # --no-reorder
        (narrowing, {}, False),  # trained by `nas train`: its sandwich ordered the channels
        (fixed, {"reordered": False}, False),
    ]
    for space, provenance, warned in cases:
        caplog.clear()
        _warn_unranked_channels(space, provenance, "work/sn")
        assert ("re-import it to search d_model" in caplog.text) is warned, provenance
