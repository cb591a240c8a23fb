"""Bad input to `nas train`: one clear NasError (exit code 2 in the CLI), never a stack trace."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from nas.errors import NasError
from nas.training import load_train_config, train

from _train_fixtures import tiny_config, write_corpus


@pytest.fixture(autouse=True)
def _work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path / "work"))


def test_missing_and_empty_corpus(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="corpus path .*nowhere does not exist"):
        train(tiny_config(tmp_path, tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "pg.txt").write_text("header\n*** START OF THE BOOK ***\n\n*** END OF THE BOOK ***\nfooter\n")
    with pytest.raises(NasError, match="empty"):
        train(tiny_config(tmp_path, empty))


def test_budget_smaller_than_one_batch(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c", n_files=1, sentences=50)
    cfg = tiny_config(tmp_path, corpus, steps=None, tokens=100)  # one batch is 4 x 32 = 128 tokens
    with pytest.raises(NasError, match="token budget 100 is smaller than one batch .*128 tokens"):
        train(cfg)


def test_out_of_memory_config_is_refused_with_the_estimate(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c", n_files=1, sentences=50)
    huge = {"d_model": 8192, "n_layer": 64, "n_head": 64, "n_kv_head": 8, "d_ff": 28672}
    cfg = tiny_config(tmp_path, corpus, model=huge, space=None, seq_len=2048, batch_size=8)
    with pytest.raises(NasError, match=r"needs about \d+\.\d GiB \(weights .*AdamW state .*activations .*\) per process"):
        train(cfg)
    assert not (tmp_path / "work").exists()  # refused before tokenising anything


def test_invalid_config_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"out": "x", "data": {"corpus": "c"}, "model": {"d_model": 8, "n_layer": 1, "n_head": 1, "d_ff": 8},
                                    "steps": 1, "lr": 0.1}))
    with pytest.raises(NasError, match=r"bad.yaml is invalid: lr: Extra inputs are not permitted"):
        load_train_config(path)
    path.write_text("out: x\ndata: {corpus: c}\nsteps: 1\n")
    with pytest.raises(NasError, match="exactly one of 'model'"):
        load_train_config(path)
    path.write_text("out: [unclosed\n")
    with pytest.raises(NasError, match="not valid YAML"):
        load_train_config(path)
    with pytest.raises(NasError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")


def test_cli_prints_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from nas.cli import main

    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path, tmp_path / "nowhere").model_dump(mode="json")))
    monkeypatch.setattr(sys, "argv", ["nas", "train", str(cfg), "--quiet"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: corpus path") and "Traceback" not in err
