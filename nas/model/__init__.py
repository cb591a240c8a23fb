"""The model: sizes, sub-networks, search spaces, the supernet and its directory on disk.

* :mod:`nas.model.config` — :class:`SupernetConfig` and :class:`LayerDims`, the full model's sizes;
* :mod:`nas.model.subnet` — :class:`SubnetConfig`, one sub-network (canonical JSON, stable hash);
* :mod:`nas.model.space` — :class:`SearchSpace`, which sub-networks a study may visit;
* :mod:`nas.model.params` — the one parameter-count formula (used by the model and the cost model);
* :mod:`nas.model.dtypes` — the dtype names we accept (bf16, fp32) and their widths;
* :mod:`nas.model.supernet` — :class:`Supernet`: sub-networks as prefix views;
* :mod:`nas.model.layers` — its elastic blocks (norms, RoPE, attention, FFN, mixture of experts);
* :mod:`nas.model.cache` — :class:`KVCache`, the forward context and attention masks (sliding windows);
* :mod:`nas.model.directory` — supernet directories: save, load, content hash;
* :mod:`nas.model.tokenizer` — the byte-level BPE tokenizer and its files.

The first five are plain Python and importable without torch (the web app and the cost
model use them); :class:`Supernet`, :func:`load_supernet` and the other torch-backed
names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from nas.model.config import LayerDims, SupernetConfig
from nas.model.space import LayerChoices, SearchSpace
from nas.model.subnet import SubnetConfig

# Deferred: these modules import torch; the names above must stay importable without it.
_LAZY = {
    "ForwardOutput": "nas.model.supernet",
    "KVCache": "nas.model.supernet",
    "Supernet": "nas.model.supernet",
    "LoadedSupernet": "nas.model.directory",
    "content_hash": "nas.model.directory",
    "load_supernet": "nas.model.directory",
    "save_supernet": "nas.model.directory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nas.model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ForwardOutput",
    "KVCache",
    "LayerChoices",
    "LayerDims",
    "LoadedSupernet",
    "SearchSpace",
    "SubnetConfig",
    "Supernet",
    "SupernetConfig",
    "content_hash",
    "load_supernet",
    "save_supernet",
]
