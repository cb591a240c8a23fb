"""End-to-end tiny training runs: exact resume, the saved supernet, checkpoint safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas.errors import NasError
from nas.model.directory import load_supernet
from nas.training import list_checkpoints, parse_train_config, train

from _train_fixtures import tiny_config, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(autouse=True)
def _env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NAS_WORK_DIR", str(tmp_path_factory.getbasetemp() / "train_work"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path: Path, corpus: Path) -> None:
    base = dict(steps=5, checkpoint_every=2, dtype="bf16", sandwich={"n_random": 2, "arm_draw": "spread"})
    full = train(tiny_config(tmp_path / "a", corpus, **base))
    killed = train(tiny_config(tmp_path / "b", corpus, **base), stop_after=3)  # dies after step 3; last checkpoint: 2
    assert killed.stopped_early and [p.name for p in list_checkpoints(tmp_path / "b" / "out")] == ["step_00000002.pt"]
    with pytest.raises(NasError, match="trained in dtype bf16, this run would use fp32.*set dtype: bf16"):
        train(tiny_config(tmp_path / "b", corpus, **{**base, "dtype": "fp32"}), resume="latest")  # nothing written
    resumed = train(tiny_config(tmp_path / "b", corpus, **base), resume="latest")
    assert resumed.resumed_from and resumed.resumed_from.endswith("step_00000002.pt")
    assert resumed.content_hash == full.content_hash  # bitwise-identical weights
    assert resumed.tokens == full.tokens and resumed.val_loss == full.val_loss
    a = load_supernet(tmp_path / "a" / "out").model.state_dict()
    b = load_supernet(tmp_path / "b" / "out").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_supernet_has_tokenizer_space_and_provenance(tmp_path: Path, corpus: Path) -> None:
    cfg = tiny_config(tmp_path, corpus, steps=3, eval_every=2)
    result = train(cfg)
    loaded = load_supernet(cfg.out, verify=True)
    assert loaded.content_hash == result.content_hash
    prov = loaded.provenance
    assert prov["source"] == "nas train" and prov["train_tokens"] == 3 * 4 * 32 == result.tokens
    assert prov["wall_time_s"] > 0 and prov["train_flops"] > 0 and prov["config"]["model"]["d_model"] == 32
    assert loaded.space.n_layer_choices == (2, 3) and loaded.space.layers[0].d_ff == (32, 64)
    tok = loaded.load_tokenizer()
    assert len(tok) == loaded.config.vocab_size == 300
    assert set(result.val_loss) == {"largest", "smallest"}
    events = [json.loads(line) for line in (Path(cfg.out) / "train" / "log.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("eval") == 2
    step = next(e for e in events if e["event"] == "step")
    assert {"largest", "smallest", "random"} <= set(step["arms"]) and step["tokens_per_s"] > 0
    assert step["arms"]["smallest"]["kd"] >= 0 and "kd" not in step["arms"]["largest"]


def test_checkpoint_safety(tmp_path: Path, corpus: Path) -> None:
    cfg = tiny_config(tmp_path, corpus, steps=2, checkpoint_every=1)
    train(cfg)
    with pytest.raises(NasError, match="already has training checkpoints"):
        train(cfg)
    other = tiny_config(tmp_path, corpus, steps=4, model={"d_model": 48, "n_layer": 3, "n_head": 4, "n_kv_head": 2, "d_ff": 64})
    with pytest.raises(NasError, match=r"another supernet config \(d_model: 32 vs 48"):
        train(other, resume="latest")
    with pytest.raises(NasError, match="another seed"):
        train(cfg.with_overrides(seed=1, steps=4), resume="latest")
    changed = cfg.model_dump(mode="json") | {"steps": 4, "sandwich": {**cfg.sandwich.model_dump(mode="json"), "n_random": 2}}
    before = [(p.name, p.stat().st_mtime_ns) for p in list_checkpoints(cfg.out)]
    with pytest.raises(NasError, match=r"another schedule \(sandwich\.n_random: 1 vs 2\)"):
        train(parse_train_config(changed), resume="latest")
    lr = cfg.model_dump(mode="json") | {"steps": 4, "optim": {**cfg.optim.model_dump(mode="json"), "lr": 0.5}}
    with pytest.raises(NasError, match=rf"other optimiser settings \(optim\.lr: {cfg.optim.lr} vs 0\.5\)"):
        train(parse_train_config(lr), resume="latest")
    assert [(p.name, p.stat().st_mtime_ns) for p in list_checkpoints(cfg.out)] == before  # nothing written
    spread = cfg.model_dump(mode="json") | {"steps": 4, "sandwich": {**cfg.sandwich.model_dump(mode="json"), "arm_draw": "spread"}}
    with pytest.raises(NasError, match=r"another schedule \(sandwich\.arm_draw: 'uniform' vs 'spread'\)"):
        train(parse_train_config(spread), resume="latest")
    assert [(p.name, p.stat().st_mtime_ns) for p in list_checkpoints(cfg.out)] == before  # nothing written
    # a checkpoint written before sandwich.arm_draw existed drew uniformly: it resumes as uniform, not as spread
    latest = list_checkpoints(cfg.out)[-1]
    state = torch.load(latest, weights_only=False)
    del state["schedule"]["sandwich.arm_draw"]
    torch.save(state, latest)
    with pytest.raises(NasError, match=r"sandwich\.arm_draw: 'uniform' vs 'spread'"):
        train(parse_train_config(spread), resume="latest")
    # extending the budget of a finished run is a valid resume
    assert train(cfg.with_overrides(steps=3), resume="latest").steps == 3
    assert train(cfg, fresh=True).steps == 2


def test_healing_an_imported_supernet_keeps_its_tokenizer_and_rank(tmp_path: Path, corpus: Path) -> None:
    parent = train(tiny_config(tmp_path / "parent", corpus, steps=2))
    source = load_supernet(parent.out)
    cfg = tiny_config(tmp_path / "heal", corpus, model=None, init_from=str(parent.out), space={"tied": True}, steps=2,
                      optim={"lr": 1e-3, "warmup_fraction": 0.0})
    assert cfg.teacher == "frozen"
    healed = train(cfg)
    loaded = load_supernet(cfg.out)
    assert loaded.config == source.config and loaded.model.layer_rank == source.model.layer_rank
    assert loaded.provenance["init_from"]["content_hash"] == parent.content_hash
    assert loaded.provenance["teacher"] == "frozen" and loaded.space.tied
    assert loaded.space.layers[0].d_ff == source.space.layers[0].d_ff == (32, 64)  # config keys override the imported space
    assert (Path(cfg.out) / "tokenizer" / "tokenizer.json").read_text() == (Path(parent.out) / "tokenizer" / "tokenizer.json").read_text()
    assert healed.content_hash != parent.content_hash


def test_moe_supernet_with_progressive_stages(tmp_path: Path, corpus: Path) -> None:
    moe = {"d_model": 32, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_ff": 32, "n_expert": 4, "top_k": 2}
    stages = [{"until": 0.5, "elastic": ["d_ff"]}, {"until": 1.0, "elastic": ["d_ff", "n_expert", "top_k", "n_layer"]}]
    cfg = tiny_config(tmp_path, corpus, model=moe, space=None, steps=4, sandwich={"n_random": 1, "stages": stages, "aux_loss_weight": 0.02})
    train(cfg)
    events = [json.loads(line) for line in (Path(cfg.out) / "train" / "log.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 4 and all(e["arms"]["largest"]["aux"] > 0 for e in steps)
    assert load_supernet(cfg.out).config.n_expert == 4


def test_distill_ramp_starts_students_on_the_data(tmp_path: Path, corpus: Path) -> None:
    cfg = tiny_config(tmp_path, corpus, steps=4, sandwich={"n_random": 1, "distill_ramp": 1.0})
    train(cfg)
    steps = [json.loads(line) for line in (Path(cfg.out) / "train" / "log.jsonl").read_text().splitlines()]
    steps = [e for e in steps if e["event"] == "step"]
    first, last = steps[0]["arms"]["smallest"], steps[-1]["arms"]["smallest"]
    assert first["loss"] == pytest.approx(first["ce"])  # step 0: students learn the data only
    assert last["loss"] == pytest.approx(0.25 * last["ce"] + 0.75 * last["kd"], rel=1e-4)  # step 3 of 4: r = 0.75
