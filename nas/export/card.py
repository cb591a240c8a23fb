"""The model card (``README.md``) of an export: what it is, its numbers, where it came from,
how to load it."""

from __future__ import annotations

import json
from typing import Any

from nas.export.format import HF_FORMAT


def model_card(meta: dict[str, Any]) -> str:
    """README.md of an export: what it is, its numbers, where it came from, how to load it."""
    lin = meta["lineage"]
    cfg = meta["config"]
    sub = meta["subnet"]
    hf = meta["format"] == HF_FORMAT
    lines = ["---"]
    if hf:
        lines += ["library_name: transformers", "pipeline_tag: text-generation"]
    lines += [
        "tags: [elastic-nas, sub-network]",
        f"base_model_hash: {lin['supernet_hash']}",
        "---",
        "",
        f"# {lin['study']} — trial {lin['trial']}: {meta['summary']}",
        "",
        f"A dense sub-network extracted from the elastic supernet `{lin['supernet_hash']}` by the NAS "
        f"study `{lin['study']}` (trial {lin['trial']}). {meta['params']:,} parameters, weights in "
        + (f"GGUF ({', '.join(meta['gguf'])})" if meta["format"] == "gguf" else f"{meta['dtype']}") + f", format `{meta['format']}`"
        + (f" (transformers `{meta['hf_architecture']}`)." if meta.get("hf_architecture") else "."),
        "",
        "## Configuration",
        "",
        f"- layers kept: {len(sub['layers'])} of the supernet's (supernet indices {sub['layers']})",
        f"- d_model: {cfg['d_model']}, head_dim: {cfg['head_dim']}, vocab: {cfg['vocab_size']}",
        "",
        "| position | supernet layer | query heads | KV heads | d_ff |" + (" experts | top_k |" if sub.get("n_expert") else ""),
        "|---|---|---|---|---|" + ("---|---|" if sub.get("n_expert") else ""),
    ]
    q_per_kv = cfg["n_head"] // cfg["n_kv_head"]
    for pos, layer in enumerate(sub["layers"]):
        row = f"| {pos} | {layer} | {sub['n_head'][pos]} | {sub['n_head'][pos] // q_per_kv} | {sub['d_ff'][pos]} |"
        if sub.get("n_expert"):
            row += f" {sub['n_expert'][pos]} | {sub['top_k'][pos]} |"
        lines.append(row)
    lines += ["", "```json", json.dumps(sub, sort_keys=True), "```", "", "## Metrics", ""]
    lines += _metrics_section(meta)
    lines += _heal_section(meta)
    lines += ["", "## Costs", ""]
    if meta["costs"]:
        lines += ["| cost | value | method | device |", "|---|---|---|---|"]
        for c in meta["costs"]:
            lines.append(f"| {c['metric']} | {c['value']:.6g} | {c['method']} | {c['device']} |")
    else:
        lines.append("No costs were recorded for this trial.")
    lines += _gguf_section(meta)
    lines += [
        "",
        "## Lineage",
        "",
        f"- supernet content hash: `{lin['supernet_hash']}` (at `{lin['supernet_path']}` when exported)",
        f"- study: `{lin['study']}`, trial {lin['trial']}, fidelity `{lin['fidelity']}`",
        f"- harness version(s): {', '.join(lin['harness_versions']) or '–'}",
        f"- sub-network hash: `{meta['subnet_hash']}`",
        f"- exported: {lin['exported_at']}",
        "",
        "## Usage",
        "",
        "```python",
    ]
    if meta["format"] == "gguf":
        first = next(iter(meta["gguf"].values()))["file"]
        lines += [
            "from llama_cpp import Llama   # pip install llama-cpp-python",
            f"llm = Llama(model_path=\"THIS_DIR/{first}\")",
            "print(llm(\"Once upon a time\", max_tokens=32)[\"choices\"][0][\"text\"])",
            f"# or: llama-cli -m THIS_DIR/{first} -p \"Once upon a time\"",
        ]
    elif hf:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "model = AutoModelForCausalLM.from_pretrained(\"THIS_DIR\")",
            "tokenizer = AutoTokenizer.from_pretrained(\"THIS_DIR\")",
            "# or: import nas; m = nas.load_exported(\"THIS_DIR\"); m.generate(\"Once upon a time\")",
        ]
    else:
        lines += [
            "import nas",
            "m = nas.load_exported(\"THIS_DIR\")   # per-layer sizes differ: not a plain LlamaForCausalLM",
            "print(m.generate(\"Once upon a time\", max_new_tokens=32))",
        ]
    lines += ["```", ""]
    return "\n".join(lines)


