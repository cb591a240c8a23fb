"""GGUF exports: the file's keys and tensors, the round trip through llama.cpp (llama-cpp-python)
for a heterogeneous sub-network, the CLI and its refusals."""

from __future__ import annotations

import builtins
import json
import statistics
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import storage
from nas.cli import app, main
from nas.errors import NasError
from nas.export import ExportSource
from nas.export.engine import VERIFY_TEXT, require_llama_cpp, verify_gguf
from nas.export.gguf import export_gguf, read_gguf_lineage
from nas.model.config import SupernetConfig
from nas.model.directory import load_supernet, save_supernet
from nas.model.fakequant import fake_quantized
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet
from tests._llama import llama_cpp_or_skip
from tests._tiny import tiny_tokenizer

UNIFORM = SubnetConfig(layers=(0, 2), n_head=(4, 4), d_ff=(64, 64), d_model=64)
PER_LAYER = SubnetConfig(layers=(0, 1, 2), n_head=(4, 2, 4), d_ff=(128, 32, 64), d_model=64)


@pytest.fixture(scope="module")
def supernet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny supernet (3 layers, d_model 64, head_dim 16, GQA 4/2, d_ff 128) with a byte-level
    BPE tokenizer and weights large enough that greedy decoding has clear winners."""
    tok = tiny_tokenizer(400)
    cfg = SupernetConfig(vocab_size=len(tok), d_model=64, n_layer=3, n_head=4, n_kv_head=2, d_ff=128, head_dim=16,
                         rope_theta=10000.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Supernet(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.uniform_(0.8, 1.2) if name.endswith("norm") else p.normal_(0.0, 0.15)
    path = tmp_path_factory.mktemp("gguf") / "sn"
    return path, save_supernet(model, path, tokenizer=tok)


def _source(supernet: tuple[Path, str], subnet: SubnetConfig, trial: int = 3) -> ExportSource:
    path, digest = supernet
    return ExportSource(study="deploy", trial=trial, subnet=subnet, supernet_hash=digest, supernet_path=str(path),
                        fidelity="full", spec={})


def test_gguf_file_holds_per_layer_sizes_tokenizer_and_lineage(supernet, tmp_path: Path) -> None:  # noqa: ANN001
    from gguf import GGUFReader

    het = export_gguf(_source(supernet, PER_LAYER), tmp_path / "het", quant="q8_0")
    uni = export_gguf(_source(supernet, UNIFORM), tmp_path / "uni", quant="f32")
    assert (het.architecture, uni.architecture) == ("deci", "llama")
    reader = GGUFReader(str(het.file))
    field = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    assert field["deci.feed_forward_length"] == [128, 32, 64]
    assert field["deci.attention.head_count"] == [4, 2, 4] and field["deci.attention.head_count_kv"] == [2, 1, 2]
    assert field["deci.attention.key_length"] == 16 and field["general.file_type"] == 7
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["blk.1.ffn_down.weight"].tensor_type.name == "Q8_0" and tuple(tensors["blk.1.ffn_down.weight"].shape) == (32, 64)
    assert tensors["blk.1.attn_norm.weight"].tensor_type.name == "F32"
    tok = load_supernet(supernet[0]).load_tokenizer()
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == len(tok) and reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert read_gguf_lineage(het.file)["nas.subnet"] == PER_LAYER.to_json()
    meta = json.loads((tmp_path / "het" / "nas_export.json").read_text())
    assert meta["format"] == "gguf" and meta["gguf"]["q8_0"]["architecture"] == "deci"
    card = (tmp_path / "het" / "README.md").read_text()
    assert "| model-q8_0.gguf | q8_0 | deci |" in card and "llama_cpp" in card
    with pytest.raises(NasError, match="GGUF export"):
        from nas.export import load_exported

        load_exported(tmp_path / "het")


def test_heterogeneous_gguf_round_trip_through_llama_cpp(supernet, tmp_path: Path) -> None:  # noqa: ANN001
    llama_cpp_or_skip()
    loaded = load_supernet(supernet[0], dtype="fp32")
    tok = loaded.load_tokenizer()
    src = _source(supernet, PER_LAYER)
    export_gguf(src, tmp_path / "exp", quant="f32")
    report = verify_gguf(tmp_path / "exp" / "model-f32.gguf", loaded.model, PER_LAYER, quant="f32", tokenizer=tok)
    assert report.n_tokens == len(tok(VERIFY_TEXT)["input_ids"]) > 50
    assert report.logprob_max_abs_diff <= 1e-3 and report.top1_agree == 1.0
    assert report.greedy_identical and len(report.greedy_engine) == 32 and report.tokenizer_agrees
    assert report.ok
    # a quantised file: what llama.cpp runs is what our fake-quantised scoring computes, up to its kernels
    export_gguf(src, tmp_path / "exp", quant="q4_0")
    fake = fake_quantized(loaded.model, "q4_0")
    q = verify_gguf(tmp_path / "exp" / "model-q4_0.gguf", loaded.model, PER_LAYER, quant="q4_0", tokenizer=tok, fake_quant=fake)
    assert q.kl_mean > 10 * q.kl_vs_fake_quant and q.kl_vs_fake_quant < 5e-3 and q.top1_vs_fake_quant >= 0.9
    assert q.top1_vs_fake_quant > q.top1_agree


def test_a_narrower_residual_stream_round_trips_through_llama_cpp(supernet, tmp_path: Path) -> None:  # noqa: ANN001
    """d_model 32 of 64 with head_dim 16: the file must carry the head size, which llama.cpp
    would otherwise take as d_model / heads."""
    llama_cpp_or_skip()
    narrow = SubnetConfig(layers=(0, 2), n_head=(4, 4), d_ff=(64, 64), d_model=32)
    loaded = load_supernet(supernet[0], dtype="fp32")
    tok = loaded.load_tokenizer()
    export_gguf(_source(supernet, narrow), tmp_path / "exp", quant="f32")
    report = verify_gguf(tmp_path / "exp" / "model-f32.gguf", loaded.model, narrow, quant="f32", tokenizer=tok)
    assert report.logprob_max_abs_diff <= 1e-3 and report.greedy_identical and report.ok


def test_llama_architecture_refuses_per_layer_sizes(supernet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Why per-layer sub-networks are written as ``deci``: llama's graph sizes every layer as layer 0."""
    llama_cpp = llama_cpp_or_skip()
    import nas.export.gguf as gguf_export

    monkeypatch.setattr(gguf_export, "ARCH_PER_LAYER", "llama")
    export_gguf(_source(supernet, PER_LAYER), tmp_path / "x", quant="f32")
    with pytest.raises(ValueError, match="Failed to load"):
        llama_cpp.Llama(model_path=str(tmp_path / "x" / "model-f32.gguf"), verbose=False, n_ctx=64)


