"""Writing an export: the dense model of one trial's sub-network, with its card and lineage.

:func:`export_subnet` extracts the sub-network from its supernet (checked against the
study's content hash), writes it in the ``hf-llama`` (the family's own transformers
architecture) or ``nas-dense`` format (see
:mod:`nas.export.format`) into a staging directory beside the target, and renames it
into place, so a failed export never leaves a half-written directory.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from nas.errors import NasError
from nas.export.card import model_card
from nas.export.format import (
    EXPORT_FORMAT_VERSION,
    HF_FORMAT,
    META_FILE,
    NAS_FORMAT,
    WEIGHTS_FILE,
    exportable_as_hf,
    hf_config_dict,
    hf_tensors,
)
from nas.export.source import ExportSource, ScoreRecord
from nas.model.directory import LoadedSupernet, load_supernet, parse_dtype
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

log = logging.getLogger(__name__)


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
    supernet: LoadedSupernet | None = None,
    healed: LoadedSupernet | None = None,
    heal: dict[str, Any] | None = None,
) -> ExportResult:
    """Write the dense model of ``source``'s sub-network to ``out_dir``.

    ``supernet``: an already loaded ``LoadedSupernet`` (else it is loaded from the path
    stored with the study). ``dtype``: ``bf16``/``fp32`` (default: as the supernet was
    saved). Refuses a non-empty ``out_dir`` unless ``overwrite``, and a supernet whose
    content hash is not the study's. ``healed``: a supernet healed from the study's
    (``nas export --heal``; its provenance must name the study's supernet as its parent)
    whose weights are exported instead; ``heal`` is what the card says of the heal.
    """
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
    weights = supernet
    if healed is not None:
        parent = (healed.provenance.get("heal") or {}).get("parent_hash")
        if parent != source.supernet_hash:
            raise NasError(
                f"the healed supernet at {healed.path} was healed from {parent or 'no recorded parent'}, not from the "
                f"supernet {source.supernet_hash} of study {source.study!r}; heal the study's supernet"
            )
        weights = healed
    with torch.no_grad():
        dense = weights.model.extract(source.subnet).eval()
        target = parse_dtype(dtype)
        if target is not None:
            dense = dense.to(target)
    fmt = HF_FORMAT if exportable_as_hf(dense.config) else NAS_FORMAT
    weight_dtype = str(dense.lm_head_weight.dtype).removeprefix("torch.")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if fmt == HF_FORMAT:
            tensors = hf_tensors(dense)
            config_json = hf_config_dict(dense.config)
            config_json["torch_dtype"] = weight_dtype
        else:
            tensors = {k: v.detach().contiguous().clone() for k, v in dense.state_dict().items()}
            config_json = dense.config.to_dict()
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt", "nas_format": fmt})
        (staging / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
        n_params = dense.num_params()
        meta = export_meta(source, dense, fmt, weight_dtype, n_params)
        if fmt == HF_FORMAT:
            meta["hf_architecture"] = config_json["architectures"][0]
        if heal is not None:
            meta["heal"] = heal
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


def export_meta(source: ExportSource, dense: Supernet, fmt: str, weight_dtype: str, n_params: int) -> dict[str, Any]:
    """The ``nas_export.json`` of an export (every format): config, sub-network, lineage, scores, costs."""
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
        "metrics": [_metric(s) for s in source.scores],
        "confirmed_metrics": [_metric(s) for s in source.confirmed],
        "z": source.z,
        "costs": [{"metric": c.metric, "value": c.value, "method": c.method, "device": c.device} for c in source.costs],
    }


def _metric(s: ScoreRecord) -> dict[str, Any]:
    return {"task": s.task, "metric": s.metric, "value": s.value, "stderr": s.stderr, "n_examples": s.n_examples,
            "fidelity": s.fidelity, "harness_version": s.harness_version}


__all__ = ["ExportResult", "export_meta", "export_subnet"]
