"""The model families we import and export, and their configs both ways.

A :class:`Family` names a transformers architecture (its ``model_type`` values, its
config and ``*ForCausalLM`` classes). :func:`config_from_hf` turns a transformers config
into a :class:`~nas.model.config.SupernetConfig` whose family features reproduce the
family's computation; :func:`hf_config_kwargs` goes back for a uniform config (every
MoE layer alike, every dense layer alike), which is how a sub-network exports as the
family's own architecture. Neither imports transformers: the config classes are named
here and instantiated by :mod:`nas.importing.hf`.

Supported: LLaMA (SmolLM), Mistral, Qwen2, Qwen3, OLMo 2, OLMo 3, Gemma, Gemma 2, Gemma 3
(text), Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nas.errors import NasError
from nas.model.config import LayerDims, SupernetConfig


@dataclass(frozen=True)
class Family:
    """One transformers architecture we convert to and from."""

    name: str  # SupernetConfig.architecture
    model_types: tuple[str, ...]  # transformers model_type values (and GGUF architecture names)
    config_class: str
    model_class: str
    moe: bool = False
    layer_types: bool = False  # its config lists sliding/full attention per layer (else: all layers or none)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", ("llama", "smollm", "smollm2"), "LlamaConfig", "LlamaForCausalLM"),
        Family("mistral", ("mistral",), "MistralConfig", "MistralForCausalLM"),
        Family("qwen2", ("qwen2",), "Qwen2Config", "Qwen2ForCausalLM", layer_types=True),
        Family("qwen3", ("qwen3",), "Qwen3Config", "Qwen3ForCausalLM", layer_types=True),
        Family("olmo2", ("olmo2",), "Olmo2Config", "Olmo2ForCausalLM"),
        Family("olmo3", ("olmo3",), "Olmo3Config", "Olmo3ForCausalLM", layer_types=True),
        Family("gemma", ("gemma",), "GemmaConfig", "GemmaForCausalLM"),
        Family("gemma2", ("gemma2",), "Gemma2Config", "Gemma2ForCausalLM", layer_types=True),
        Family("gemma3", ("gemma3_text", "gemma3"), "Gemma3TextConfig", "Gemma3ForCausalLM", layer_types=True),
        Family("mixtral", ("mixtral",), "MixtralConfig", "MixtralForCausalLM", moe=True),
        Family("qwen2_moe", ("qwen2_moe", "qwen2moe"), "Qwen2MoeConfig", "Qwen2MoeForCausalLM", moe=True, layer_types=True),
        Family("qwen3_moe", ("qwen3_moe", "qwen3moe"), "Qwen3MoeConfig", "Qwen3MoeForCausalLM", moe=True),
        Family("olmoe", ("olmoe",), "OlmoeConfig", "OlmoeForCausalLM", moe=True),
    )
}

#: model_type (or GGUF architecture) -> our architecture name.
SUPPORTED_ARCHITECTURES: dict[str, str] = {t: f.name for f in FAMILIES.values() for t in f.model_types}

_QK_NORM = {"qwen3": "head", "qwen3_moe": "head", "gemma3": "head", "olmo2": "proj", "olmo3": "proj", "olmoe": "proj"}
_PLACEMENT = {"olmo2": "post", "olmo3": "post", "gemma2": "sandwich", "gemma3": "sandwich"}
_GEMMA = ("gemma", "gemma2", "gemma3")
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh", "gelu": "gelu"}
_HF_ACTIVATIONS = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}


def check_architecture(arch: str, what: str) -> str:
    """Our architecture name for a transformers model_type or GGUF architecture, or one clear error."""
    key = arch.lower()
    if key not in SUPPORTED_ARCHITECTURES:
        raise NasError(
            f"{what} has architecture {arch!r}, which is not supported; supported: {sorted(SUPPORTED_ARCHITECTURES)} "
            "(decoder-only LLaMA-lineage models: RMSNorm, RoPE, grouped-query attention, gated FFN or routed experts)"
        )
    return SUPPORTED_ARCHITECTURES[key]


def family(config: SupernetConfig) -> Family | None:
    return FAMILIES.get(config.architecture)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) and value else value


def _rope(hf: Any) -> tuple[float, dict[str, Any] | None, float]:
    """(theta, scaling, local theta or 0) of a transformers config."""
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    local_theta = 0.0
    if "full_attention" in rope or "sliding_attention" in rope:  # per layer type (Gemma 3, OLMo 3)
        local = dict(rope.get("sliding_attention") or {})
        rope = dict(rope.get("full_attention") or {})
        if local.get("rope_type", "default") not in (None, "default"):
            raise NasError(f"the model's sliding layers use rope_type {local['rope_type']!r}; only default RoPE is supported there")
        if local:
            local_theta = float(local.get("rope_theta", rope.get("rope_theta", 10000.0)))
    theta = rope.pop("rope_theta", getattr(hf, "rope_theta", 10000.0))
    scaling = rope if rope.get("rope_type", "default") not in (None, "default") else None
    if scaling is None and not local_theta and isinstance(getattr(hf, "rope_scaling", None), dict):
        scaling = dict(hf.rope_scaling)
    if local_theta and local_theta == float(theta) and scaling is None:
        local_theta = 0.0  # the same tables as the global layers
    return float(theta), scaling, local_theta


def _sliding(hf: Any, fam: Family, n_layer: int) -> tuple[int, tuple[int, ...] | None]:
    window = int(getattr(hf, "sliding_window", None) or 0)
    if not window or fam.name == "llama":
        return 0, None
    if not fam.layer_types:
        return window, None  # Mistral, Mixtral, Qwen3-MoE: every layer slides when a window is set
    types = list(getattr(hf, "layer_types", None) or [])
    sliding = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    if not sliding:
        return 0, None
    return window, (None if len(sliding) == n_layer else sliding)


def _moe(hf: Any, fam: Family, n_layer: int) -> dict[str, Any]:
    """MoE fields of SupernetConfig for a MoE family."""
    if fam.name == "mixtral":
        return dict(n_expert=hf.num_local_experts, top_k=hf.num_experts_per_tok, d_ff=hf.intermediate_size)
    n_expert, top_k = hf.num_experts, hf.num_experts_per_tok
    out: dict[str, Any] = dict(n_expert=n_expert, top_k=top_k, norm_topk_prob=bool(getattr(hf, "norm_topk_prob", False)))
    if fam.name == "olmoe":
        out["d_ff"] = hf.intermediate_size
        return out
    d_ff = hf.moe_intermediate_size
    only = set(getattr(hf, "mlp_only_layers", None) or [])
    step = int(getattr(hf, "decoder_sparse_step", 1) or 1)
    moe_layers = tuple(i for i in range(n_layer) if i not in only and (i + 1) % step == 0)
    out.update(d_ff=d_ff, moe_layers=None if len(moe_layers) == n_layer else moe_layers)
    if len(moe_layers) < n_layer and hf.intermediate_size != d_ff:
        n_head, n_kv = hf.num_attention_heads, getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
        out["layer_dims"] = tuple(
            LayerDims(n_head, n_kv, d_ff, n_expert, top_k) if i in moe_layers else LayerDims(n_head, n_kv, hf.intermediate_size)
            for i in range(n_layer)
        )
    if fam.name == "qwen2_moe":
        out.update(shared_expert=True, shared_d_ff=hf.shared_expert_intermediate_size, shared_expert_gate=True)
    return out


def config_from_hf(hf: Any) -> SupernetConfig:
    """SupernetConfig of a transformers config of a supported family."""
    model_type = getattr(hf, "model_type", "llama")
    if model_type == "gemma3" and hasattr(hf, "text_config"):
        raise NasError("the model is a multimodal Gemma 3 (Gemma3ForConditionalGeneration); import its text model "
                       "(model_type gemma3_text, e.g. Gemma-3-270M/1B) instead")
    fam = FAMILIES[check_architecture(model_type, "the model")]
    name = fam.name
    act_name = getattr(hf, "hidden_activation", None) if name in ("gemma2", "gemma3") else None
    act_name = act_name or getattr(hf, "hidden_act", "silu")
    if act_name not in _ACTIVATIONS:
        raise NasError(f"the model uses activation {act_name!r}; supported: {sorted(_ACTIVATIONS)}")
    if getattr(hf, "mlp_bias", False):
        raise NasError("the model has MLP biases, which are not supported")
    if getattr(hf, "use_bidirectional_attention", False):
        raise NasError("the model uses bidirectional attention; only causal decoders are supported")
    theta, scaling, local_theta = _rope(hf)
    n_head, n_layer = hf.num_attention_heads, hf.num_hidden_layers
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // n_head
    window, sliding_layers = _sliding(hf, fam, n_layer)
    attention_bias = bool(getattr(hf, "attention_bias", False))
    if name == "qwen2":
        qkv_bias, o_bias = True, False
    elif name == "qwen2_moe":
        qkv_bias, o_bias = bool(getattr(hf, "qkv_bias", True)), False
    elif name in ("mistral", "mixtral"):
        qkv_bias = o_bias = False
    else:
        qkv_bias = o_bias = attention_bias
    scalar = getattr(hf, "query_pre_attn_scalar", None) if name in ("gemma2", "gemma3") else None
    fields: dict[str, Any] = dict(
        vocab_size=hf.vocab_size,
        d_model=hf.hidden_size,
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=getattr(hf, "num_key_value_heads", None) or n_head,
        d_ff=hf.intermediate_size,
        head_dim=head_dim,
        max_seq_len=getattr(hf, "max_position_embeddings", 2048),
        rope_theta=theta,
        rope_scaling=scaling,
        norm_eps=float(hf.rms_norm_eps),
        tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        bos_token_id=getattr(hf, "bos_token_id", None),
        eos_token_id=_first(getattr(hf, "eos_token_id", None)),
        architecture=name,
        norm_placement=_PLACEMENT.get(name, "pre"),
        norm_offset=1.0 if name in _GEMMA else 0.0,
        qk_norm=_QK_NORM.get(name, ""),
        ffn_act=_ACTIVATIONS[act_name],
        embed_scale=float(hf.hidden_size) ** 0.5 if name in _GEMMA else 0.0,
        attn_scale=float(scalar) ** -0.5 if scalar and scalar != head_dim else 0.0,
        attn_softcap=float(getattr(hf, "attn_logit_softcapping", None) or 0.0) if name in _GEMMA else 0.0,
        final_softcap=float(getattr(hf, "final_logit_softcapping", None) or 0.0) if name in _GEMMA else 0.0,
        sliding_window=window,
        sliding_layers=sliding_layers,
        rope_local_theta=local_theta if window else 0.0,
        o_bias=o_bias,
        qkv_clip=float(getattr(hf, "clip_qkv", None) or 0.0),
    )
    if fam.moe:
        fields.update(_moe(hf, fam, n_layer))
    return SupernetConfig(**fields)


# ----------------------------------------------------------------------- export
def exportable(config: SupernetConfig) -> bool:
    """True when ``config`` is one transformers config of its family: a uniform config whose
    family features are exactly those the family's config implies."""
    fam = family(config)
    if fam is None or not config.is_uniform:
        return False
    dims = [config.layer(i) for i in range(config.n_layer)]
    if any(d.n_expert for d in dims) != fam.moe:
        return False
    if fam.name in ("mixtral", "olmoe") and not all(d.n_expert for d in dims):
        return False
    try:
        kwargs = hf_config_kwargs(config)
    except NasError:
        return False
    same = config_from_hf(_Namespace(kwargs, fam))
    if fam.name == "llama" and config.qkv_bias and not config.o_bias:
        same = same.replace(o_bias=False)  # exported with a zero o_proj bias (LlamaConfig.attention_bias covers both)
    return _comparable(same) == _comparable(config)


