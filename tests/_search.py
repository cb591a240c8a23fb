"""Helpers for the search tests: a tiny saved supernet, spec builders and counting scorers."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch

from evaluators.heldout import HeldOutLoss, subset_indices
from evaluators.types import Fidelity, Metrics, TaskScore
from nas.model.config import SupernetConfig
from nas.model.directory import LoadedSupernet, load_supernet, save_supernet
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet
from nas.search.spec import StudySpec, parse_spec

TINY = SupernetConfig(vocab_size=64, d_model=32, n_layer=3, n_head=4, n_kv_head=2, d_ff=64)
#: 2 depths x (2 heads x 2 d_ff) per layer: 16 + 64 = 80 sub-networks.
TINY_SPACE: dict[str, Any] = {"n_layer_choices": [2, 3], "n_head_choices": [2, 4], "d_ff_choices": [32, 64]}


def save_tiny_supernet(directory: Path, *, seed: int = 0) -> LoadedSupernet:
    torch.manual_seed(seed)
    model = Supernet(TINY)
    save_supernet(model, directory)
    return load_supernet(directory, dtype="fp32")


def make_spec(supernet: Path | str, storage: str, **over: Any) -> StudySpec:
    data: dict[str, Any] = {
        "name": "s",
        "supernet": str(supernet),
        "space": TINY_SPACE,
        "tasks": [{"name": "heldout_loss", "n_examples": 16, "seq_len": 16}],
        "objectives": ["heldout_loss", "non_embedding_params"],
        "sampler": "random",
        "budget": {"n_trials": 8},
        "dtype": "fp32",
        "storage": storage,
        "fault_tolerance": {"heartbeat_interval_s": 1, "grace_period_s": 2},
    }
    data.update(over)
    return parse_spec(data)


class CountingScorer:
    """Wraps a scorer and records every (sub-network hash, fidelity label) it evaluates."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tasks = inner.tasks
        self.harness_version = inner.harness_version
        self.task_hashes = inner.task_hashes
        self.calls: list[tuple[str, str]] = []
        self.subnets: list[SubnetConfig] = []
        self.fail_on_call: int | None = None

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity) -> Metrics:
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C twice mid-trial
        self.calls.append((subnet.hash, fidelity.label))
        self.subnets.append(subnet)
        return self.inner.evaluate(subnet, fidelity)


def heldout_scorer(loaded: LoadedSupernet, *, n_examples: int = 16, seq_len: int = 16) -> CountingScorer:
    return CountingScorer(HeldOutLoss(loaded.model, n_examples=n_examples, seq_len=seq_len, batch_size=16))


class SyntheticLoss:
    """A deterministic fake task with controlled per-example scores: ``heldout_loss``/``loss``
    = 3 - 0.5 * depth + 0.1 * (mean d_ff / 64 + mean n_head / 4) + small seeded noise per
    example. Width *hurts*, so the wider sub-networks of each depth are dominated by the
    narrower ones, by far more than the noise."""

    tasks = ("heldout_loss",)
    harness_version = "synthetic-1"
    task_hashes = {"heldout_loss": "synthetic"}

    def __init__(self, n_examples: int = 40, noise: float = 0.02) -> None:
        self.n_examples = n_examples
        rng = random.Random(0)
        self.noise = [rng.gauss(0.0, noise) for _ in range(n_examples)]

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity) -> Metrics:
        ids = subset_indices(self.n_examples, fidelity)
        width = sum(subnet.d_ff) / len(subnet.d_ff) / 64 + sum(subnet.n_head) / len(subnet.n_head) / 4
        base = 3.0 - 0.5 * subnet.n_layer + 0.1 * width
        scores = [base + self.noise[i] for i in ids]
        mean = sum(scores) / len(scores)
        sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
        score = TaskScore("heldout_loss", "loss", mean, sd / math.sqrt(len(scores)), len(scores), tuple(ids), tuple(scores))
        return Metrics(scores=(score,), fidelity=fidelity.label, harness_version=self.harness_version,
                       task_hashes=dict(self.task_hashes), n_model_calls=1)
