"""llama.cpp latency as a search cost: the per-device engine lookup table (its arithmetic,
calibration and storage), the spec option ``predicted_engine_latency_ms`` and its refusals,
and a table built in the real engine on a tiny supernet driving a tiny study."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import storage
from evaluators.engine_table import EngineLatencyTable, config_key, engine_format, variant_key
from evaluators.errors import EvaluatorError
from nas.cli import app, main
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.directory import load_supernet, save_supernet
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet
from nas.search.study import open_search
from tests._llama import llama_cpp_or_skip
from tests._search import make_spec
from tests._tiny import tiny_tokenizer

CONFIG = SupernetConfig(vocab_size=64, d_model=64, n_layer=3, n_head=4, n_kv_head=2, d_ff=128, head_dim=16)


def _hand_table() -> EngineLatencyTable:
    layers = {variant_key(64, 4, 2, 128): 3.0, variant_key(64, 2, 1, 32): 1.0, variant_key(64, 4, 2, 32): 2.0}
    return EngineLatencyTable(
        fingerprint="cpu:test|cores=2|threads=1|llama-cpp-python 0.0|process", config=CONFIG, prompt_len=16, threads=1,
        clock="process", layer_ms={"q4_0": dict(layers), "f32": {k: 2 * v for k, v in layers.items()}},
        head_ms={"q4_0": {64: 0.5}, "f32": {64: 1.5}}, line={"q4_0": (2.0, 1.0)},
    )


def test_table_prediction_is_its_line_over_head_plus_blocks() -> None:
    table = _hand_table()
    sub = SubnetConfig(layers=(0, 1, 2), n_head=(4, 2, 4), d_ff=(128, 32, 32), d_model=64)
    assert table.raw_ms(sub, "q4_0") == pytest.approx(0.5 + 3.0 + 1.0 + 2.0)
    assert table.predict(sub, "Q4_0") == pytest.approx(2.0 * 6.5 + 1.0)
    assert table.predict(sub, "f32") == pytest.approx(1.5 + 12.0)  # no line fitted: the raw sum
    with pytest.raises(EvaluatorError, match=r"no q8_0 timings \(it has \['f32', 'q4_0'\]\).*nas supernet engine-table"):
        table.predict(sub, "q8_0")
    odd = SubnetConfig(layers=(0, 1), n_head=(2, 2), d_ff=(128, 64), d_model=64)
    with pytest.raises(EvaluatorError, match=r"no q4_0 timing of layer variant d64\.h2\.kv1\.ff128.*nas supernet engine-table"):
        table.predict(odd, "q4_0")
    assert engine_format("", "fp32") == "f32" and engine_format("", "bf16") == "bf16" and engine_format("q4_0", "bf16") == "q4_0"


def test_calibration_fits_a_line_per_format_with_leave_one_out_predictions(tmp_path: Path) -> None:
    table = _hand_table()
    subs = [SubnetConfig(layers=tuple(range(n)), n_head=(4,) * n, d_ff=(d,) * n, d_model=64) for n, d in
            ((1, 32), (2, 128), (3, 128), (3, 32))]
    # measured = 1.5 * raw + 4 exactly (q4_0), and a noisy point in f32
    measured = [(s, "q4_0", 1.5 * table.raw_ms(s, "q4_0") + 4.0) for s in subs]
    measured += [(s, "f32", table.raw_ms(s, "f32") + (5.0 if i == 2 else 0.0)) for i, s in enumerate(subs)]
    table.calibrate(measured)
    assert table.line["q4_0"] == pytest.approx((1.5, 4.0))
    q4 = [c for c in table.calibration if c["quant"] == "q4_0"]
    assert len(q4) == 4 and all(c["loo_predicted_ms"] == pytest.approx(c["measured_ms"], rel=1e-6) for c in q4)
    f32 = [c for c in table.calibration if c["quant"] == "f32"]
    assert abs(f32[2]["loo_predicted_ms"] - f32[2]["measured_ms"]) > 1.0  # the outlier is not in its own fit
    assert 0 < table.loo_mape < 1
    path = tmp_path / "tables.json"
    table.save(path)
    other = EngineLatencyTable.from_dict({**table.to_dict(), "fingerprint": "cpu:other|cores=8|threads=1|x|process"})
    other.save(path)  # another device's table in the same file is kept beside it
    back = EngineLatencyTable.load(path, CONFIG, fingerprint=table.fingerprint)
    assert back.to_dict() == table.to_dict()
    assert len(json.loads(path.read_text())["tables"]) == 2
    with pytest.raises(EvaluatorError, match=r"no engine latency table for cpu:nowhere.*nas supernet engine-table"):
        EngineLatencyTable.load(path, CONFIG, fingerprint="cpu:nowhere")
    with pytest.raises(EvaluatorError, match=rf"config {config_key(CONFIG.replace(d_ff=256))}"):
        EngineLatencyTable.load(path, CONFIG.replace(d_ff=256), fingerprint=table.fingerprint)
    path.write_text("{not json")
    with pytest.raises(EvaluatorError, match=r"not readable JSON.*delete it and rebuild"):
        EngineLatencyTable.load(path, CONFIG, fingerprint=table.fingerprint)


def test_spec_takes_predicted_engine_latency_and_refuses_the_measured_one(tmp_path: Path) -> None:
    spec = make_spec(tmp_path / "sn", "sqlite://", objectives=["heldout_loss", "predicted_engine_latency"],
                     constraints={"predicted_engine_latency_ms": 50})
    assert spec.cost_metrics == ("predicted_engine_latency_ms",)
    for field in ({"objectives": ["heldout_loss", "engine_latency_ms"]}, {"constraints": {"engine_latency_ms": 20}}):
        with pytest.raises(NasError, match=r"engine_latency_ms is measured in llama\.cpp on an exported GGUF.*"
                                           r"predicted_engine_latency_ms.*nas supernet engine-table"):
            make_spec(tmp_path / "sn", "sqlite://", **field)


@pytest.fixture(scope="module")
def supernet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny supernet with a byte-level BPE tokenizer (a GGUF carries its tokenizer)."""
    tok = tiny_tokenizer(300)
    cfg = SupernetConfig(vocab_size=len(tok), d_model=64, n_layer=3, n_head=4, n_kv_head=2, d_ff=128, head_dim=16,
                         rope_theta=10000.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Supernet(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm"):
                p.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("engine") / "sn"
    save_supernet(model, path, tokenizer=tok)
    return path


SPACE = {"n_layer_choices": [2, 3], "n_head_choices": [2, 4], "d_ff_choices": [32, 128]}


def test_engine_table_from_llama_cpp_drives_a_study(supernet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    llama_cpp = llama_cpp_or_skip()
    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path / "work"))
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    fields = dict(name="engine", space=SPACE, quant_choices=["f32", "q8_0"], seed=1, budget={"n_trials": 6},
                  objectives=["heldout_loss", "predicted_engine_latency_ms"])
    spec = make_spec(supernet, url, **fields)
    loaded = load_supernet(supernet, dtype="fp32")
    # no table on this device yet: one error naming the command that makes one
    with pytest.raises(NasError, match=r"predicted_engine_latency_ms: .*no engine latency table.*nas supernet engine-table"):
        open_search(spec, loaded=loaded)

    spec_file = tmp_path / "study.yaml"
    spec_file.write_text(json.dumps({**{k: v for k, v in spec.to_dict().items() if k in (
        "name", "supernet", "space", "tasks", "objectives", "budget", "dtype", "quant_choices", "storage")},
        "confirmation": None}))
    result = CliRunner().invoke(app, ["supernet", "engine-table", str(supernet), "--spec", str(spec_file), "--prompt", "16",
                                      "--repeats", "1", "--calibration", "3", "--check", "2"])
    assert result.exit_code == 0, result.output
    assert "leave-one-out MAPE" in result.output
    table = EngineLatencyTable.load(tmp_path / "work" / "engine_latency_tables.json", loaded.config)
    assert table.formats == ("f32", "q8_0") and table.prompt_len == 16 and table.stack_depth == 3
    assert f"llama-cpp-python {llama_cpp.__version__}" in table.fingerprint and table.fingerprint.endswith("|threads=1|"
                                                                                    f"llama-cpp-python {llama_cpp.__version__}|process")
    wanted = {variant_key(64, h, h // 2, f) for h in (2, 4) for f in (32, 128)}
    assert all(set(table.layer_ms[f]) == wanted for f in table.formats)
    assert len(table.calibration) == 6 and all(c["measured_ms"] > 0 and c["loo_predicted_ms"] is not None
                                               for c in table.calibration)
    assert table.loo_mape is not None
    # 2 held-out models per format, timed with the table and predicted by it, not fitted
    assert len(table.checks) == 4 and table.check_mape is not None
    fitted = {c["subnet"] for c in table.calibration}
    assert all(c["subnet"] not in fitted and c["predicted_ms"] == pytest.approx(
        table.predict(SubnetConfig.from_json(c["subnet"]), c["quant"]), abs=1e-3) for c in table.checks)

    summary = open_search(spec, loaded=loaded).optimize()
    assert summary.complete == 6
    with storage.open_database(url, create=False) as db:
        rows = storage.list_trials(db, "engine")
        seen = set()
        for row in rows:
            subnet = SubnetConfig.from_json(storage.get_subnet(db, row.subnet_id).config_json)
            (cost,) = storage.find_costs(db, supernet_hash=loaded.content_hash, config_hash=subnet.hash,
                                         metrics=["predicted_engine_latency_ms"], method="predicted")
            # what the study recorded is the table's prediction for the candidate in its own format, on this device
            assert cost.value == pytest.approx(table.predict(subnet, subnet.quant))
            assert cost.device == table.fingerprint
            seen.add(subnet.quant)
    assert seen <= {"f32", "q8_0"}

    # a constraint on it: refused up front when even the fastest candidate cannot meet it
    fastest = min(table.predict(SubnetConfig(layers=(0, 2), n_head=(2, 2), d_ff=(32, 32), d_model=64), q) for q in ("f32", "q8_0"))
    tight = make_spec(supernet, url, **{**fields, "name": "tight", "constraints": {"predicted_engine_latency_ms": fastest / 2}})
    with pytest.raises(NasError, match=r"predicted_engine_latency_ms <= .* but even the smallest sub-network"):
        open_search(tight, loaded=loaded)
    # a format the table was not timed in
    with pytest.raises(NasError, match=r"no timings in \['q4_0'\].*nas supernet engine-table"):
        open_search(make_spec(supernet, url, **{**fields, "name": "q4", "quant_choices": ["q4_0"]}), loaded=loaded)


def _nas(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``nas`` as the console script does: (exit status, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    return int(exit_.value.code or 0), capsys.readouterr().err


def test_engine_table_command_refuses_bad_input(supernet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    llama_cpp_or_skip()
    out = tmp_path / "t.json"
    base = ["supernet", "engine-table", str(supernet), "--out", str(out)]
    code, err = _nas(capsys, *base, "--quant", "q9")
    assert code == 2 and err.strip() == "error: unknown quantisation 'q9'; valid ones: f32, bf16, q8_0, q5_1, q5_0, q4_1, q4_0"
    code, err = _nas(capsys, *base, "--threads", "2")
    assert code == 2 and "clock 'process' measures latency only with one thread" in err and "--clock wall" in err
    code, err = _nas(capsys, *base, "--clock", "cpu")
    assert code == 2 and "clock must be 'process' or 'wall'" in err
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"name": "x", "supernet": str(supernet), "tasks": ["heldout_loss"], "budget": 2,
                                "space": {"n_layer_choices": [3], "n_head_choices": [4], "d_ff_choices": [48, 128]},
                                "quant_choices": ["q4_0"]}))
    code, err = _nas(capsys, *base, "--spec", str(spec))
    assert code == 2 and "q4_0 stores weight rows in blocks of 32" in err and "d_ff_choices [48]" in err
    other = tmp_path / "o.yaml"
    other.write_text(json.dumps({"name": "x", "supernet": str(tmp_path / "elsewhere"), "tasks": ["heldout_loss"], "budget": 2}))
    code, err = _nas(capsys, *base, "--spec", str(other))
    assert code == 2 and "searches the supernet at" in err and "give the spec's supernet directory" in err
    assert not out.exists()
    real_import = builtins.__import__

    def no_llama(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    code, err = _nas(capsys, *base, "--quant", "q8_0")
    assert code == 2 and "llama-cpp-python is not installed" in err and "pip install 'llama-cpp-python==0.3.36'" in err
    assert not out.exists()
