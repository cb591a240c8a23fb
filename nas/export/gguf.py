"""GGUF exports: a sub-network as one file that llama.cpp (and llama-cpp-python) runs.

:func:`export_gguf` writes ``DIR/model-<quant>.gguf`` (plus ``nas_export.json`` and the
model card) for one trial's sub-network, with its tokenizer (``tokenizer.ggml.*``, see
:mod:`nas.export.gguf_vocab`) and chat template, at ``f32``, ``bf16`` or a block
quantisation (``q8_0``, ``q5_1``, ``q5_0``, ``q4_1``, ``q4_0``; see :mod:`nas.model.quant`);
norms and biases stay f32. Several quantisations of the same sub-network may sit in one
export directory; a GGUF of another supernet or sub-network there is refused.

Which llama.cpp architecture (checked with llama.cpp 0.3.36's sources and by running it):

* every kept layer alike -> ``llama``: the plain LLaMA graph every GGUF tool knows.
* per-layer sizes -> ``deci`` (the Nemotron-NAS graph): it reads ``feed_forward_length``,
  ``attention.head_count`` and ``attention.head_count_kv`` as per-layer arrays and sizes
  each layer's tensors and attention by them. The ``llama`` architecture accepts the
  arrays in its header but builds every layer with layer 0's sizes, so a heterogeneous
  file under ``llama`` fails to load ("wrong shape"). ``deci`` would also run a layer with
  0 query heads (attention skipped) or 0 KV heads (a single ``attn_output`` matrix), and a
  layer with ``d_ff == 0`` — but there it drops the layer's attention output as well
  (``continue`` before the residual update), so a no-FFN layer does not compute what its
  name says; our sub-networks keep >= 1 KV group and >= 1 neuron per layer, so neither
  case is ever written.

Not exported (refused with a message): mixture-of-experts layers and the non-LLaMA family
features (post/sandwich norms, q/k norms, GeGLU, embedding scaling, soft-capping, sliding
windows, custom attention scales, q/k/v clipping). Rotary scaling: none, ``linear`` and
``llama3`` (as a ``rope_freqs`` factor tensor, as llama.cpp's converter writes it).

Our attention rotates pairs ``(i, i + hd/2)`` (Hugging Face's layout); llama.cpp's
``llama``/``deci`` rotate adjacent pairs, so q and k rows are permuted within each head
exactly as llama.cpp's ``convert_hf_to_gguf.py`` does. Rows are output channels, so the
permutation never moves a weight across a quantisation block.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.errors import NasError
from nas.export.card import model_card
from nas.export.format import META_FILE
from nas.export.gguf_vocab import read_vocab
from nas.export.source import ExportSource
from nas.export.writer import export_meta
from nas.model.config import FAMILY_FIELDS, SupernetConfig
from nas.model.directory import LoadedSupernet, load_supernet
from nas.model.layers import rope_inv_freq
from nas.model.quant import QuantFormat, check_blocks, parse_quant
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

log = logging.getLogger(__name__)

GGUF_FORMAT = "gguf"
ARCH_UNIFORM = "llama"
ARCH_PER_LAYER = "deci"
#: Our own metadata keys in every GGUF we write (lineage; the "another supernet" check).
KEY_SUPERNET, KEY_SUBNET, KEY_STUDY, KEY_TRIAL, KEY_QUANT = (
    "nas.supernet_hash", "nas.subnet", "nas.study", "nas.trial", "nas.quant")
#: Family features a GGUF (llama / deci graph) computes: only their LLaMA defaults.
_ALLOWED_FEATURES = {"o_bias"}


def gguf_file_name(fmt: QuantFormat) -> str:
    return f"model-{fmt.name}.gguf"


def gguf_problem(config: SupernetConfig) -> str | None:
    """Why a (dense, extracted) model cannot be written as a GGUF llama.cpp runs, or None."""
    if any(config.layer(i).n_expert for i in range(config.n_layer)):
        return "it has mixture-of-experts layers (GGUF export covers dense LLaMA-style models); export it as nas-dense"
    changed = [name for name, default in FAMILY_FIELDS.items()
               if name not in _ALLOWED_FEATURES and getattr(config, name) != default]
    if changed:
        return (f"its family features {changed} are not computed by llama.cpp's llama graph; "
                "export it as safetensors (the default format)")
    kind = (config.rope_scaling or {}).get("rope_type", (config.rope_scaling or {}).get("type", "default"))
    if kind not in (None, "default", "linear", "llama3"):
        return f"rope_scaling {kind!r} is not written to GGUF (none, linear and llama3 are)"
    return None


def _permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of q or k from HF's rotate-half order to llama.cpp's adjacent pairs, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model: Supernet) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, f32 array in our (out, in) layout) of every tensor of a dense model."""
    cfg = model.config
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    out = [("token_embd.weight", sd["embed.weight"]), ("output_norm.weight", sd["norm"])]
    if not cfg.tie_embeddings:
        out.append(("output.weight", sd["lm_head.weight"]))
    if (cfg.rope_scaling or {}).get("rope_type", (cfg.rope_scaling or {}).get("type")) == "llama3":
        base = rope_inv_freq(cfg.replace(rope_scaling=None))
        out.append(("rope_freqs.weight", (base / rope_inv_freq(cfg)).float().numpy()))
    for i in range(cfg.n_layer):
        d = cfg.layer(i)
        p, b = f"layers.{i}.", f"blk.{i}."
        out.append((b + "attn_norm.weight", sd[p + "attn_norm"]))
        for ours, theirs, heads in (("q_proj", "attn_q", d.n_head), ("k_proj", "attn_k", d.n_kv_head), ("v_proj", "attn_v", 0)):
            w = sd[f"{p}attn.{ours}.weight"]
            out.append((f"{b}{theirs}.weight", _permute_rope(w, heads) if heads else w))
            if f"{p}attn.{ours}.bias" in sd:
                bias = sd[f"{p}attn.{ours}.bias"]
                out.append((f"{b}{theirs}.bias", _permute_rope(bias, heads) if heads else bias))
        out.append((b + "attn_output.weight", sd[p + "attn.o_proj.weight"]))
        if p + "attn.o_proj.bias" in sd:
            out.append((b + "attn_output.bias", sd[p + "attn.o_proj.bias"]))
        out.append((b + "ffn_norm.weight", sd[p + "ffn_norm"]))
        for ours, theirs in (("gate_proj", "ffn_gate"), ("up_proj", "ffn_up"), ("down_proj", "ffn_down")):
            out.append((f"{b}{theirs}.weight", sd[f"{p}ffn.{ours}.weight"]))
    return out


