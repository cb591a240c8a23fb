"""Loading an export back: :func:`load_exported` reads either format into a
:class:`~nas.model.supernet.Supernet` whose full forward equals the study supernet's
``forward(tokens, subnet)``; :class:`ExportedModel` runs and generates with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from nas.errors import NasError
from nas.export.format import HF_FORMAT, META_FILE, WEIGHTS_FILE, read_export_meta, state_from_hf_tensors
from nas.model.config import SupernetConfig
from nas.model.directory import parse_dtype
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet, rope_inv_freq


@dataclass
class ExportedModel:
    """A loaded export: the dense model (a :class:`Supernet` at full size), its metadata and
    (when exported with one) its tokenizer."""

    model: Supernet
    meta: dict[str, Any]
    path: Path
    tokenizer: Any = None
    _subnet: SubnetConfig | None = field(default=None, repr=False)

    @property
    def config(self) -> SupernetConfig:
        return self.model.config

    @property
    def format(self) -> str:
        return str(self.meta.get("format"))

    def __call__(self, tokens: Tensor) -> Tensor:
        """Logits (B, T, V) for tokens (B, T)."""
        with torch.no_grad():
            return self.model(tokens)

    def generate(
        self,
        prompt: str | Sequence[int] | Tensor,
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int = 0,
        stop_at_eos: bool = True,
    ) -> Any:
        """Continue ``prompt`` (text when a tokenizer was exported, or token ids) with a KV
        cache: greedy when ``temperature == 0``, else sampled with a seeded generator.
        Returns text for a text prompt, else the list of new token ids."""
        text_in = isinstance(prompt, str)
        if text_in:
            if self.tokenizer is None:
                raise NasError(f"export {self.path} has no tokenizer; pass token ids instead of text")
            ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        elif isinstance(prompt, Tensor):
            ids = prompt.reshape(1, -1).long()
        else:
            ids = torch.tensor([list(prompt)], dtype=torch.long)
        if ids.numel() == 0:
            raise NasError("generate needs a non-empty prompt")
        eos = self.config.eos_token_id
        gen = torch.Generator().manual_seed(seed)
        cache = self.model.new_cache()
        new: list[int] = []
        with torch.no_grad():
            logits = self.model(ids, cache=cache)[:, -1]  # (1, V)
            for _ in range(max_new_tokens):
                if temperature > 0:
                    probs = torch.softmax(logits.float() / temperature, dim=-1)
                    nxt = int(torch.multinomial(probs, 1, generator=gen).item())
                else:
                    nxt = int(logits.argmax(-1).item())
                new.append(nxt)
                if stop_at_eos and eos is not None and nxt == eos:
                    break
                logits = self.model(torch.tensor([[nxt]]), cache=cache)[:, -1]
        if text_in:
            return self.tokenizer.decode(new, skip_special_tokens=True)
        return new


def load_exported(path: str | Path, *, dtype: str | torch.dtype | None = None, device: str = "cpu", tokenizer: bool = True) -> ExportedModel:
    """Load a directory written by :func:`export_subnet` (either format).

    Raises :class:`NasError` for a directory that is not an export or whose weights do
    not match its config.
    """
    root = Path(path)
    meta = read_export_meta(root)
    if meta.get("format") == "gguf":
        files = ", ".join(g["file"] for g in (meta.get("gguf") or {}).values())
        raise NasError(f"{root} is a GGUF export ({files}); run it with llama.cpp or llama-cpp-python (see its README.md)")
    config = SupernetConfig.from_dict(meta["config"])
    weights = root / WEIGHTS_FILE
    try:
        state = load_file(str(weights), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise NasError(f"{weights} is missing or unreadable ({exc}); export the model again") from None
    if meta["format"] == HF_FORMAT:
        try:
            state = state_from_hf_tensors(config, state)
        except NasError as exc:
            raise NasError(f"{weights} does not match {META_FILE} ({exc})") from None
    with torch.device("meta"):
        model = Supernet(config, layer_rank=meta.get("layer_rank"))
    expected = set(model.state_dict())
    if set(state) != expected:
        raise NasError(
            f"{weights} does not match {META_FILE} (missing {sorted(expected - set(state))[:3]}, "
            f"unexpected {sorted(set(state) - expected)[:3]}); export the model again"
        )
    model.load_state_dict(state, assign=True)
    model.inv_freq = rope_inv_freq(config).to(device)
    target = parse_dtype(dtype)
    if target is not None:
        model = model.to(target)
    model.eval()
    tok = None
    if tokenizer and (root / "tokenizer_config.json").is_file():
        # deferred: transformers takes seconds to import; only this path needs it
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(root))
    return ExportedModel(model=model, meta=meta, path=root, tokenizer=tok)


__all__ = ["ExportedModel", "load_exported"]
