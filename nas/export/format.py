"""The export format: what an export directory holds and how its config maps to transformers.

Layout of an export directory::

    DIR/model.safetensors   the dense weights of the sub-network (nothing else)
    DIR/config.json         the family's transformers config (uniform) or our SupernetConfig
    DIR/nas_export.json     format, our config, layer rank, the sub-network, lineage,
                            metrics (with stderr) and costs (with method)
    DIR/tokenizer*.json...  the supernet's tokenizer, when it has one
    DIR/README.md           model card: config, metrics with stderr, costs, lineage, usage

Two formats:

* ``hf-llama`` (the name is historical: it is the transformers format of every family) —
  the sub-network is one transformers config of its supernet's family (every kept MoE
  layer alike, every dense layer alike; see :func:`nas.importing.families.exportable`):
  the weights carry Hugging Face names in the layout ``save_pretrained`` writes and
  ``config.json`` is the family's config (``LlamaConfig``, ``Qwen3Config``,
  ``Gemma3TextConfig``, ``MixtralConfig``, ...), so
  ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` loads it as its own
  architecture (a Qwen3 sub-network as ``Qwen3ForCausalLM``).
* ``nas-dense`` — per-layer sizes differ (or the family has no transformers counterpart):
  our own names and config; :func:`nas.export.loading.load_exported` runs it (forward and
  generation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from nas.errors import NasError
from nas.importing.families import exportable, family
from nas.importing.hf import hf_name_map, state_from_hf, state_to_hf, to_hf_config
from nas.model.config import SupernetConfig
from nas.model.supernet import Supernet

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
    """Our parameter names -> transformers names, for the weights that map one to one."""
    return hf_name_map(config)


def hf_config_dict(config: SupernetConfig) -> dict[str, Any]:
    """The family's transformers config (as a dict, ready for config.json) of a uniform config."""
    hf = to_hf_config(config)
    data = hf.to_dict()
    fam = family(config)
    data["architectures"] = [fam.model_class if fam else "LlamaForCausalLM"]
    data["torch_dtype"] = data.get("torch_dtype") or data.get("dtype")
    return data


def exportable_as_hf(config: SupernetConfig) -> bool:
    """True when the model is one transformers config of its family (see the module docstring)."""
    return exportable(config)


def hf_tensors(model: Supernet) -> dict[str, Tensor]:
    """The weights of an ``hf-llama`` export: Hugging Face names, checkpoint layout (copies)."""
    return {name: t.clone() for name, t in state_to_hf(model, checkpoint=True).items()}


def state_from_hf_tensors(config: SupernetConfig, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict from the weights of an ``hf-llama`` export (the inverse of :func:`hf_tensors`)."""
    return state_from_hf(config, tensors, checkpoint=True)


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
    "hf_tensors",
    "read_export_meta",
    "state_from_hf_tensors",
]
