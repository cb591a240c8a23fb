"""The export format: what an export directory holds and how its config maps to transformers.

Layout of an export directory::

    DIR/model.safetensors   the dense weights of the sub-network (nothing else)
    DIR/config.json         transformers LlamaConfig (homogeneous) or our SupernetConfig
    DIR/nas_export.json     format, our config, layer rank, the sub-network, lineage,
                            metrics (with stderr) and costs (with method)
    DIR/tokenizer*.json...  the supernet's tokenizer, when it has one
    DIR/README.md           model card: config, metrics with stderr, costs, lineage, usage

Two formats:

* ``hf-llama`` — every kept layer has the same sizes and no experts: the weights carry
  Hugging Face names and ``config.json`` is a ``LlamaConfig`` (``Qwen2Config`` for a
  Qwen2 supernet), so ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` loads it.
* ``nas-dense`` — per-layer sizes differ (or MoE): our own names and config;
  :func:`nas.export.loading.load_exported` runs it (forward and generation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.importing.hf import hf_name_map, to_hf_config
from nas.model.config import SupernetConfig

EXPORT_FORMAT_VERSION = 1
META_FILE = "nas_export.json"
WEIGHTS_FILE = "model.safetensors"
HF_FORMAT = "hf-llama"
NAS_FORMAT = "nas-dense"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)



def hf_names(config: SupernetConfig) -> dict[str, str]:
    """Our parameter names -> transformers LlamaForCausalLM names (dense homogeneous models)."""
    return hf_name_map(config)


def hf_config_dict(config: SupernetConfig) -> dict[str, Any]:
    """The transformers config (as a dict, ready for config.json) of a homogeneous dense config."""
    hf = to_hf_config(config)
    data = hf.to_dict()
    data["architectures"] = ["Qwen2ForCausalLM" if config.architecture == "qwen2" else "LlamaForCausalLM"]
    data["torch_dtype"] = data.get("torch_dtype") or data.get("dtype")
    return data


def exportable_as_hf(config: SupernetConfig) -> bool:
    return config.is_homogeneous and config.n_expert == 0 and config.architecture in ("llama", "qwen2", "mistral")


def read_export_meta(path: str | Path) -> dict[str, Any]:
    root = Path(path)
    meta_file = root / META_FILE
    if not meta_file.is_file():
        raise NasError(f"{root} is not a model exported by `nas export` ({META_FILE} is missing)")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NasError(f"{meta_file} is not valid JSON ({exc}); export the model again") from None
    if meta.get("format_version", 0) > EXPORT_FORMAT_VERSION:
        raise NasError(f"{root} was exported by a newer version of this tool; upgrade to load it")
    return meta


__all__ = [
    "EXPORT_FORMAT_VERSION",
    "HF_FORMAT",
    "META_FILE",
    "NAS_FORMAT",
    "WEIGHTS_FILE",
    "exportable_as_hf",
    "hf_config_dict",
    "hf_names",
    "read_export_meta",
]
