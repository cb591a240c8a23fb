"""Export one sub-network of a study as a standalone dense model, and load it back.

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
  :func:`load_exported` runs it (forward and generation).

:func:`load_exported` reads both formats into a :class:`~nas.supernet.Supernet` whose full
forward equals the study supernet's ``forward(tokens, subnet)``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nas.config import SupernetConfig
from nas.errors import NasError
from nas.space import SubnetConfig
from nas.supernet import Supernet, rope_inv_freq

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------- lineage
@dataclass(frozen=True)
class ScoreRecord:
    task: str
    metric: str
    value: float
    stderr: float | None
    n_examples: int
    fidelity: str
    harness_version: str
    task_hash: str


@dataclass(frozen=True)
class CostEntry:
    metric: str
    value: float
    method: str
    device: str


@dataclass(frozen=True)
class ExportSource:
    """Everything an export needs about one trial, read from storage."""

    study: str
    trial: int
    subnet: SubnetConfig
    supernet_hash: str
    supernet_path: str
    fidelity: str | None
    spec: dict[str, Any]
    scores: tuple[ScoreRecord, ...] = ()
    costs: tuple[CostEntry, ...] = ()
    feasible: bool = True

    @property
    def harness_versions(self) -> tuple[str, ...]:
        return tuple(sorted({s.harness_version for s in self.scores}))


def export_source(db: Any, study: str, trial: int) -> ExportSource:
    """Read trial ``trial`` of study ``study`` (its sub-network, supernet, scores at the
    trial's fidelity, costs) from the open ``storage.Database`` ``db``."""
    import storage

    row = storage.get_study(db, study)
    if row is None:
        storage.list_trials(db, study)  # raises storage's "no study named ... known: ..." error
        raise NasError(f"no study named {study!r}")
    trials = {t.trial_number: t for t in storage.list_trials(db, study)}
    if trial not in trials:
        have = sorted(trials)
        span = f"{have[0]}..{have[-1]}" if have else "none yet"
        raise NasError(f"study {study!r} has no trial {trial} (recorded trials: {span}); pick one from `nas pick {study}`")
    t = trials[trial]
    subnet_row = storage.get_subnet(db, t.subnet_id)
    supernet = storage.get_supernet(db, row.supernet_hash)
    if subnet_row is None or supernet is None:
        raise NasError(f"study {study!r} trial {trial}: its sub-network or supernet row is missing from the database")
    subnet = SubnetConfig.from_json(subnet_row.config_json)
    evals = storage.list_evaluations(db, t.subnet_id)
    fidelity = t.fidelity
    if fidelity is None and evals:
        fidelity = max(evals, key=lambda e: e.n_examples).fidelity
    latest: dict[tuple[str, str], Any] = {}
    for e in sorted(evals, key=lambda e: e.id):
        if e.fidelity == fidelity:
            latest[(e.task, e.metric)] = e
    scores = tuple(
        ScoreRecord(e.task, e.metric, e.value, e.stderr, e.n_examples, e.fidelity, e.harness_version, e.task_hash)
        for _, e in sorted(latest.items())
    )
    costs = tuple(
        CostEntry(c.metric, c.value, c.method, c.device)
        for c in storage.find_costs(db, supernet_hash=row.supernet_hash, config_hash=subnet_row.config_hash)
    )
    return ExportSource(
        study=study,
        trial=trial,
        subnet=subnet,
        supernet_hash=row.supernet_hash,
        supernet_path=supernet.path,
        fidelity=fidelity,
        spec=dict(row.spec or {}),
        scores=scores,
        costs=costs,
        feasible=t.feasible,
    )


# ------------------------------------------------------------------ HF mapping
def hf_names(config: SupernetConfig) -> dict[str, str]:
    """Our parameter names -> transformers LlamaForCausalLM names (dense homogeneous models)."""
    from nas.importers import hf_name_map

    return hf_name_map(config)


def hf_config_dict(config: SupernetConfig) -> dict[str, Any]:
    """The transformers config (as a dict, ready for config.json) of a homogeneous dense config."""
    from nas.importers import to_hf_config

    hf = to_hf_config(config)
    data = hf.to_dict()
    data["architectures"] = ["Qwen2ForCausalLM" if config.architecture == "qwen2" else "LlamaForCausalLM"]
    data["torch_dtype"] = data.get("torch_dtype") or data.get("dtype")
    return data


def _hf_state(model: Supernet) -> dict[str, Tensor]:
    state = model.state_dict()
    out = {hf: state[ours].detach().contiguous().clone() for ours, hf in hf_names(model.config).items()}
    if model.config.qkv_bias and model.config.architecture != "qwen2":
        # LlamaConfig.attention_bias also gives o_proj a bias; ours has none, i.e. zero
        for i, block in enumerate(model.layers):
            w = block.attn.o_proj.weight
            out[f"model.layers.{i}.self_attn.o_proj.bias"] = torch.zeros(w.shape[0], dtype=w.dtype)
    return out


def exportable_as_hf(config: SupernetConfig) -> bool:
    return config.is_homogeneous and config.n_expert == 0 and config.architecture in ("llama", "qwen2", "mistral")


# ----------------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    files: tuple[str, ...]
    params: int
    subnet: SubnetConfig


def export_subnet(
    source: ExportSource,
    out_dir: str | Path,
    *,
    dtype: str | None = None,
    overwrite: bool = False,
    supernet: Any = None,
) -> ExportResult:
    """Write the dense model of ``source``'s sub-network to ``out_dir``.

    ``supernet``: an already loaded ``LoadedSupernet`` (else it is loaded from the path
    stored with the study). ``dtype``: ``bf16``/``fp32`` (default: as the supernet was
    saved). Refuses a non-empty ``out_dir`` unless ``overwrite``, and a supernet whose
    content hash is not the study's.
    """
    from safetensors.torch import save_file

    from nas.checkpoint import load_supernet, parse_dtype

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NasError(f"export target {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise NasError(f"export directory {out} is not empty; choose a new directory or pass --overwrite")
    if supernet is None:
        if not source.supernet_path or not Path(source.supernet_path).is_dir():
            raise NasError(
                f"the supernet of study {source.study!r} ({source.supernet_hash}) is not at "
                f"{source.supernet_path or '(no path stored)'}; import it again there or fix its path with `nas supernet import`"
            )
        supernet = load_supernet(source.supernet_path)
    if supernet.content_hash != source.supernet_hash:
        raise NasError(
            f"the supernet at {supernet.path} has content hash {supernet.content_hash}, but study "
            f"{source.study!r} was run on {source.supernet_hash}; point the study at the right supernet"
        )
    source.subnet.check_fits(supernet.config)
    with torch.no_grad():
        dense = supernet.model.extract(source.subnet).eval()
        target = parse_dtype(dtype)
        if target is not None:
            dense = dense.to(target)
    fmt = HF_FORMAT if exportable_as_hf(dense.config) else NAS_FORMAT
    weight_dtype = str(dense.lm_head_weight.dtype).removeprefix("torch.")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if fmt == HF_FORMAT:
            tensors = _hf_state(dense)
            config_json = hf_config_dict(dense.config)
            config_json["torch_dtype"] = weight_dtype
        else:
            tensors = {k: v.detach().contiguous().clone() for k, v in dense.state_dict().items()}
            config_json = dense.config.to_dict()
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt", "nas_format": fmt})
        (staging / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
        n_params = sum(int(t.numel()) for name, t in tensors.items() if not name.endswith("o_proj.bias"))
        meta = _meta(source, dense, fmt, weight_dtype, n_params)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        tok_dir = supernet.tokenizer_dir
        if tok_dir is not None:
            for item in tok_dir.iterdir():
                if item.is_file():
                    shutil.copy2(item, staging / item.name)
        (staging / "README.md").write_text(model_card(meta))
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = tuple(sorted(p.name for p in out.iterdir()))
    log.info("exported study %s trial %d to %s (%s, %d params)", source.study, source.trial, out, fmt, n_params)
    return ExportResult(path=out, format=fmt, files=files, params=n_params, subnet=source.subnet)


def _meta(source: ExportSource, dense: Supernet, fmt: str, weight_dtype: str, n_params: int) -> dict[str, Any]:
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "format": fmt,
        "dtype": weight_dtype,
        "params": n_params,
        "config": dense.config.to_dict(),
        "layer_rank": list(dense.layer_rank),
        "subnet": source.subnet.to_dict(),
        "subnet_hash": source.subnet.hash,
        "summary": source.subnet.summary(),
        "lineage": {
            "study": source.study,
            "trial": source.trial,
            "supernet_hash": source.supernet_hash,
            "supernet_path": source.supernet_path,
            "fidelity": source.fidelity,
            "harness_versions": list(source.harness_versions),
            "task_hashes": {s.task: s.task_hash for s in source.scores},
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "study_dtype": source.spec.get("dtype"),
        },
        "metrics": [
            {
                "task": s.task,
                "metric": s.metric,
                "value": s.value,
                "stderr": s.stderr,
                "n_examples": s.n_examples,
                "fidelity": s.fidelity,
                "harness_version": s.harness_version,
            }
            for s in source.scores
        ],
        "costs": [{"metric": c.metric, "value": c.value, "method": c.method, "device": c.device} for c in source.costs],
    }


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
        f"{meta['dtype']}, format `{meta['format']}`.",
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
    if meta["metrics"]:
        lines += ["| task | metric | value | stderr | examples | fidelity |", "|---|---|---|---|---|---|"]
        for m in meta["metrics"]:
            err = "–" if m["stderr"] is None else f"{m['stderr']:.4f}"
            lines.append(f"| {m['task']} | {m['metric']} | {m['value']:.4f} | {err} | {m['n_examples']} | {m['fidelity']} |")
    else:
        lines.append("No benchmark scores were recorded for this trial.")
    lines += ["", "## Costs", ""]
    if meta["costs"]:
        lines += ["| cost | value | method | device |", "|---|---|---|---|"]
        for c in meta["costs"]:
            lines.append(f"| {c['metric']} | {c['value']:.6g} | {c['method']} | {c['device']} |")
    else:
        lines.append("No costs were recorded for this trial.")
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
    if hf:
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


# ------------------------------------------------------------------------- load
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


def load_exported(path: str | Path, *, dtype: str | torch.dtype | None = None, device: str = "cpu", tokenizer: bool = True) -> ExportedModel:
    """Load a directory written by :func:`export_subnet` (either format).

    Raises :class:`NasError` for a directory that is not an export or whose weights do
    not match its config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from nas.checkpoint import parse_dtype

    root = Path(path)
    meta = read_export_meta(root)
    config = SupernetConfig.from_dict(meta["config"])
    weights = root / WEIGHTS_FILE
    try:
        state = load_file(str(weights), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise NasError(f"{weights} is missing or unreadable ({exc}); export the model again") from None
    if meta["format"] == HF_FORMAT:
        names = hf_names(config)
        missing = sorted(hf for hf in names.values() if hf not in state)
        if missing:
            raise NasError(f"{weights} lacks {missing[:3]}; it does not match {META_FILE}")
        state = {ours: state[hf] for ours, hf in names.items()}
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
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(root))
    return ExportedModel(model=model, meta=meta, path=root, tokenizer=tok)


# ----------------------------------------------------------------------- verify
#: Metrics whose per-example scores are 0/1 decisions: parity means equality.
EXACT_METRICS = ("acc", "acc_norm", "exact_match", "em", "acc_mutual_info", "mcc", "f1")
RELATIVE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ParityRow:
    task: str
    metric: str
    stored: float
    rescored: float | None
    abs_diff: float | None
    rel_diff: float | None
    ok: bool


@dataclass(frozen=True)
class ParityReport:
    """Re-scores of an export next to the study's stored scores."""

    path: Path
    fidelity: str
    dtype: str
    rows: tuple[ParityRow, ...]
    tolerance: float = RELATIVE_TOLERANCE

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "fidelity": self.fidelity,
            "dtype": self.dtype,
            "tolerance": self.tolerance,
            "ok": self.ok,
            "rows": [r.__dict__ for r in self.rows],
        }


def verify_export(path: str | Path, source: ExportSource, *, dtype: str | None = None) -> ParityReport:
    """Re-score the export at ``path`` on the study's tasks and fidelity with the scorers the
    search uses, and compare with the stored scores: 0/1 metrics (acc, acc_norm, ...)
    must be identical, others (losses, perplexities) within 1e-6 relative.

    ``dtype`` defaults to the study's (``spec.dtype``): the stored scores were computed in it.
    """
    from evaluators.types import Fidelity
    from nas.search import build_scorers
    from nas.space import SearchSpace
    from nas.spec import StudySpec, spec_from_json

    if not source.scores:
        raise NasError(f"study {source.study!r} trial {source.trial} has no stored scores to verify against")
    # the search stores bookkeeping (e.g. supernet_hash) next to the spec's own fields
    spec = spec_from_json({k: v for k, v in source.spec.items() if k in StudySpec.model_fields})
    dtype = dtype or spec.dtype
    exported = load_exported(path, dtype=dtype, tokenizer=False)
    model = exported.model
    loaded = _ExportAsSupernet(
        model=model,
        space=SearchSpace.default(model.config, model.layer_rank),
        path=Path(path),
        content_hash=source.supernet_hash,
        provenance={"export_of": source.supernet_hash},
    )
    fidelity = Fidelity.parse(source.fidelity or "full")
    subnet = model.full_subnet()
    rescored: dict[tuple[str, str], float] = {}
    for scorer in build_scorers(spec, loaded):
        for score in scorer.evaluate(subnet, fidelity).scores:
            rescored[(score.task, score.metric)] = float(score.value)
    rows = []
    for s in source.scores:
        new = rescored.get((s.task, s.metric))
        if new is None:
            rows.append(ParityRow(s.task, s.metric, s.value, None, None, None, False))
            continue
        diff = abs(new - s.value)
        rel = diff / max(abs(s.value), 1e-12)
        ok = diff == 0.0 if s.metric in EXACT_METRICS else rel <= RELATIVE_TOLERANCE
        rows.append(ParityRow(s.task, s.metric, s.value, new, diff, rel, ok))
    return ParityReport(path=Path(path), fidelity=fidelity.label, dtype=str(dtype), rows=tuple(rows))


@dataclass
class _ExportAsSupernet:
    """Just enough of :class:`nas.checkpoint.LoadedSupernet` for the search's scorers, over an
    export directory (whose tokenizer files sit at the top level)."""

    model: Supernet
    space: Any
    path: Path
    content_hash: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> SupernetConfig:
        return self.model.config

    @property
    def tokenizer_dir(self) -> Path | None:
        return self.path if (self.path / "tokenizer_config.json").is_file() else None

    def load_tokenizer(self) -> Any:
        if self.tokenizer_dir is None:
            raise NasError(f"export {self.path} has no tokenizer; lm-eval tasks need one")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path))


__all__ = [
    "EXACT_METRICS",
    "ParityReport",
    "ParityRow",
    "verify_export",
    "CostEntry",
    "ExportResult",
    "ExportSource",
    "ExportedModel",
    "HF_FORMAT",
    "META_FILE",
    "NAS_FORMAT",
    "ScoreRecord",
    "export_source",
    "export_subnet",
    "exportable_as_hf",
    "hf_config_dict",
    "hf_names",
    "load_exported",
    "model_card",
    "read_export_meta",
]
