"""Conversion between transformers LLaMA-family models and supernets.

Supported architectures: LLaMA (incl. SmolLM), Mistral (without sliding windows) and
Qwen2 (q/k/v bias). :func:`from_hf_model` copies a transformers model's weights into a
:class:`~nas.model.supernet.Supernet`; :func:`to_hf_model` goes back (homogeneous dense
models only), which is how exports load in transformers and parity is tested.
"""

from __future__ import annotations

from typing import Any

import torch

from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.supernet import Supernet, rope_inv_freq

SUPPORTED_ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "smollm": "llama", "smollm2": "llama"}


def check_architecture(arch: str, what: str) -> str:
    key = arch.lower()
    if key not in SUPPORTED_ARCHITECTURES:
        raise NasError(
            f"{what} has architecture {arch!r}, which is not supported; supported: {sorted(SUPPORTED_ARCHITECTURES)} "
            "(LLaMA-family decoders with RMSNorm, RoPE, GQA and SwiGLU)"
        )
    return SUPPORTED_ARCHITECTURES[key]


def config_from_hf(hf_config: Any) -> SupernetConfig:
    """SupernetConfig of a transformers LLaMA/Mistral/Qwen2 config."""
    model_type = getattr(hf_config, "model_type", "llama")
    arch = check_architecture(model_type, "the model")
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise NasError(f"the model uses activation {hf_config.hidden_act!r}; only SwiGLU (silu) is supported")
    if getattr(hf_config, "mlp_bias", False):
        raise NasError("the model has MLP biases, which are not supported")
    rope = dict(getattr(hf_config, "rope_parameters", None) or {})
    theta = rope.pop("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    scaling = rope if rope.get("rope_type", "default") not in (None, "default") else None
    if scaling is None and getattr(hf_config, "rope_scaling", None):
        scaling = dict(hf_config.rope_scaling)
    n_head = hf_config.num_attention_heads
    return SupernetConfig(
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        n_layer=hf_config.num_hidden_layers,
        n_head=n_head,
        n_kv_head=getattr(hf_config, "num_key_value_heads", None) or n_head,
        d_ff=hf_config.intermediate_size,
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_head,
        max_seq_len=getattr(hf_config, "max_position_embeddings", 2048),
        rope_theta=float(theta),
        rope_scaling=scaling,
        norm_eps=float(hf_config.rms_norm_eps),
        tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        qkv_bias=bool(getattr(hf_config, "attention_bias", arch == "qwen2")),
        bos_token_id=getattr(hf_config, "bos_token_id", None),
        eos_token_id=_first(getattr(hf_config, "eos_token_id", None)),
        architecture=arch,
    )


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) and value else value


def hf_name_map(config: SupernetConfig) -> dict[str, str]:
    """Our parameter names -> Hugging Face LlamaForCausalLM names."""
    names = {"embed.weight": "model.embed_tokens.weight", "norm": "model.norm.weight"}
    if not config.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(config.n_layer):
        ours, theirs = f"layers.{i}", f"model.layers.{i}"
        names[f"{ours}.attn_norm"] = f"{theirs}.input_layernorm.weight"
        names[f"{ours}.ffn_norm"] = f"{theirs}.post_attention_layernorm.weight"
        for p in ("q", "k", "v", "o"):
            names[f"{ours}.attn.{p}_proj.weight"] = f"{theirs}.self_attn.{p}_proj.weight"
        if config.qkv_bias:
            for p in ("q", "k", "v"):
                names[f"{ours}.attn.{p}_proj.bias"] = f"{theirs}.self_attn.{p}_proj.bias"
        for p in ("gate", "up", "down"):
            names[f"{ours}.ffn.{p}_proj.weight"] = f"{theirs}.mlp.{p}_proj.weight"
    return names


def from_hf_model(hf_model: Any) -> Supernet:
    """A supernet holding a copy of a transformers LLaMA-family model's weights."""
    config = config_from_hf(hf_model.config)
    state = hf_model.state_dict()
    dtype = next(hf_model.parameters()).dtype
    with torch.device("meta"):
        model = Supernet(config)
    model = model.to_empty(device="cpu").to(dtype)
    ours = {}
    for name, hf_name in hf_name_map(config).items():
        if hf_name not in state:
            raise NasError(f"the model has no weight {hf_name!r}; is it a LLaMA-family checkpoint?")
        ours[name] = state[hf_name].detach().clone()
    model.load_state_dict(ours)
    model.inv_freq = rope_inv_freq(config)
    return model.eval()


def to_hf_config(config: SupernetConfig) -> Any:
    """A transformers LlamaConfig (or Qwen2Config) equal to a homogeneous dense config."""
    if not config.is_homogeneous or config.n_expert:
        raise NasError("only homogeneous dense models (same sizes in every layer, no experts) map to LlamaForCausalLM")
    # deferred: transformers takes seconds to import; only this path needs it
    from transformers import LlamaConfig, Qwen2Config

    layer = config.layer(0)
    kwargs: dict[str, Any] = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=layer.d_ff,
        num_hidden_layers=config.n_layer,
        num_attention_heads=layer.n_head,
        num_key_value_heads=layer.n_kv_head,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        hidden_act="silu",
    )
    rope = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling:
        rope.update(config.rope_scaling)
    kwargs["rope_parameters"] = rope
    if config.architecture == "qwen2":
        return Qwen2Config(**kwargs)
    return LlamaConfig(attention_bias=config.qkv_bias, mlp_bias=False, **kwargs)


def to_hf_state_dict(model: Supernet) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face names (homogeneous dense models only)."""
    to_hf_config(model.config)  # validates
    state = model.state_dict()
    return {hf: state[ours].detach().contiguous() for ours, hf in hf_name_map(model.config).items()}


def to_hf_model(model: Supernet) -> Any:
    """A transformers LlamaForCausalLM (Qwen2ForCausalLM for Qwen2) with the same weights and outputs."""
    # deferred: transformers takes seconds to import; only this path needs it
    from transformers import AutoModelForCausalLM

    hf_config = to_hf_config(model.config)
    dtype = model.lm_head_weight.dtype
    hf_model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    missing, unexpected = hf_model.load_state_dict(to_hf_state_dict(model), strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight") or not model.config.tie_embeddings]
    if missing or unexpected:
        raise NasError(f"weight mapping to transformers failed (missing {missing[:4]}, unexpected {unexpected[:4]})")
    if model.config.tie_embeddings:
        hf_model.tie_weights()
    return hf_model.eval()



__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "check_architecture",
    "config_from_hf",
    "from_hf_model",
    "hf_name_map",
    "to_hf_config",
    "to_hf_model",
    "to_hf_state_dict",
]
