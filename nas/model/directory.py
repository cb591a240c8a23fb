"""Saving and loading a supernet directory.

Layout of a supernet directory::

    DIR/config.json        SupernetConfig
    DIR/model.safetensors  weights (dtype as saved)
    DIR/space.yaml         the search space (explicit form)
    DIR/supernet.json      format version, content hash, layer rank, provenance
    DIR/tokenizer/         Hugging Face tokenizer files (optional)

The content hash covers the config, the layer rank and every weight, so it
identifies the supernet in the database: two directories with the same hash hold
the same model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.dtypes import dtype_name
from nas.model.space import SearchSpace
from nas.model.supernet import Supernet, rope_inv_freq

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"bfloat16"``/``"fp32"``/``"float32"`` (or those torch dtypes) to a torch
    dtype; None stays None. fp16 and anything else is refused (see :mod:`nas.model.dtypes`)."""
    return None if name is None else _TORCH_DTYPES[dtype_name(name)]


def content_hash(model: Supernet) -> str:
    """sha256 (16 hex digits) over the config, the layer rank and all weights."""
    h = hashlib.sha256()
    h.update(model.config.to_json().encode())
    h.update(json.dumps(list(model.layer_rank)).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class LoadedSupernet:
    """A supernet loaded from disk with everything saved beside it."""
    model: Supernet
    space: SearchSpace
    path: Path
    content_hash: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> SupernetConfig:
        return self.model.config

    @property
    def tokenizer_dir(self) -> Path | None:
        tok = self.path / "tokenizer"
        return tok if tok.is_dir() else None

    def load_tokenizer(self) -> Any:
        """The Hugging Face tokenizer saved with the supernet."""
        if self.tokenizer_dir is None:
            raise NasError(f"supernet {self.path} has no tokenizer/ directory; import it again with a tokenizer")
        # deferred: transformers takes seconds to import; only this path needs it
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir))


def save_supernet(
    model: Supernet,
    out_dir: str | Path,
    *,
    space: SearchSpace | None = None,
    tokenizer: Any = None,
    provenance: dict[str, Any] | None = None,
) -> str:
    """Write ``model`` (and its space, tokenizer, provenance) to ``out_dir``; return the content hash."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    space = space or SearchSpace.default(model.config, model.layer_rank)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    digest = content_hash(model)
    tmp = out / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt", "content_hash": digest})
    tmp.replace(out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n")
    (out / "space.yaml").write_text(space.to_yaml())
    meta = {
        "format_version": FORMAT_VERSION,
        "content_hash": digest,
        "layer_rank": list(model.layer_rank),
        "dtype": str(model.lm_head_weight.dtype).removeprefix("torch."),
        "provenance": provenance or {},
    }
    (out / "supernet.json").write_text(json.dumps(meta, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out / "tokenizer"))
    return digest


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise NasError(f"{path} is missing; is {path.parent} a supernet directory (made by `nas supernet import`)?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NasError(f"{path} is not valid JSON ({exc}); the supernet directory is corrupt") from None


def load_supernet(
    path: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    space_path: str | Path | None = None,
    verify: bool = False,
) -> LoadedSupernet:
    """Load a supernet directory. ``verify`` recomputes the content hash and refuses a mismatch."""
    root = Path(path)
    if not root.is_dir():
        raise NasError(f"supernet directory {root} does not exist; create it with `nas supernet import`")
    config = SupernetConfig.from_dict(_read_json(root / "config.json"))
    meta = _read_json(root / "supernet.json")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise NasError(f"{root} was written by a newer version of this tool (format {meta['format_version']}); upgrade")
    weights = root / "model.safetensors"
    if not weights.is_file():
        raise NasError(f"{weights} is missing; the supernet directory is incomplete")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise NasError(f"{weights} is not a readable safetensors file ({exc}); re-create it with `nas supernet import`") from None
    with torch.device("meta"):
        model = Supernet(config, layer_rank=meta.get("layer_rank"))
    expected = set(model.state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:5], sorted(set(state) - expected)[:5]
        raise NasError(f"{weights} does not match config.json (missing {missing}, unexpected {extra})")
    wrong = [k for k, v in model.state_dict().items() if tuple(v.shape) != tuple(state[k].shape)]
    if wrong:
        raise NasError(
            f"{weights} does not match config.json (shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, "
            f"config says {tuple(model.state_dict()[wrong[0]].shape)}); the directory mixes two supernets"
        )
    model.load_state_dict(state, assign=True)
    model.inv_freq = rope_inv_freq(config).to(device)
    target = parse_dtype(dtype)
    if target is not None:
        model = model.to(target)
    model.eval()
    space_file = Path(space_path) if space_path else root / "space.yaml"
    if space_file.is_file():
        space = SearchSpace.from_yaml(space_file, config, model.layer_rank)
    else:
        space = SearchSpace.default(config, model.layer_rank)
    digest = meta.get("content_hash", "")
    if verify:
        actual = content_hash(model if target is None else _as_saved(model, state))
        if actual != digest:
            raise NasError(f"{root}: weights do not match the stored content hash ({actual} != {digest}); the files were modified")
    return LoadedSupernet(model=model, space=space, path=root, content_hash=digest, provenance=meta.get("provenance", {}))


def _as_saved(model: Supernet, state: dict[str, torch.Tensor]) -> Supernet:
    with torch.device("meta"):
        twin = Supernet(model.config, layer_rank=model.layer_rank)
    twin.load_state_dict(state, assign=True)
    return twin


__all__ = ["FORMAT_VERSION", "LoadedSupernet", "content_hash", "load_supernet", "parse_dtype", "save_supernet"]
