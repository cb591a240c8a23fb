"""Every supported model family: import time, parity with transformers, parameter counts, and
for the two real models the value of importance ordering.

* one tiny randomly initialised transformers model per family (built from its config,
  saved with ``save_pretrained``, imported with ``import_source("hf:DIR")``): import time,
  ``max_abs_logit_diff`` of the full model against transformers in fp32 over 48 tokens
  (past the sliding window where the family has one) and the same decoding with our KV
  cache (``max_abs_logit_diff_cached``), our parameter count next to transformers';
* SmolLM2-135M and Gemma-3-270M from their PyPI packages (``smollm2-135m``,
  ``gemma3-270m``), imported with importance ordering on the default calibration text:
  import time, parity of the ordered supernet against transformers over 640 tokens of
  held-out text (past Gemma's 512-token window; cached decoding of the last 40), parameter
  counts, and the held-out loss of the sub-network with every ``d_ff`` halved in stored
  order (``unordered_loss``) and importance order (``ordered_loss``), and of the full model
  narrowed to 7/8 of its embedding channels (``narrow_d_model``; ``narrow_d_model_unordered_loss``,
  ``narrow_d_model_ordered_loss``), as ``nas supernet info`` prints them (``full_loss``: the
  full model).

Prints one JSON object: ``{"families": {name: {...}}, "seconds": ...}``; every family has
``max_abs_logit_diff``, ``ordered_loss`` and ``unordered_loss`` (null for the random tiny
models, whose losses mean nothing)::

    .venv/bin/python bench/families.py [--threads 2] [--skip-real]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

from nas.importing import importance  # noqa: E402
from nas.importing.families import FAMILIES  # noqa: E402
from nas.importing.sources import import_source, load_hf  # noqa: E402
from nas.model.supernet import Supernet  # noqa: E402

V = 96
COMMON = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)
MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)
#: family -> (transformers class prefix, config overrides), as in tests/test_families.py but a little larger.
TINY: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("Llama", {}),
    "mistral": ("Mistral", dict(sliding_window=16)),
    "qwen2": ("Qwen2", dict(use_sliding_window=True, sliding_window=16, max_window_layers=2)),
    "qwen3": ("Qwen3", dict(tie_word_embeddings=True)),
    "olmo2": ("Olmo2", {}),
    "olmo3": ("Olmo3", dict(sliding_window=16)),
    "gemma": ("Gemma", {}),
    "gemma2": ("Gemma2", dict(sliding_window=16, query_pre_attn_scalar=16)),
    "gemma3": ("Gemma3Text", dict(sliding_window=16, query_pre_attn_scalar=16, sliding_window_pattern=2)),
    "mixtral": ("Mixtral", dict(num_local_experts=8, num_experts_per_tok=2)),
    "qwen2_moe": ("Qwen2Moe", dict(MOE, shared_expert_intermediate_size=64)),
    "qwen3_moe": ("Qwen3Moe", dict(MOE, norm_topk_prob=True)),
    "olmoe": ("Olmoe", dict(num_experts=8, num_experts_per_tok=2)),
}


def _tokenizer() -> Any:
    vocab = {f"<{i}>": i for i in range(V)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<0>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<0>")


def _parity(hf: Any, model: Supernet, ids: torch.Tensor, *, decode: int) -> tuple[float, float]:
    """(full-forward, cached-decoding) max |logit diff| against transformers, fp32."""
    with torch.no_grad():
        reference = hf(ids).logits.float()
        full = float((model(ids).float() - reference).abs().max())
        cache = model.new_cache()
        split = ids.shape[1] - decode
        steps = [model(ids[:, :split], cache=cache)]
        steps += [model(ids[:, t : t + 1], cache=cache) for t in range(split, ids.shape[1])]
        cached = float((torch.cat(steps, dim=1).float() - reference).abs().max())
    return full, cached


def _counts(hf: Any, model: Supernet) -> dict[str, int]:
    return {
        "params": model.num_params(),
        "non_embedding_params": model.num_params(embedding=False),
        "transformers_params": sum(p.numel() for p in hf.parameters()),
    }


def tiny_family(name: str, folder: Path) -> dict[str, Any]:
    prefix, overrides = TINY[name]
    config = getattr(transformers, f"{prefix}Config")(**{**COMMON, **overrides})
    torch.manual_seed(0)
    hf = getattr(transformers, f"{prefix.removesuffix('Text')}ForCausalLM")(config)
    with torch.no_grad():
        for pname, p in hf.named_parameters():
            p.uniform_(0.5, 1.5) if "norm" in pname else p.normal_(0.0, 0.1)
    hf.eval().save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    start = time.perf_counter()
    result = import_source(f"hf:{folder}", reorder=False)
    seconds = time.perf_counter() - start
    ids = torch.randint(3, V, (1, 48), generator=torch.Generator().manual_seed(1))
    full, cached = _parity(hf, result.model, ids, decode=16)
    cfg = result.model.config
    return {
        "source": f"tiny random {FAMILIES[name].model_class}",
        "import_s": round(seconds, 2),
        "max_abs_logit_diff": full,
        "max_abs_logit_diff_cached": cached,
        **_counts(hf, result.model),
        "sliding_window": cfg.sliding_window,
        "experts": cfg.n_expert,
        "ordered_loss": None,
        "unordered_loss": None,
    }


def real_model(source: str) -> dict[str, Any]:
    start = time.perf_counter()
    result = import_source(source)
    seconds = time.perf_counter() - start
    check = result.provenance["ordering_check"]
    hf, tokenizer, _ = load_hf(source)
    tokens = tokenizer(importance.held_out_text(None), add_special_tokens=True)["input_ids"][:640]
    full, cached = _parity(hf, result.model, torch.tensor([tokens]), decode=40)
    cfg = result.model.config
    return {
        "source": source,
        "architecture": cfg.architecture,
        "import_s": round(seconds, 1),
        "max_abs_logit_diff": full,
        "max_abs_logit_diff_cached": cached,
        "parity_tokens": len(tokens),
        **_counts(hf, result.model),
        "sliding_window": cfg.sliding_window,
        "full_loss": check["full_loss"],
        "unordered_loss": check["half_ffn_loss_original_order"],
        "ordered_loss": check["half_ffn_loss_importance_order"],
        "narrow_d_model": check["narrow_d_model"],
        "narrow_d_model_unordered_loss": check["narrow_d_model_loss_original_order"],
        "narrow_d_model_ordered_loss": check["narrow_d_model_loss_importance_order"],
        "held_out_tokens": check["held_out_tokens"],
        "calibration_tokens": result.provenance["importance"]["calibration_tokens"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-real", action="store_true", help="only the tiny random families")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in TINY:
            out[name] = tiny_family(name, Path(tmp) / name)
    if not args.skip_real:
        for source in ("smollm2-135m", "gemma3-270m"):
            out[source] = real_model(source)
    print(json.dumps({"families": out, "threads": args.threads, "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
