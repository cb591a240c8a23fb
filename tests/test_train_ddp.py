"""Data parallelism: 2 gloo processes on one global batch give the single-process model."""

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


def _worker(rank: int, world: int, port: int, config_json: str, work: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NAS_WORK_DIR=work)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train(parse_train_config(json.loads(config_json)))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_process_gloo_step_equals_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    monkeypatch.setenv("NAS_WORK_DIR", str(work))
    corpus = write_corpus(tmp_path / "corpus", n_files=1, sentences=300)
    settings = dict(steps=2, batch_size=4, sandwich={"n_random": 2}, dtype="fp32")

    ddp_cfg = tiny_config(tmp_path / "ddp", corpus, **settings)
    mp.spawn(_worker, args=(2, _free_port(), json.dumps(ddp_cfg.model_dump(mode="json")), str(work)), nprocs=2, join=True)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(tiny_config(tmp_path / "single", corpus, **settings))
        accumulated = train(tiny_config(tmp_path / "micro", corpus, micro_batch_size=1, **settings))
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
