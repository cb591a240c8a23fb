"""Tiny models and tokenizers for the evaluator tests (no hub, a second or two to build).

- :func:`tiny_tokenizer`: a byte-level BPE trained on ~20 KB of tiny-shakespeare from the
  offline corpus (or a built-in paragraph when the corpus is absent).
- :func:`tiny_llama`: a random transformers ``LlamaForCausalLM`` (GQA, untied head) with
  weights large enough that greedy decoding has clear winners.
- :func:`tiny_supernet`: the same weights as our :class:`Supernet`, via ``nas.importing.hf``.
"""

from __future__ import annotations

from typing import Any

import torch

from nas.paths import data_dir

_FALLBACK_TEXT = (
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
    "First Citizen: You are all resolved rather to die than to famish? All: Resolved. resolved. "
    "The quick brown fox jumps over the lazy dog. A man is sitting on a roof. He starts pulling up roofing. "
    "Question: Which statement best explains why photosynthesis is the foundation of most food webs? Answer: "
)


def corpus_text(n_chars: int = 20_000) -> str:
    root = data_dir()
    path = None if root is None else root / "corpus" / "tinyshakespeare" / "input.txt"
    if path is not None and path.is_file():
        return path.read_text(encoding="utf-8")[:n_chars]
    return _FALLBACK_TEXT * (n_chars // len(_FALLBACK_TEXT) + 1)


def tiny_tokenizer(vocab_size: int = 400) -> Any:
    """A PreTrainedTokenizerFast: byte-level BPE, ``<|endoftext|>`` = BOS = EOS (id 0), pad id 1."""
    from nas.model.tokenizer import train_tokenizer

    text = corpus_text()
    lines = [text[i : i + 200] for i in range(0, len(text), 200)]
    return train_tokenizer(lines, vocab_size=vocab_size, min_frequency=2)


def tiny_llama(tokenizer: Any, *, n_layer: int = 2, max_position_embeddings: int = 256, seed: int = 0, std: float = 0.15) -> Any:
    """A random fp32 LlamaForCausalLM sized for the tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layer,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, std)
    return model.float().eval()


def tiny_supernet(hf_model: Any) -> Any:
    """Our Supernet with the weights of ``hf_model``."""
    from nas.importing.hf import from_hf_model

    return from_hf_model(hf_model)
