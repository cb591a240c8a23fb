"""A results cache that cannot be fooled (issue 16, item 8).

A supernet whose model.safetensors was overwritten in place (same size, 400 bytes changed)
kept its recorded content hash: its cached results were served, and in a fresh database
its scores were stored under the real supernet's hash. Loading for scoring or training now
checks the weights against the recorded hash, hashing the file only when its size or
mtime changed (remembered in weights.check.json).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import nas.model.directory as directory
import storage
from nas.cli import app
from nas.errors import NasError
from nas.model.directory import CHECK_FILE, WEIGHTS_FILE, load_supernet
from nas.search.study import open_search

from _search import make_spec, save_tiny_supernet


def _overwrite_in_place(weights: Path) -> None:
    """Change 400 bytes near the end of the file (tensor data), keeping its size."""
    data = bytearray(weights.read_bytes())
    size = len(data)
    data[-400:] = bytes((b + 1) % 256 for b in data[-400:])
    weights.write_bytes(data)
    assert weights.stat().st_size == size


def _count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = directory._state_hash

    def counting(*args: object) -> str:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(directory, "_state_hash", counting)
    return calls


def test_weights_overwritten_in_place_are_refused_everywhere(tmp_path: Path) -> None:
    tiny = save_tiny_supernet(tmp_path / "supernet")
    real_hash = tiny.content_hash
    first = f"sqlite:///{tmp_path / 'first.db'}"
    search = open_search(make_spec(tiny.path, first, name="before", budget={"n_trials": 1}))
    search.optimize()
    search.close()

    _overwrite_in_place(tmp_path / "supernet" / WEIGHTS_FILE)
    with pytest.raises(NasError, match="nas supernet rehash") as info:
        load_supernet(tmp_path / "supernet")
    assert real_hash in str(info.value)
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    for url, name in ((first, "before"), (first, "again"), (fresh, "fresh")):  # resume, a new study, a new database
        with pytest.raises(NasError, match="does not match the content hash"):
            open_search(make_spec(tmp_path / "supernet", url, name=name, budget={"n_trials": 1}))
    with storage.open_database(fresh) as db:  # nothing was stored under the real hash
        assert storage.list_supernets(db) == [] and storage.list_studies(db) == []

    # re-registered on purpose: a new supernet, with none of the old one's cached results
    result = CliRunner().invoke(app, ["supernet", "rehash", str(tmp_path / "supernet")])
    assert result.exit_code == 0, result.output
    reloaded = load_supernet(tmp_path / "supernet")
    assert reloaded.content_hash != real_hash and reloaded.content_hash in result.output
    search = open_search(make_spec(tmp_path / "supernet", first, name="after", budget={"n_trials": 1}))
    summary = search.optimize()
    search.close()
    assert summary.cache_hits == 0 and summary.model_calls > 0


def test_the_weights_are_hashed_once_and_again_only_when_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_tiny_supernet(tmp_path / "s")  # saving records the hash it wrote
    assert (tmp_path / "s" / CHECK_FILE).is_file()
    calls = _count_hashing(monkeypatch)
    load_supernet(tmp_path / "s")
    load_supernet(tmp_path / "s", dtype="bf16")
    assert calls == []  # size and mtime unchanged: the sidecar answers
    weights = tmp_path / "s" / WEIGHTS_FILE
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: hashed again, once
    load_supernet(tmp_path / "s")
    load_supernet(tmp_path / "s")
    assert calls == [1]
    (tmp_path / "s" / CHECK_FILE).unlink()  # no sidecar (e.g. an older directory): hashed and remembered
    load_supernet(tmp_path / "s")
    load_supernet(tmp_path / "s")
    assert calls == [1, 1]
