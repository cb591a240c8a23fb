"""Helpers for the search tests: a tiny saved supernet, spec builders and counting scorers."""

from __future__ import annotations

import math
import random
import threading
import time
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
        "confirmation": None,  # 16 held-out sequences are too few to hold any out
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
        self.settings = inner.settings
        self.n_docs = inner.n_docs
        self.calls: list[tuple[str, str]] = []
        self.subnets: list[SubnetConfig] = []
        self.fail_on_call: int | None = None

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics:
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C twice mid-trial
        self.calls.append((subnet.hash, fidelity.label))
        self.subnets.append(subnet)
        return self.inner.evaluate(subnet, fidelity, prior)


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
    settings = {"heldout_loss": "{}"}

    def __init__(self, n_examples: int = 40, noise: float = 0.02) -> None:
        self.n_examples = n_examples
        self.n_docs = {"heldout_loss": n_examples}
        rng = random.Random(0)
        self.noise = [rng.gauss(0.0, noise) for _ in range(n_examples)]

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics:
        ids = subset_indices(self.n_examples, fidelity)  # every document is cheap: prior is not needed
        width = sum(subnet.d_ff) / len(subnet.d_ff) / 64 + sum(subnet.n_head) / len(subnet.n_head) / 4
        base = 3.0 - 0.5 * subnet.n_layer + 0.1 * width
        scores = [base + self.noise[i] for i in ids]
        mean = sum(scores) / len(scores)
        sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
        score = TaskScore("heldout_loss", "loss", mean, sd / math.sqrt(len(scores)), len(scores), tuple(ids), tuple(scores))
        return Metrics(scores=(score,), fidelity=fidelity.label, harness_version=self.harness_version,
                       task_hashes=dict(self.task_hashes), n_model_calls=1)


TASKS = ("piqa", "arc_easy")


class TwoTasks:
    """Deterministic 0/1 per-example scores on two tasks: deeper and wider sub-networks get
    more examples right (with a seeded pattern), so accuracy trades off against size."""

    tasks = TASKS
    harness_version = "synthetic-two-1"
    task_hashes = {t: f"{t}-synthetic" for t in TASKS}
    settings = {t: "{}" for t in TASKS}

    def __init__(self, n_docs: int = 40) -> None:
        self.n_docs = {t: n_docs for t in TASKS}

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics:
        size = subnet.n_layer + sum(subnet.d_ff) / 64 / len(subnet.d_ff) + sum(subnet.n_head) / 4 / len(subnet.n_head)
        scores = []
        for k, task in enumerate(TASKS):
            ids = subset_indices(self.n_docs[task], fidelity, task)
            right = [1.0 if ((i * 7 + 3 * k) % 10) < 2 * size else 0.0 for i in ids]
            mean = sum(right) / len(right)
            sd = math.sqrt(sum((r - mean) ** 2 for r in right) / (len(right) - 1))
            scores.append(TaskScore(task, "acc", mean, sd / math.sqrt(len(right)), len(right), tuple(ids), tuple(right)))
        return Metrics(scores=tuple(scores), fidelity=fidelity.label, harness_version=self.harness_version,
                       task_hashes=dict(self.task_hashes), n_model_calls=1)


class NoisyTwoTasks(TwoTasks):
    """Like :class:`TwoTasks`, but each document is right with probability rising with size,
    drawn per (sub-network, task, document) from a fixed seed: close sub-networks tie."""

    harness_version = "synthetic-noisy-1"

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics:
        size = subnet.n_layer + sum(subnet.d_ff) / 64 / len(subnet.d_ff) + sum(subnet.n_head) / 4 / len(subnet.n_head)
        p = 0.3 + 0.2 * (size - 3)  # 0.3 for the smallest tiny sub-network, 0.7 for the largest
        scores = []
        for task in TASKS:
            ids = subset_indices(self.n_docs[task], fidelity, task)
            right = [1.0 if random.Random(f"{subnet.hash}/{task}/{i}").random() < p else 0.0 for i in ids]
            mean = sum(right) / len(right)
            sd = math.sqrt(sum((r - mean) ** 2 for r in right) / (len(right) - 1))
            scores.append(TaskScore(task, "acc", mean, sd / math.sqrt(len(right)), len(right), tuple(ids), tuple(right)))
        return Metrics(scores=tuple(scores), fidelity=fidelity.label, harness_version=self.harness_version,
                       task_hashes=dict(self.task_hashes), n_model_calls=1)


def optimize_together(searches: list[Any], *, stagger_s: float = 0.0, timeout_s: float = 120.0, **kw: Any) -> list[Any]:
    """Run ``optimize(**kw)`` of several searches on one study in threads (worker ``i``
    starting ``i * stagger_s`` later), close them and return their run summaries."""
    summaries: list[Any] = [None] * len(searches)

    def run(i: int) -> None:
        time.sleep(i * stagger_s)
        summaries[i] = searches[i].optimize(**kw)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(searches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    for search in searches:
        search.close()
    return summaries
