"""Data parallelism on torch DDP: 2 gloo processes on one global batch give the single-process
model, and a 2-process run killed and resumed ends bit-for-bit where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nas.model.directory import load_supernet
from nas.model.supernet import Supernet
from nas.training import parse_train_config, train

from _train_fixtures import tiny_config, write_corpus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, jobs_json: str, work: str) -> None:
    """Run ``jobs`` ([config, train kwargs] pairs) in order in one process group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NAS_WORK_DIR=work)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for config, kwargs in json.loads(jobs_json):
            train(parse_train_config(config), **kwargs)
    finally:
        dist.destroy_process_group()


def _spawn(jobs: list, work: Path) -> None:
    payload = json.dumps([[cfg.model_dump(mode="json"), kwargs] for cfg, kwargs in jobs])
    mp.spawn(_worker, args=(2, _free_port(), payload, str(work)), nprocs=2, join=True)


@pytest.mark.timeout(180)
def test_two_process_gloo_step_equals_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    monkeypatch.setenv("NAS_WORK_DIR", str(work))
    corpus = write_corpus(tmp_path / "corpus", n_files=1, sentences=300)
    # arms keeping 2 of 3 layers: a step's last (synchronised) pass may leave a layer to the no_sync passes
    settings = dict(steps=2, batch_size=4, sandwich={"n_random": 2}, dtype="fp32")
    resumable = dict(settings, steps=3, checkpoint_every=1)

    ddp_cfg = tiny_config(tmp_path / "ddp", corpus, **settings)
    whole = tiny_config(tmp_path / "whole", corpus, **resumable)
    killed = tiny_config(tmp_path / "killed", corpus, **resumable)
    # ERNIE steps on a MoE: a step at depth 1 leaves a whole layer without a gradient on every rank,
    # and with 2 of 4 experts kept the others get none (nor do kept experts no token of a rank chose)
    moe = {"d_model": 32, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_ff": 16, "n_expert": 4, "top_k": 2}
    ernie = dict(settings, steps=4, model=moe, schedule="ernie", ernie={"n_layer": 0.5, "n_expert": 0.5, "top_k": 0.5},
                 space={"n_layer_choices": [1, 2], "n_head_choices": [4], "d_ff_choices": [16],
                        "n_expert_choices": [2, 4], "top_k_choices": [1, 2], "tied": True})
    ernie_ddp = tiny_config(tmp_path / "ernie_ddp", corpus, **ernie)
    _spawn([(ddp_cfg, {}), (whole, {}), (killed, {"stop_after": 2}), (killed, {"resume": "latest"}), (ernie_ddp, {})], work)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(tiny_config(tmp_path / "single", corpus, **settings))
        accumulated = train(tiny_config(tmp_path / "micro", corpus, micro_batch_size=1, **settings))
        # the load-balancing loss is a statistic of the tokens one pass sees (routed share x mean
        # probability): N processes equal one process on the same slices, i.e. micro-batches of batch/N
        ernie_single = train(tiny_config(tmp_path / "ernie_single", corpus, micro_batch_size=2, **ernie))
    finally:
        torch.set_num_threads(before)

    ddp = load_supernet(ddp_cfg.out)
    assert ddp.provenance["world_size"] == 2 and ddp.provenance["train_tokens"] == single.tokens
    ref = load_supernet(single.out).model.state_dict()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        start = Supernet(ddp.config).state_dict()  # the seed-0 initial weights: training moved them
    assert not torch.allclose(start["layers.0.ffn.up_proj.weight"], ref["layers.0.ffn.up_proj.weight"], atol=1e-4)
    for name, value in ddp.model.state_dict().items():
        torch.testing.assert_close(value, ref[name], rtol=1e-5, atol=2e-6, msg=f"{name} differs between DDP and 1 process")
    for name, value in load_supernet(accumulated.out).model.state_dict().items():
        torch.testing.assert_close(value, ref[name], rtol=1e-5, atol=2e-6, msg=f"{name} differs with micro-batches")
    assert ddp.provenance["val_loss"] == pytest.approx(single.val_loss, abs=1e-4)
    ernie_ref = load_supernet(ernie_single.out).model.state_dict()
    for name, value in load_supernet(ernie_ddp.out).model.state_dict().items():
        torch.testing.assert_close(value, ernie_ref[name], rtol=1e-5, atol=2e-6, msg=lambda m, name=name: f"{name} differs (ERNIE, MoE): {m}")

    # exact resume under DDP: killed after step 2 (checkpoint 2), resumed to step 3
    a, b = load_supernet(whole.out), load_supernet(killed.out)
    assert b.provenance["train_steps"] == 3 and a.content_hash == b.content_hash
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
