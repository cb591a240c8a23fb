"""Conversion between transformers models and supernets, for every family of
:mod:`nas.importing.families`.

:func:`from_hf_model` copies a transformers model's weights into a
:class:`~nas.model.supernet.Supernet`; :func:`to_hf_model` goes back (uniform models
only), which is how parity is tested. Weights have two Hugging Face layouts:

* the *module* layout, ``hf_model.state_dict()`` (transformers 5 fuses an MoE layer's
  experts into ``mlp.experts.gate_up_proj`` (E, 2F, D) and ``down_proj`` (E, D, F));
* the *checkpoint* layout that ``save_pretrained`` writes and every transformers version
  loads (one tensor per expert: ``mlp.experts.{e}.gate_proj.weight``, or Mixtral's
  ``block_sparse_moe.experts.{e}.w1/w2/w3.weight``), which exports use.

Dense weights carry the same names in both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nas.errors import NasError
from nas.importing.families import (
    FAMILIES,
    SUPPORTED_ARCHITECTURES,
    check_architecture,
    config_from_hf,
    family,
    hf_config_kwargs,
)
from nas.model.config import SupernetConfig
from nas.model.supernet import Supernet, rope_inv_freq


def hf_name_map(config: SupernetConfig) -> dict[str, str]:
    """Our parameter names -> Hugging Face names, for every weight that maps one to one
    (all but the routed experts' gate/up/down)."""
    names = {"embed.weight": "model.embed_tokens.weight", "norm": "model.norm.weight"}
    if not config.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    placement = config.norm_placement
    ffn_norm = "pre_feedforward_layernorm" if placement == "sandwich" else "post_attention_layernorm"
    for i in range(config.n_layer):
        ours, theirs = f"layers.{i}", f"model.layers.{i}"
        if placement != "post":
            names[f"{ours}.attn_norm"] = f"{theirs}.input_layernorm.weight"
            names[f"{ours}.ffn_norm"] = f"{theirs}.{ffn_norm}.weight"
        if placement != "pre":
            names[f"{ours}.post_attn_norm"] = f"{theirs}.post_attention_layernorm.weight"
            names[f"{ours}.post_ffn_norm"] = f"{theirs}.post_feedforward_layernorm.weight"
        for p in ("q", "k", "v", "o"):
            names[f"{ours}.attn.{p}_proj.weight"] = f"{theirs}.self_attn.{p}_proj.weight"
        if config.qkv_bias:
            for p in ("q", "k", "v"):
                names[f"{ours}.attn.{p}_proj.bias"] = f"{theirs}.self_attn.{p}_proj.bias"
        if config.o_bias:
            names[f"{ours}.attn.o_proj.bias"] = f"{theirs}.self_attn.o_proj.bias"
        if config.qk_norm:
            names[f"{ours}.attn.q_norm"] = f"{theirs}.self_attn.q_norm.weight"
            names[f"{ours}.attn.k_norm"] = f"{theirs}.self_attn.k_norm.weight"
        if config.layer(i).n_expert:
            names[f"{ours}.ffn.router.weight"] = f"{theirs}.{_moe_prefix(config, checkpoint=False)}.gate.weight"
            if config.shared_expert:
                for p in ("gate", "up", "down"):
                    names[f"{ours}.ffn.shared.{p}_proj.weight"] = f"{theirs}.mlp.shared_expert.{p}_proj.weight"
            if config.shared_expert_gate:
                names[f"{ours}.ffn.shared_gate.weight"] = f"{theirs}.mlp.shared_expert_gate.weight"
        else:
            for p in ("gate", "up", "down"):
                names[f"{ours}.ffn.{p}_proj.weight"] = f"{theirs}.mlp.{p}_proj.weight"
    return names


def _moe_prefix(config: SupernetConfig, *, checkpoint: bool) -> str:
    return "block_sparse_moe" if checkpoint and config.architecture == "mixtral" else "mlp"


def _expert_names(config: SupernetConfig, layer: int, e: int) -> dict[str, str]:
    """Checkpoint names of expert ``e`` of layer ``layer``: {gate, up, down} -> name."""
    base = f"model.layers.{layer}.{_moe_prefix(config, checkpoint=True)}.experts.{e}"
    if config.architecture == "mixtral":
        return {"gate": f"{base}.w1.weight", "down": f"{base}.w2.weight", "up": f"{base}.w3.weight"}
    return {p: f"{base}.{p}_proj.weight" for p in ("gate", "up", "down")}


def _moe_layers(config: SupernetConfig) -> list[int]:
    return [i for i in range(config.n_layer) if config.layer(i).n_expert]


def _missing(name: str) -> NasError:
    return NasError(f"the model has no weight {name!r}; is it a checkpoint of a supported family ({sorted(FAMILIES)})?")


def state_from_hf(config: SupernetConfig, hf_state: dict[str, Tensor], *, checkpoint: bool = False) -> dict[str, Tensor]:
    """Our state dict from a Hugging Face one, in the module or the checkpoint layout."""
    out: dict[str, Tensor] = {}
    for ours, theirs in hf_name_map(config).items():
        if checkpoint:
            theirs = theirs.replace(".mlp.gate.weight", f".{_moe_prefix(config, checkpoint=True)}.gate.weight")
        if theirs not in hf_state:
            raise _missing(theirs)
        out[ours] = hf_state[theirs]
    for i in _moe_layers(config):
        ours = f"layers.{i}.ffn"
        if checkpoint:
            n_expert = config.layer(i).n_expert
            parts = [_expert_names(config, i, e) for e in range(n_expert)]
            for p in ("gate", "up", "down"):
                missing = [names[p] for names in parts if names[p] not in hf_state]
                if missing:
                    raise _missing(missing[0])
                out[f"{ours}.{p}"] = torch.stack([hf_state[names[p]] for names in parts])
        else:
            base = f"model.layers.{i}.mlp.experts"
            for name in (f"{base}.gate_up_proj", f"{base}.down_proj"):
                if name not in hf_state:
                    raise _missing(name)
            gate_up = hf_state[f"{base}.gate_up_proj"]  # (E, 2F, D): gate rows, then up rows
            F_ = gate_up.shape[1] // 2
            out[f"{ours}.gate"], out[f"{ours}.up"] = gate_up[:, :F_], gate_up[:, F_:]
            out[f"{ours}.down"] = hf_state[f"{base}.down_proj"]
    return out


def state_to_hf(model: Supernet, *, checkpoint: bool = True) -> dict[str, Tensor]:
    """The model's weights under Hugging Face names, in the checkpoint (default) or module layout."""
    config = model.config
    state = model.state_dict()
    out = {}
    for ours, theirs in hf_name_map(config).items():
        if checkpoint:
            theirs = theirs.replace(".mlp.gate.weight", f".{_moe_prefix(config, checkpoint=True)}.gate.weight")
        out[theirs] = state[ours].detach().contiguous()
    for i in _moe_layers(config):
        gate, up, down = (state[f"layers.{i}.ffn.{p}"].detach() for p in ("gate", "up", "down"))
        if checkpoint:
            for e in range(gate.shape[0]):
                names = _expert_names(config, i, e)
                out[names["gate"]], out[names["up"]] = gate[e].contiguous(), up[e].contiguous()
                out[names["down"]] = down[e].contiguous()
        else:
            base = f"model.layers.{i}.mlp.experts"
            out[f"{base}.gate_up_proj"] = torch.cat((gate, up), dim=1).contiguous()  # (E, 2F, D)
            out[f"{base}.down_proj"] = down.contiguous()
    if config.architecture == "llama" and config.qkv_bias and not config.o_bias:
        # LlamaConfig.attention_bias also gives o_proj a bias; ours has none, i.e. zero
        for i, block in enumerate(model.layers):
            w = block.attn.o_proj.weight
            out[f"model.layers.{i}.self_attn.o_proj.bias"] = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    return out


def from_hf_model(hf_model: Any) -> Supernet:
    """A supernet holding a copy of a transformers model's weights (any supported family)."""
    config = config_from_hf(hf_model.config)
    state = hf_model.state_dict()
    dtype = next(hf_model.parameters()).dtype
    with torch.device("meta"):
        model = Supernet(config)
    model = model.to_empty(device="cpu").to(dtype)
    ours = {k: v.detach().clone() for k, v in state_from_hf(config, state).items()}
    model.load_state_dict(ours)
    model.inv_freq = rope_inv_freq(config)
    return model.eval()


def to_hf_config(config: SupernetConfig) -> Any:
    """The family's transformers config (e.g. Qwen3Config) equal to a uniform ``config``."""
    fam = family(config)
    if fam is None or (config.n_expert and not fam.moe):
        raise NasError(
            f"architecture {config.architecture!r}{' with experts' if config.n_expert else ''} has no transformers "
            "counterpart; export it in our own format"
        )
    # deferred: transformers takes seconds to import; only this path needs it
    import transformers

    return getattr(transformers, fam.config_class)(**hf_config_kwargs(config))


def to_hf_state_dict(model: Supernet) -> dict[str, Tensor]:
    """Our weights under Hugging Face names in the checkpoint layout (uniform models only)."""
    to_hf_config(model.config)  # validates
    return state_to_hf(model, checkpoint=True)


def to_hf_model(model: Supernet) -> Any:
    """The family's transformers ``*ForCausalLM`` with the same weights and outputs."""
    # deferred: transformers takes seconds to import; only this path needs it
    from transformers import AutoModelForCausalLM

    hf_config = to_hf_config(model.config)
    dtype = model.lm_head_weight.dtype
    hf_model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    missing, unexpected = hf_model.load_state_dict(state_to_hf(model, checkpoint=False), strict=False)
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
    "state_from_hf",
    "state_to_hf",
    "to_hf_config",
    "to_hf_model",
    "to_hf_state_dict",
]
