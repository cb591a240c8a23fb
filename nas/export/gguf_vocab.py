"""The tokenizer of a GGUF export: ``tokenizer.ggml.*`` keys and the chat template, read from
the Hugging Face tokenizer files saved with a supernet (``tokenizer.json``,
``tokenizer_config.json``, ``chat_template.jinja``).

llama.cpp's ``gpt2`` tokenizer model is a byte-level BPE: the token strings (byte-level
alphabet, as in ``tokenizer.json``), their types (normal, control for special added
tokens, user-defined for other added tokens, unused for padding rows), the merges, and a
*pre-tokenizer* name saying how text is split before BPE. We map the two byte-level
splits our tokenizers use: plain GPT-2 (``ByteLevel`` with its regex: what
:func:`nas.model.tokenizer.train_tokenizer` trains) -> ``gpt-2``, and single digits then
GPT-2 (SmolLM2) -> ``smollm``. Any other split is written as ``default`` with a warning,
and ``--verify`` reports whether llama.cpp tokenises the fixed text as we do.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import NasError

log = logging.getLogger(__name__)

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass(frozen=True)
class GgufVocab:
    """What the GGUF writer needs of a tokenizer."""

    tokens: tuple[str, ...]
    types: tuple[int, ...]
    merges: tuple[str, ...]
    pre: str
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    add_bos: bool
    chat_template: str | None

    def write(self, writer: Any) -> None:
        """Add the ``tokenizer.*`` keys to a ``gguf.GGUFWriter``."""
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(list(self.tokens))
        writer.add_token_types(list(self.types))
        writer.add_token_merges(list(self.merges))
        for value, add in ((self.bos_id, writer.add_bos_token_id), (self.eos_id, writer.add_eos_token_id),
                           (self.pad_id, writer.add_pad_token_id)):
            if value is not None:
                add(int(value))
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_space_prefix(False)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def _pre_tokenizer(spec: dict[str, Any] | None) -> str | None:
    """llama.cpp's pre-tokenizer name for a tokenizer.json ``pre_tokenizer``, or None."""
    if not spec:
        return None

    def byte_level(p: dict[str, Any]) -> bool:
        return p.get("type") == "ByteLevel" and p.get("use_regex", True) and not p.get("add_prefix_space", False)

    if byte_level(spec):
        return "gpt-2"
    if spec.get("type") == "Sequence":
        parts = spec.get("pretokenizers") or []
        if (len(parts) == 2 and parts[0].get("type") == "Digits" and parts[0].get("individual_digits")
                and byte_level(parts[1])):
            return "smollm"
    return None


def read_vocab(tokenizer_dir: Path, *, vocab_size: int, bos_id: int | None, eos_id: int | None) -> GgufVocab:
    """The GGUF vocabulary of the tokenizer in ``tokenizer_dir``, padded to the model's
    ``vocab_size`` rows (llama.cpp needs one token per embedding row)."""
    tok_file = tokenizer_dir / "tokenizer.json"
    if not tok_file.is_file():
        raise NasError(f"{tokenizer_dir} has no tokenizer.json; a GGUF export needs the fast (Rust) tokenizer's file")
    try:
        data = json.loads(tok_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NasError(f"{tok_file} is not readable JSON ({exc}); save the tokenizer again") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise NasError(f"{tok_file}: a GGUF export supports byte-level BPE tokenizers (llama.cpp's gpt2 model); "
                       f"this one is {model.get('type')!r}")
    decoder = (data.get("decoder") or {}).get("type")
    if decoder != "ByteLevel":
        raise NasError(f"{tok_file}: the decoder is {decoder!r}, not ByteLevel; only byte-level BPE tokenizers export to GGUF")
    tokens: list[str | None] = [None] * vocab_size
    types = [UNUSED] * vocab_size
    for text, idx in model["vocab"].items():
        if 0 <= idx < vocab_size:
            tokens[idx], types[idx] = text, NORMAL
    for added in data.get("added_tokens") or []:
        idx = int(added["id"])
        if 0 <= idx < vocab_size:
            tokens[idx] = added["content"]
            types[idx] = CONTROL if added.get("special") else USER_DEFINED
    ids = [int(i) for i in model["vocab"].values()] + [int(a["id"]) for a in data.get("added_tokens") or []]
    if ids and max(ids) >= vocab_size:
        raise NasError(f"{tok_file} has token ids beyond the model's vocab_size {vocab_size}; the tokenizer is not this model's")
    for idx, text in enumerate(tokens):
        if text is None:
            tokens[idx] = f"[PAD{idx}]"
    merges = tuple(m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or [])
    pre = _pre_tokenizer(data.get("pre_tokenizer"))
    if pre is None:
        log.warning("%s: pre-tokenizer %s has no llama.cpp counterpart we know; writing 'default' (check --verify's "
                    "tokenizer agreement)", tok_file, json.dumps(data.get("pre_tokenizer"))[:120])
        pre = "default"
    config: dict[str, Any] = {}
    cfg_file = tokenizer_dir / "tokenizer_config.json"
    if cfg_file.is_file():
        try:
            config = json.loads(cfg_file.read_text(encoding="utf-8"))
        except ValueError:
            config = {}
    by_text = {t: i for i, t in enumerate(tokens)}

    def token_id(name: str) -> int | None:
        value = config.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        return by_text.get(value) if isinstance(value, str) else None

    template = config.get("chat_template")
    jinja = tokenizer_dir / "chat_template.jinja"
    if not isinstance(template, str) and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    return GgufVocab(
        tokens=tuple(str(t) for t in tokens),
        types=tuple(types),
        merges=merges,
        pre=pre,
        bos_id=bos_id if bos_id is not None else token_id("bos_token"),
        eos_id=eos_id if eos_id is not None else token_id("eos_token"),
        pad_id=token_id("pad_token"),
        add_bos=bool(config.get("add_bos_token", False)),
        chat_template=template if isinstance(template, str) else None,
    )


__all__ = ["GgufVocab", "read_vocab"]