def write_gguf(model: Supernet, path: str | Path, *, quant: str | QuantFormat, tokenizer_dir: Path,
               metadata: dict[str, Any] | None = None, name: str = "") -> dict[str, Any]:
    """Write the dense ``model`` as a GGUF file at ``path`` in format ``quant`` (2-D weights;
    1-D tensors stay f32). Returns what was written (architecture, bytes, tensor count)."""
    import gguf  # deferred: only GGUF exports need the writer

    fmt = parse_quant(quant)
    cfg = model.config
    problem = gguf_problem(cfg)
    if problem:
        raise NasError(f"cannot write a GGUF: {problem}")
    dims = [cfg.layer(i) for i in range(cfg.n_layer)]
    check_blocks(fmt, _as_subnet(cfg), cfg.head_dim)
    arch = ARCH_UNIFORM if cfg.is_homogeneous else ARCH_PER_LAYER
    vocab = read_vocab(tokenizer_dir, vocab_size=cfg.vocab_size, bos_id=cfg.bos_token_id, eos_id=cfg.eos_token_id)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name or "nas sub-network")
    writer.add_file_type(fmt.file_type)
    if fmt.is_block:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.d_model)
    writer.add_block_count(cfg.n_layer)
    per_layer = arch == ARCH_PER_LAYER
    writer.add_feed_forward_length([d.d_ff for d in dims] if per_layer else dims[0].d_ff)
    writer.add_head_count([d.n_head for d in dims] if per_layer else dims[0].n_head)
    writer.add_head_count_kv([d.n_kv_head for d in dims] if per_layer else dims[0].n_kv_head)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(float(cfg.rope_theta))
    writer.add_layer_norm_rms_eps(float(cfg.norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    scaling = cfg.rope_scaling or {}
    if scaling.get("rope_type", scaling.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    vocab.write(writer)
    for key, value in (metadata or {}).items():
        if isinstance(value, int) and not isinstance(value, bool):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, str(value))
    qtype = getattr(gguf.GGMLQuantizationType, fmt.ggml_type)
    n_bytes = 0
    for tensor_name, array in gguf_tensors(model):
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim == 2 and fmt.name != "f32":
            data = gguf.quants.quantize(array, qtype)
            writer.add_tensor(tensor_name, data, raw_shape=data.shape, raw_dtype=qtype)
        else:
            data = array
            writer.add_tensor(tensor_name, data)
        n_bytes += data.nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"architecture": arch, "quant": fmt.name, "tensor_bytes": int(n_bytes), "file_bytes": os.path.getsize(path),
            "tokenizer_pre": vocab.pre, "chat_template": vocab.chat_template is not None}


def _as_subnet(cfg: SupernetConfig) -> SubnetConfig:
    dims = [cfg.layer(i) for i in range(cfg.n_layer)]
    return SubnetConfig(layers=tuple(range(cfg.n_layer)), n_head=tuple(d.n_head for d in dims),
                        d_ff=tuple(d.d_ff for d in dims), d_model=cfg.d_model)


def read_gguf_lineage(path: str | Path) -> dict[str, Any]:
    """Our ``nas.*`` metadata of a GGUF file (empty for a GGUF we did not write)."""
    from gguf import GGUFReader  # deferred: only GGUF exports need the reader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a GGUF file"
        raise NasError(f"{path} is not a readable GGUF file ({exc}); delete it or choose another directory") from None
    out: dict[str, Any] = {}
    for key in (KEY_SUPERNET, KEY_SUBNET, KEY_STUDY, KEY_TRIAL, KEY_QUANT):
        field = reader.fields.get(key)
        if field is not None:
            out[key] = field.contents()
    return out


@dataclass(frozen=True)
class GgufExport:
    path: Path  # the export directory
    file: Path  # the GGUF file
    quant: str
    architecture: str
    file_bytes: int
    params: int
    subnet: SubnetConfig

    @property
    def format(self) -> str:
        return GGUF_FORMAT


def _check_directory(out: Path, source: ExportSource, file_name: str, overwrite: bool) -> dict[str, Any] | None:
    """Refuse a directory holding anything but an export of the same supernet and sub-network
    (a GGUF of another supernet included); return its metadata when it is such an export."""
    if out.exists() and not out.is_dir():
        raise NasError(f"export target {out} is a file; give a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    meta_file = out / META_FILE
    for gguf_path in sorted(out.glob("*.gguf")):
        lineage = read_gguf_lineage(gguf_path)
        theirs = lineage.get(KEY_SUPERNET)
        if theirs != source.supernet_hash or lineage.get(KEY_SUBNET) != source.subnet.to_json():
            what = f"supernet {theirs}" if theirs else "a model this tool did not write"
            raise NasError(f"{out} holds {gguf_path.name}, a GGUF of {what} (sub-network {lineage.get(KEY_SUBNET, '?')}), "
                           f"not of supernet {source.supernet_hash} sub-network {source.subnet.to_json()}; "
                           "export into a new directory")
    if not meta_file.is_file():
        raise NasError(f"export directory {out} is not empty and not an export; choose a new directory")
    meta = json.loads(meta_file.read_text())
    lin = meta.get("lineage", {})
    if lin.get("supernet_hash") != source.supernet_hash or meta.get("subnet") != source.subnet.to_dict():
        raise NasError(f"{out} is an export of supernet {lin.get('supernet_hash')} sub-network {meta.get('subnet')}, not of "
                       f"{source.supernet_hash} {source.subnet.to_dict()}; export into a new directory")
    if (out / file_name).exists() and not overwrite:
        raise NasError(f"{out / file_name} already exists; pass --overwrite to replace it")
    return meta


def export_gguf(source: ExportSource, out_dir: str | Path, *, quant: str = "f32", overwrite: bool = False,
                supernet: LoadedSupernet | None = None) -> GgufExport:
    """Write ``source``'s sub-network as ``out_dir/model-<quant>.gguf`` with its card.

    ``out_dir`` may be new, empty, or an export of the same supernet and sub-network (its
    other files are kept, its card lists every GGUF in it)."""
    fmt = parse_quant(quant)
    out = Path(out_dir)
    file_name = gguf_file_name(fmt)
    existing = _check_directory(out, source, file_name, overwrite)
    if supernet is None:
        if not source.supernet_path or not Path(source.supernet_path).is_dir():
            raise NasError(f"the supernet of study {source.study!r} ({source.supernet_hash}) is not at "
                           f"{source.supernet_path or '(no path stored)'}; import it again there")
        supernet = load_supernet(source.supernet_path)
    if supernet.content_hash != source.supernet_hash:
        raise NasError(f"the supernet at {supernet.path} has content hash {supernet.content_hash}, but study "
                       f"{source.study!r} was run on {source.supernet_hash}; point the study at the right supernet")
    source.subnet.check_fits(supernet.config)
    if supernet.tokenizer_dir is None:
        raise NasError(f"supernet {supernet.path} has no tokenizer/ directory; a GGUF carries its tokenizer, so import "
                       "the supernet with one")
    problem = gguf_problem(supernet.config)
    if problem:
        raise NasError(f"cannot export study {source.study!r} trial {source.trial} as GGUF: {problem}")
    check_blocks(fmt, source.subnet, supernet.config.head_dim)
    with torch.no_grad():
        dense = supernet.model.extract(source.subnet).float().eval()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{file_name}.tmp"
    try:
        info = write_gguf(dense, tmp, quant=fmt, tokenizer_dir=supernet.tokenizer_dir,
                          name=f"{source.study} trial {source.trial} ({source.subnet.summary()})",
                          metadata={KEY_SUPERNET: source.supernet_hash, KEY_SUBNET: source.subnet.to_json(),
                                    KEY_STUDY: source.study, KEY_TRIAL: int(source.trial), KEY_QUANT: fmt.name})
        tmp.replace(out / file_name)
        meta = existing or export_meta(source, dense, GGUF_FORMAT, fmt.name, dense.num_params())
        meta.setdefault("gguf", {})[fmt.name] = {"file": file_name, **info}
        _write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
        _write_text(out / "README.md", model_card(meta))
    except BaseException:
        tmp.unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    log.info("exported study %s trial %d to %s (%s, %s)", source.study, source.trial, out / file_name, info["architecture"], fmt.name)
    return GgufExport(path=out, file=out / file_name, quant=fmt.name, architecture=info["architecture"],
                      file_bytes=info["file_bytes"], params=dense.num_params(), subnet=source.subnet)


def record_verification(out_dir: str | Path, quant: str, report: dict[str, Any]) -> None:
    """Store an engine check of ``out_dir``'s GGUF ``quant`` in its nas_export.json and card."""
    out = Path(out_dir)
    meta = json.loads((out / META_FILE).read_text())
    entry = (meta.get("gguf") or {}).get(quant)
    if entry is None:
        raise NasError(f"{out} has no {quant} GGUF to record a verification for")
    entry["verify"] = {k: v for k, v in report.items() if k not in ("greedy_ours", "greedy_engine")}
    _write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    _write_text(out / "README.md", model_card(meta))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


__all__ = ["ARCH_PER_LAYER", "ARCH_UNIFORM", "GGUF_FORMAT", "GgufExport", "export_gguf", "gguf_file_name", "gguf_problem",
           "gguf_tensors", "read_gguf_lineage", "record_verification", "write_gguf"]
