"""Shared pieces of the search benchmarks: a small byte-level supernet, briefly trained with
the sandwich rule on offline text so that its sub-networks differ for real reasons, and its
enumerable search space."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nas.model.config import SupernetConfig
from nas.model.directory import LoadedSupernet, load_supernet, save_supernet
from nas.model.space import SearchSpace
from nas.model.supernet import Supernet
from nas.paths import data_dir

CONFIG = SupernetConfig(vocab_size=256, d_model=64, n_layer=3, n_head=4, n_kv_head=2, d_ff=128, max_seq_len=256)
#: (2 heads x 4 d_ff)^n per depth n in {2, 3}: 64 + 512 = 576 sub-networks.
SPACE: dict[str, Any] = {
    "n_layer_choices": [2, 3],
    "n_head_choices": [2, 4],
    "d_ff_choices": [32, 64, 96, 128],
}


def training_text() -> str:
    root = data_dir()
    if root is not None:
        shakespeare = root / "corpus" / "tinyshakespeare" / "input.txt"
        if shakespeare.is_file():
            return shakespeare.read_text(encoding="utf-8")
    return "To be, or not to be, that is the question. " * 5000


def heldout_text_path() -> str:
    """The held-out text: wikitext-2 test (another source than the training text)."""
    root = data_dir()
    path = None if root is None else root / "benchmarks" / "wikitext" / "wiki.test.raw.txt"
    return str(path) if path is not None and path.is_file() else "random"


def build_supernet(out: Path, *, steps: int = 300, seed: int = 0, log: Any = None) -> tuple[LoadedSupernet, float]:
    """Train (sandwich rule: largest, smallest and two random sub-networks per step) and save;
    returns the loaded supernet (fp32) and the training seconds."""
    torch.manual_seed(seed)
    model = Supernet(CONFIG)
    space = SearchSpace.from_dict(SPACE, CONFIG)
    data = torch.tensor(list(training_text().encode("utf-8")), dtype=torch.long) % CONFIG.vocab_size
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    seq, batch = 64, 16
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(data) - seq - 1, (batch,))
        rows = torch.stack([data[i : i + seq + 1] for i in idx.tolist()])
        opt.zero_grad(set_to_none=True)
        for subnet in (space.largest(), space.smallest(), space.sample(rng), space.sample(rng)):
            logits = model(rows[:, :-1], subnet)
            loss = F.cross_entropy(logits.transpose(1, 2), rows[:, 1:])
            loss.backward()
        opt.step()
        if log is not None and step % 100 == 0:
            log(f"step {step} loss {loss.item():.3f}")
    model.eval()
    seconds = time.perf_counter() - start
    save_supernet(model, out, space=space, provenance={"trained_by": "bench sandwich", "steps": steps})
    return load_supernet(out, dtype="fp32"), seconds