def _heal_section(meta: dict[str, Any]) -> list[str]:
    """What healing (``nas export --heal``) changed: the scores before and after on the same
    documents, with the paired change, and greedy continuations of fixed prompts."""
    heal = meta.get("heal")
    if not heal:
        return []
    z = float(heal.get("z", 1.96))
    teacher = "its parent's full model" if heal.get("teacher") == "parent" else "its own full model"
    data = heal.get("data") or {}
    lines = [
        "", "## Healing", "",
        f"These weights were healed before export (`nas export --heal {heal['budget']}`): the sub-network distilled "
        f"from the frozen full model of the supernet `{heal.get('parent_hash')}` ({teacher}) for "
        f"{heal.get('tokens') or 0:,} tokens in {heal.get('steps')} steps ({heal.get('wall_time_s') or 0:.0f} s) of "
        f"{', '.join(data.get('corpus') or ['?'])}. The Metrics above are the unhealed sub-network's, as the study "
        f"scored it; the healed supernet is `{heal.get('healed_supernet_hash')}`.",
        "",
    ]
    scores = heal.get("scores") or []
    if scores:
        fidelity = scores[0]["fidelity"]
        where = "confirmation documents the search never saw" if fidelity.startswith("c") else "the search's documents"
        lines += [
            f"Before and after on the same {where} (fidelity `{fidelity}`); the change is paired over the documents, "
            f"intervals ± {z:g} standard errors.",
            "",
            f"| task | metric | before ± {z:g} se | after ± {z:g} se | change ± {z:g} se | examples |",
            "|---|---|---|---|---|---|",
        ]
        for c in scores:
            lines.append(
                f"| {c['task']} | {c['metric']} | {c['before']:.4f}{_pm(c['before_stderr'], z)} | "
                f"{c['after']:.4f}{_pm(c['after_stderr'], z)} | {c['diff']:+.4f}{_pm(c['diff_stderr'], z)} | "
                f"{c['n_examples']} |"
            )
    else:
        lines.append("The study recorded no scores for this trial, so none were compared.")
    texts = heal.get("continuations") or []
    if texts:
        lines += ["", f"Greedy continuations ({heal.get('max_new_tokens', '?')} new tokens at most):", ""]
        for t in texts:
            lines += [f"- prompt: `{_inline(t['prompt'])}`", f"  - before: `{_inline(t['before'])}`",
                      f"  - after: `{_inline(t['after'])}`"]
    return lines


def _pm(stderr: float | None, z: float) -> str:
    return "" if stderr is None else f" ± {z * stderr:.4f}"


def _inline(text: str) -> str:
    """``text`` on one line inside backticks (newlines shown as ⏎, backticks as ')."""
    return text.replace("\r", "").replace("\n", " ⏎ ").replace("`", "'")


def _gguf_section(meta: dict[str, Any]) -> list[str]:
    """The GGUF files of the export: quantisation, llama.cpp architecture, size, and the
    agreement with our model measured in llama.cpp by ``nas export --verify``."""
    files = meta.get("gguf") or {}
    if not files:
        return []
    lines = ["", "## GGUF (llama.cpp)", "",
             "Weights quantised as named (norms and biases f32); architecture `deci` where layers differ in size.", "",
             "| file | quantisation | architecture | bytes | verified in llama.cpp | llama.cpp prefill (128 tokens) / decode |",
             "|---|---|---|---|---|---|"]
    devices: list[str] = []
    for quant, g in files.items():
        v = g.get("verify")
        device = ((v or {}).get("engine_latency") or {}).get("device")
        if v is None:
            check = "not verified (`nas export --verify`)"
        elif quant == "f32":
            check = f"max abs log-prob diff {v['logprob_max_abs_diff']:.2e}, greedy {'identical' if v['greedy_identical'] else 'DIFFERENT'}"
        else:
            check = f"mean KL {v['kl_mean']:.4f}, top-1 agreement {v['top1_agree']:.3f}"
        lat = (v or {}).get("engine_latency")
        speed = "–" if not lat else f"{lat['prefill_ms']:.1f} ms / {lat['decode_tokens_per_s']:.1f} tok/s"
        lines.append(f"| {g['file']} | {quant} | {g['architecture']} | {g['file_bytes']:,} | {check} | {speed} |")
        if device:
            devices.append(device)
    for device in dict.fromkeys(devices):
        lines += ["", f"llama.cpp timings (median of 3 runs) on `{device}`."]
    return lines


def _metrics_section(meta: dict[str, Any]) -> list[str]:
    """Confirmed scores (documents the search never saw) first, then the search's own."""
    z = float(meta.get("z", 1.96))
    search = meta["metrics"]
    confirmed = meta.get("confirmed_metrics") or []
    if not search and not confirmed:
        return ["No benchmark scores were recorded for this trial."]
    lines: list[str] = []
    if confirmed:
        lines += [
            "Confirmed on held-out documents the search never selected on: the unbiased estimate. "
            f"Intervals are ± {z:g} standard errors over the documents scored.",
            "",
            f"| task | metric | confirmed | ± {z:g} se | search score | examples (confirmed / search) |",
            "|---|---|---|---|---|---|",
        ]
        by_key = {(m["task"], m["metric"]): m for m in search}
        for m in confirmed:
            s = by_key.get((m["task"], m["metric"]))
            lines.append(f"| {m['task']} | {m['metric']} | {m['value']:.4f} | {_interval(m, z)} | "
                         f"{'–' if s is None else format(s['value'], '.4f')} | "
                         f"{m['n_examples']} / {'–' if s is None else s['n_examples']} |")
        lines += ["", f"Confirmation fidelity `{confirmed[0]['fidelity']}`.", ""]
    if search:
        lines += [
            "Search scores: the documents the search ranked candidates on, so optimistic for a chosen one"
            + (" (not confirmed: run `nas confirm` on the study)." if not confirmed else "."),
            "",
            f"| task | metric | value | ± {z:g} se | examples | fidelity |",
            "|---|---|---|---|---|---|",
        ]
        for m in search:
            lines.append(f"| {m['task']} | {m['metric']} | {m['value']:.4f} | {_interval(m, z)} | {m['n_examples']} | "
                         f"{m['fidelity']} |")
    return lines


def _interval(m: dict[str, Any], z: float) -> str:
    return "–" if m["stderr"] is None else f"{z * m['stderr']:.4f}"


__all__ = ["model_card"]