def test_gguf_bad_input(supernet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    with pytest.raises(NasError, match=r"unknown quantisation 'q3_x'; valid ones: f32, bf16, q8_0"):
        export_gguf(_source(supernet, UNIFORM), tmp_path / "a", quant="q3_x")
    narrow = SubnetConfig(layers=(0, 1), n_head=(4, 4), d_ff=(128, 48), d_model=64)
    with pytest.raises(NasError, match=r"layer 1 keeps d_ff=48, not a multiple of 32 \(keep 32 or 64\)"):
        export_gguf(_source(supernet, narrow), tmp_path / "b", quant="q4_0")
    assert not (tmp_path / "b").exists()
    export_gguf(_source(supernet, narrow), tmp_path / "b", quant="bf16")  # no blocks: any width
    # another sub-network's (or supernet's) export directory is refused, its files kept
    export_gguf(_source(supernet, UNIFORM), tmp_path / "c", quant="f32")
    with pytest.raises(NasError, match="holds model-f32.gguf, a GGUF of supernet"):
        export_gguf(_source(supernet, PER_LAYER), tmp_path / "c", quant="q8_0")
    other = ExportSource(**{**_source(supernet, UNIFORM).__dict__, "supernet_hash": "0123456789abcdef"})
    with pytest.raises(NasError, match="a GGUF of supernet"):
        export_gguf(other, tmp_path / "c", quant="q8_0")
    with pytest.raises(NasError, match="--overwrite"):
        export_gguf(_source(supernet, UNIFORM), tmp_path / "c", quant="f32")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["README.md", "model-f32.gguf", "nas_export.json"]
    # llama-cpp-python missing: one message naming the install command
    real_import = builtins.__import__

    def no_llama(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    with pytest.raises(NasError, match=r"llama-cpp-python is not installed.*pip install 'llama-cpp-python==0.3.36'"):
        require_llama_cpp()


def _study(url: str, supernet: tuple[Path, str], subnets: list[SubnetConfig]) -> None:
    path, digest = supernet
    cfg = load_supernet(path).config
    with storage.open_database(url) as db:
        sn = storage.upsert_supernet(db, content_hash=digest, name="tiny", path=str(path), config=cfg.to_dict(),
                                     space=SearchSpace.default(cfg).to_dict(), provenance={})
        study = storage.create_study(db, name="deploy", optuna_study_name="deploy", spec={"name": "deploy"}, supernet_id=sn)
        for number, subnet in enumerate(subnets):
            sub = storage.get_or_create_subnet(db, supernet_id=sn, config_json=subnet.to_json(), config_hash=subnet.hash,
                                               n_layer=subnet.n_layer, params=1)
            storage.record_trial(db, study_id=study, trial_number=number, subnet_id=sub, fidelity="full", feasible=True,
                                 state="COMPLETE")


def _nas(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``nas`` as the console script does: (exit status, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    return int(exit_.value.code or 0), capsys.readouterr().err


def test_cli_exports_and_verifies_gguf(supernet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    _study(url, supernet, [UNIFORM, PER_LAYER, SubnetConfig(**{**PER_LAYER.__dict__, "quant": "q4_0"})])
    out = tmp_path / "deploy"
    code, err = _nas(capsys, "export", "deploy", "1", "--out", str(out), "--format", "gguf", "--quant", "q9", "--storage", url)
    assert code == 2 and err.strip() == "error: unknown quantisation 'q9'; valid ones: f32, bf16, q8_0, q5_1, q5_0, q4_1, q4_0"
    code, err = _nas(capsys, "export", "deploy", "1", "--out", str(out), "--quant", "q8_0", "--storage", url)
    assert code == 2 and "add --format gguf" in err
    assert not out.exists()
    llama_cpp_or_skip()
    runner = CliRunner()
    for quant in ("f32", "q8_0"):
        res = runner.invoke(app, ["export", "deploy", "1", "--out", str(out), "--format", "gguf", "--quant", quant, "--verify",
                                  "--storage", url])
        assert res.exit_code == 0, res.output
        assert "verified in llama.cpp" in res.output and "deci" in res.output
    meta = json.loads((out / "nas_export.json").read_text())
    assert set(meta["gguf"]) == {"f32", "q8_0"} and meta["lineage"]["trial"] == 1
    assert meta["gguf"]["f32"]["verify"]["logprob_max_abs_diff"] <= 1e-3 and meta["gguf"]["f32"]["verify"]["greedy_identical"]
    assert 0 < meta["gguf"]["q8_0"]["verify"]["kl_vs_fake_quant"] < meta["gguf"]["q8_0"]["verify"]["kl_mean"]
    card = (out / "README.md").read_text()
    assert "greedy identical" in card and "mean KL" in card and "tok/s |" in card and "llama-cpp-python 0.3.36" in card
    assert meta["gguf"]["q8_0"]["verify"]["engine_latency"]["engine_latency_ms"] > 0
    # the other trial's GGUF does not go into this directory
    code, err = _nas(capsys, "export", "deploy", "0", "--out", str(out), "--format", "gguf", "--storage", url)
    assert code == 2 and "export into a new directory" in err and len(err.strip().splitlines()) == 1
    # a trial scored at q4_0 (spec quant_choices) is exported in its own format by default
    code, err = _nas(capsys, "export", "deploy", "2", "--out", str(tmp_path / "q"), "--format", "gguf", "--storage", url)
    assert code == 0, err
    assert [p.name for p in (tmp_path / "q").glob("*.gguf")] == ["model-q4_0.gguf"]


def test_engine_latency_of_a_gguf(supernet, tmp_path: Path) -> None:  # noqa: ANN001
    from nas.export.engine import engine_latency

    llama_cpp_or_skip()
    exp = export_gguf(_source(supernet, PER_LAYER), tmp_path / "lat", quant="q8_0")
    lat = engine_latency(exp.file, prompt_len=16, decode_tokens=4, repeats=2, n_threads=1, clock="process")
    assert lat.prefill_ms > 0 and lat.decode_tokens_per_s > 0 and len(lat.prefill_samples) == len(lat.decode_samples) == 2
    assert lat.prefill_ms == pytest.approx(statistics.median(lat.prefill_samples), abs=1e-3)  # the median of the repeats
    assert "llama-cpp-python 0.3.36" in lat.device and lat.device.endswith("|threads=1|llama-cpp-python 0.3.36|process")
    assert lat.to_dict()["engine_latency_ms"] == lat.prefill_ms
    with pytest.raises(NasError, match="clock 'cpu'"):
        engine_latency(exp.file, clock="cpu")
