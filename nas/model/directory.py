"""Saving and loading a supernet directory.

Layout of a supernet directory::

    DIR/config.json        SupernetConfig
    DIR/model.safetensors  weights (dtype as saved)
    DIR/space.yaml         the search space (explicit form)
    DIR/supernet.json      format version, content hash, layer rank, provenance
    DIR/tokenizer/         Hugging Face tokenizer files (optional)
    DIR/weights.check.json size, mtime and content hash of model.safetensors when last hashed

The content hash covers the config, the layer rank and every weight, so it
identifies the supernet in the database: two directories with the same hash hold
the same model. Loading checks the weights against it (:func:`check_weights`): the
weights are hashed once, and again only when the file's size or mtime changed, so a
``model.safetensors`` overwritten in place can never be scored or trained under the
hash of the model it replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
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
WEIGHTS_FILE = "model.safetensors"
#: The sidecar that remembers the content hash of the weights file at a size and mtime.
CHECK_FILE = "weights.check.json"
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"bfloat16"``/``"fp32"``/``"float32"`` (or those torch dtypes) to a torch
    dtype; None stays None. fp16 and anything else is refused (see :mod:`nas.model.dtypes`)."""
    return None if name is None else _TORCH_DTYPES[dtype_name(name)]


def content_hash(model: Supernet) -> str:
    """sha256 (16 hex digits) over the config, the layer rank and all weights."""
    return _state_hash(model.config, model.layer_rank, model.state_dict())


def _state_hash(config: SupernetConfig, layer_rank: Sequence[int], state: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(config.to_json().encode())
    h.update(json.dumps(list(layer_rank)).encode())
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _file_key(weights: Path) -> dict[str, int]:
    st = weights.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _remember(root: Path, key: Mapping[str, int], digest: str) -> None:
    """Write the sidecar (atomically; a read-only directory just means re-hashing next time)."""
    path = root / CHECK_FILE
    tmp = root / f".{CHECK_FILE}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps({**key, "content_hash": digest, "file": WEIGHTS_FILE}) + "\n")
        tmp.replace(path)
    except OSError as exc:
        log.debug("cannot write %s (%s); the weights will be hashed again on the next load", path, exc)
        tmp.unlink(missing_ok=True)


def _remembered(root: Path, key: Mapping[str, int]) -> str | None:
    """The content hash in the sidecar when it was taken at the file's current size and mtime."""
    try:
        data = json.loads((root / CHECK_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in key.items()):
        return None
    digest = data.get("content_hash")
    return digest if isinstance(digest, str) else None


def check_weights(root: Path, recorded: str, actual: Callable[[], str]) -> None:
    """Refuse weights whose content hash is not ``recorded`` (the one in supernet.json).

    ``actual`` computes the hash of the weights as stored; it runs only when the sidecar
    does not hold a hash taken at the file's current size and mtime.
    """
    weights = root / WEIGHTS_FILE
    key = _file_key(weights)
    digest = _remembered(root, key)
    if digest is None:
        digest = actual()
        if _file_key(weights) == key:  # not rewritten while we hashed it
            _remember(root, key, digest)
    if digest != recorded:
        raise NasError(
            f"{weights} does not match the content hash recorded in {root / 'supernet.json'} "
            f"(recorded {recorded}, the weights hash to {digest}): the file was changed after it was saved, so "
            f"its results would be filed under another model. Restore the original file, or register the changed "
            f"weights as a new supernet with `nas supernet rehash {root}` (or import it again with `nas supernet import`)"
        )


def rehash_supernet(path: str | Path) -> tuple[str, str]:
    """Accept the weights now in a supernet directory as a (new) supernet: recompute the
    content hash from them and record it in supernet.json. Returns (old hash, new hash)."""
    root = Path(path)
    meta = _read_json(root / "supernet.json")
    config = SupernetConfig.from_dict(_read_json(root / "config.json"))
    weights = root / WEIGHTS_FILE
    key = _file_key(weights) if weights.is_file() else None
    state = _load_weights(weights)
    with torch.device("meta"):
        rank = Supernet(config, layer_rank=meta.get("layer_rank")).layer_rank
    new = _state_hash(config, rank, state)
    old = str(meta.get("content_hash", ""))
    if new != old:
        meta["content_hash"] = new
        meta.setdefault("provenance", {})["rehashed_from"] = old
        tmp = root / ".supernet.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tmp.replace(root / "supernet.json")
    if key is not None:
        _remember(root, key, new)
    return old, new


def update_provenance(path: str | Path, **fields: Any) -> dict[str, Any]:
    """Add ``fields`` to the provenance recorded in ``path``/supernet.json (atomically) and
    return the new provenance. The content hash covers no provenance, so it stays valid."""
    root = Path(path)
    meta = _read_json(root / "supernet.json")
    meta.setdefault("provenance", {}).update(fields)
    tmp = root / f".supernet.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(root / "supernet.json")
    return meta["provenance"]


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
    tmp.replace(out / WEIGHTS_FILE)
    _remember(out, _file_key(out / WEIGHTS_FILE), digest)
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
    verify: bool = True,
) -> LoadedSupernet:
    """Load a supernet directory.

    ``verify`` (default on) refuses weights that do not match the content hash recorded in
    supernet.json (see :func:`check_weights`: they are hashed again only when the file's
    size or mtime changed since they last were)."""
    root = Path(path)
    if not root.is_dir():
        raise NasError(f"supernet directory {root} does not exist; create it with `nas supernet import`")
    config = SupernetConfig.from_dict(_read_json(root / "config.json"))
    meta = _read_json(root / "supernet.json")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise NasError(f"{root} was written by a newer version of this tool (format {meta['format_version']}); upgrade")
    weights = root / WEIGHTS_FILE
    state = _load_weights(weights, device)
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
    mark_loaded(model, root)
    space_file = Path(space_path) if space_path else root / "space.yaml"
    if space_file.is_file():
        space = SearchSpace.from_yaml(space_file, config, model.layer_rank)
    else:
        space = SearchSpace.default(config, model.layer_rank)
    digest = meta.get("content_hash", "")
    if verify and digest:
        check_weights(root, digest, lambda: _state_hash(config, model.layer_rank, state))
    return LoadedSupernet(model=model, space=space, path=root, content_hash=digest, provenance=meta.get("provenance", {}))


def weights_state(model: torch.nn.Module) -> tuple[tuple[int, int], ...]:
    """Every parameter's storage address and in-place version counter: changes with a cast, a
    copy, a training step or any in-place write to the weights."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def mark_loaded(model: torch.nn.Module, root: str | Path) -> None:
    """Record that ``model``'s weights are, as of now, those of the directory ``root``."""
    model.__dict__["_loaded_from"] = (str(root), weights_state(model))


def loaded_from(model: torch.nn.Module) -> Path | None:
    """The directory ``model`` was loaded from while its weights are still as loaded (no
    copy, cast or write since :func:`mark_loaded`), else None."""
    mark = model.__dict__.get("_loaded_from")
    if mark is None or mark[1] != weights_state(model):
        return None
    return Path(mark[0])


def _load_weights(weights: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    if not weights.is_file():
        raise NasError(f"{weights} is missing; the supernet directory is incomplete")
    try:
        return load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise NasError(f"{weights} is not a readable safetensors file ({exc}); re-create it with `nas supernet import`") from None


__all__ = [
    "CHECK_FILE", "FORMAT_VERSION", "WEIGHTS_FILE", "LoadedSupernet", "check_weights", "content_hash", "load_supernet",
    "loaded_from", "mark_loaded", "parse_dtype", "rehash_supernet", "save_supernet", "update_provenance", "weights_state",
]