def _comparable(config: SupernetConfig) -> dict[str, Any]:
    out = config.to_dict()
    out.pop("extra", None)
    out["layers"] = [config.layer(i) for i in range(config.n_layer)]
    out["windows"] = [config.window(i) for i in range(config.n_layer)]
    for key in ("layer_dims", "d_ff", "n_expert", "top_k", "moe_layers", "n_head", "n_kv_head", "sliding_window", "sliding_layers"):
        out.pop(key, None)
    if not out.get("rope_scaling") or out["rope_scaling"].get("rope_type", "default") == "default":
        out["rope_scaling"] = None
    return out


class _Namespace:
    """A stand-in for a transformers config built from keyword arguments (no transformers import)."""

    def __init__(self, kwargs: dict[str, Any], fam: Family) -> None:
        self.__dict__.update(kwargs)
        self.model_type = fam.model_types[0]


def hf_config_kwargs(config: SupernetConfig) -> dict[str, Any]:
    """Keyword arguments of the family's transformers config class for a uniform ``config``."""
    fam = family(config)
    if fam is None:
        raise NasError(f"architecture {config.architecture!r} has no transformers counterpart; export it in our own format")
    if not config.is_uniform:
        raise NasError("only uniform models (every layer of a kind has the same sizes) map to a transformers config")
    dims = [config.layer(i) for i in range(config.n_layer)]
    moe = [d for d in dims if d.n_expert]
    dense = [d for d in dims if not d.n_expert]
    kwargs: dict[str, Any] = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=(dense[0] if dense else moe[0]).d_ff,
        num_hidden_layers=config.n_layer,
        num_attention_heads=dims[0].n_head,
        num_key_value_heads=dims[0].n_kv_head,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        tie_word_embeddings=config.tie_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
    )
    act = _HF_ACTIVATIONS[config.ffn_act]
    kwargs["hidden_activation" if fam.name in ("gemma2", "gemma3") else "hidden_act"] = act
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling:
        rope.update(config.rope_scaling)
    if fam.name in ("gemma3", "olmo3"):
        local = config.rope_local_theta or config.rope_theta
        local_rope = {"rope_type": "default", "rope_theta": local} if config.rope_local_theta else dict(rope)
        kwargs["rope_parameters"] = {"full_attention": rope, "sliding_attention": local_rope}
    else:
        kwargs["rope_parameters"] = rope
    n = config.n_layer
    if fam.layer_types:
        kwargs["layer_types"] = ["sliding_attention" if config.window(i) else "full_attention" for i in range(n)]
        if config.sliding_window:
            kwargs["sliding_window"] = config.sliding_window
            if fam.name in ("qwen2", "qwen3", "qwen2_moe"):
                kwargs.update(use_sliding_window=True, max_window_layers=n)
    elif fam.name in ("mistral", "mixtral", "qwen3_moe"):
        if config.sliding_layers is not None and len(config.sliding_layers) not in (0, n):
            raise NasError(f"{fam.model_class} slides in every layer or none; this model slides in some")
        kwargs["sliding_window"] = config.sliding_window or None
        if fam.name == "qwen3_moe" and config.sliding_window:
            kwargs["use_sliding_window"] = True
    elif config.sliding_window:
        raise NasError(f"{fam.model_class} has no sliding-window attention")
    if fam.name in ("gemma2", "gemma3"):
        scalar = config.attn_scale ** -2 if config.attn_scale else config.head_dim
        kwargs["query_pre_attn_scalar"] = int(round(scalar)) if abs(scalar - round(scalar)) < 1e-6 else scalar
        kwargs["attn_logit_softcapping"] = config.attn_softcap or None
        kwargs["final_logit_softcapping"] = config.final_softcap or None
    if fam.name in ("qwen2", "mistral", "mixtral"):
        pass  # biases fixed by the architecture
    elif fam.name == "qwen2_moe":
        kwargs["qkv_bias"] = config.qkv_bias
    else:
        kwargs["attention_bias"] = config.qkv_bias or config.o_bias
    if fam.name == "olmoe":
        if dims[0].n_head * config.head_dim != config.d_model:
            raise NasError("OlmoeConfig sizes its q/k norms by hidden_size: it cannot drop attention heads")
        kwargs["clip_qkv"] = config.qkv_clip or None
    if fam.moe:
        e = moe[0]
        if fam.name == "mixtral":
            kwargs.update(num_local_experts=e.n_expert, num_experts_per_tok=e.top_k)
        else:
            kwargs.update(num_experts=e.n_expert, num_experts_per_tok=e.top_k, norm_topk_prob=config.norm_topk_prob)
        if fam.name in ("qwen2_moe", "qwen3_moe"):
            kwargs["moe_intermediate_size"] = e.d_ff
            kwargs["mlp_only_layers"] = [i for i, d in enumerate(dims) if not d.n_expert]
            kwargs["decoder_sparse_step"] = 1
        else:
            kwargs["intermediate_size"] = e.d_ff
        if fam.name == "qwen2_moe":
            kwargs["shared_expert_intermediate_size"] = config.shared_width(e.d_ff)
    return kwargs


__all__ = [
    "FAMILIES",
    "SUPPORTED_ARCHITECTURES",
    "Family",
    "check_architecture",
    "config_from_hf",
    "exportable",
    "family",
    "hf_config_kwargs",
]
