"""A cheap but real objective: next-token loss of a sub-network on fixed held-out sequences.

:class:`HeldOutLoss` scores a sub-network by its mean next-token cross-entropy over a
fixed, seeded batch of sequences (one "example" per sequence), returning per-example
scores and their stderr like a benchmark task would. It is the task ``heldout_loss`` of
a study spec, and what tests and benchmarks use where lm-eval would be too slow: it runs
the real supernet forward, so its values differ between sub-networks for real reasons.

Sequences come from ``random`` tokens (seeded), ``wikitext`` (``wiki.test.raw.txt`` under
NAS_DATA_DIR) or a text file; text is tokenized with the supernet's tokenizer when it has
one, else as UTF-8 bytes (folded into the vocabulary).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from evaluators.types import Fidelity, Metrics, TaskScore, scoring_settings
from nas.errors import NasError
from nas.model.dtypes import dtype_name
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet
from nas.paths import data_dir
from nas.stats import mean_stderr

#: Bumped to 2 when fidelities became nested prefixes of a seeded order (their documents changed).
HARNESS_VERSION = "heldout-2"
METRIC = "loss"


def heldout_tokens(
    *,
    vocab_size: int,
    n_examples: int,
    seq_len: int,
    source: str = "random",
    seed: int = 0,
    tokenizer: Any = None,
) -> torch.Tensor:
    """(n_examples, seq_len + 1) int64 tokens: inputs plus the shifted targets."""
    width = seq_len + 1
    if source == "random":
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(0, vocab_size, (n_examples, width), generator=gen)
    if source == "wikitext":
        root = data_dir()
        path = root / "benchmarks" / "wikitext" / "wiki.test.raw.txt" if root else None
        if path is None or not path.is_file():
            raise NasError(
                f"heldout_loss source 'wikitext' needs {path or 'NAS_DATA_DIR/benchmarks/wikitext/wiki.test.raw.txt'}; "
                "set NAS_DATA_DIR or use source: random"
            )
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise NasError(f"heldout_loss source {source!r} is not 'random', 'wikitext' or an existing text file")
    text = path.read_text(encoding="utf-8", errors="replace")
    bos: list[int] = []
    if tokenizer is not None:
        ids = tokenizer(text[: 200 * width * n_examples], add_special_tokens=False)["input_ids"]
        # a tokenizer that starts every text with BOS (Gemma's) scores windows that start with it
        with_special = tokenizer("a")["input_ids"]
        if tokenizer.bos_token_id is not None and with_special[:1] == [tokenizer.bos_token_id]:
            bos = [tokenizer.bos_token_id]
    else:
        ids = [b % vocab_size for b in text.encode("utf-8")]
    step = width - len(bos)
    n_windows = len(ids) // step
    if n_windows < n_examples:
        raise NasError(f"heldout_loss source {path} holds {n_windows} windows of {width} tokens; {n_examples} needed")
    starts = sorted(random.Random(seed).sample(range(n_windows), n_examples))
    rows = [bos + ids[s * step : (s + 1) * step] for s in starts]
    return torch.tensor(rows, dtype=torch.long)


def subset_indices(n_total: int, fidelity: Fidelity, task: str = "heldout_loss") -> list[int]:
    """The examples a fidelity scores (:meth:`Fidelity.doc_ids`, nested like a benchmark's)."""
    return fidelity.doc_ids(task, n_total)


class HeldOutLoss:
    """Scores sub-networks of one supernet by per-sequence next-token loss (a task scorer).

    Attributes the search uses: ``tasks``, ``harness_version``, ``task_hashes``,
    ``settings`` and ``n_docs`` (known before any evaluation, for the cache) and ``n_model_calls``
    (forward passes run). ``evaluate(..., prior=...)`` merges a nested fidelity's losses
    with the new ones; a sequence's loss may differ in the last bits with the batch it is
    run in, so merged and direct results agree to float rounding (exactly with
    ``batch_size=1``).
    """

    def __init__(
        self,
        model: Supernet,
        *,
        n_examples: int = 64,
        seq_len: int = 64,
        source: str = "random",
        seed: int = 0,
        batch_size: int = 16,
        tokenizer: Any = None,
        task: str = "heldout_loss",
    ) -> None:
        self.model = model
        self.task = task
        self.tasks = (task,)
        self.batch_size = batch_size
        self.tokens = heldout_tokens(
            vocab_size=model.config.vocab_size,
            n_examples=n_examples,
            seq_len=seq_len,
            source=source,
            seed=seed,
            tokenizer=tokenizer,
        )
        self.harness_version = HARNESS_VERSION
        digest = hashlib.sha256(self.tokens.numpy().tobytes()).hexdigest()[:16]
        self.task_hashes = {task: digest}
        self.n_docs = {task: len(self.tokens)}
        self.settings = {task: scoring_settings(dtype=dtype_name(model.lm_head_weight.dtype))}
        self.n_model_calls = 0

    @torch.no_grad()
    def example_losses(self, subnet: SubnetConfig, indices: Sequence[int]) -> list[float]:
        """Mean next-token loss of each selected sequence."""
        out: list[float] = []
        rows = self.tokens[list(indices)]
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            logits = self.model(batch[:, :-1], subnet)  # (B, T, V)
            self.n_model_calls += 1
            loss = F.cross_entropy(logits.float().transpose(1, 2), batch[:, 1:], reduction="none")  # (B, T)
            out.extend(loss.mean(dim=1).tolist())
        return out

    def evaluate(self, subnet: SubnetConfig, fidelity: Fidelity, prior: Metrics | None = None) -> Metrics:
        """Mean loss over the fidelity's sequences; with ``prior`` (a nested fidelity's
        result, with per-example losses) only the sequences it lacks are run."""
        start = time.perf_counter()
        calls = self.n_model_calls
        indices = subset_indices(len(self.tokens), fidelity, self.task)
        known: dict[int, float] = {}
        if prior is not None and fidelity.contains(Fidelity.parse(prior.fidelity)):
            for s in prior.scores:
                if s.task == self.task and s.metric == METRIC and len(s.example_ids) == s.n_examples:
                    known = {int(i): float(v) for i, v in zip(s.example_ids, s.example_scores)}
        fresh = [i for i in indices if i not in known]
        new = dict(zip(fresh, self.example_losses(subnet, fresh)))
        scores = [known[i] if i in known else new[i] for i in indices]
        n = len(scores)
        score = TaskScore(
            task=self.task,
            metric=METRIC,
            value=sum(scores) / n,
            stderr=mean_stderr(scores) if n > 1 else 0.0,
            n_examples=n,
            example_ids=tuple(indices),
            example_scores=tuple(scores),
        )
        return Metrics(
            scores=(score,),
            fidelity=fidelity.label,
            harness_version=self.harness_version,
            task_hashes=dict(self.task_hashes),
            wall_s=time.perf_counter() - start,
            n_model_calls=self.n_model_calls - calls,
        )


__all__ = ["HARNESS_VERSION", "HeldOutLoss", "heldout_tokens", "subset_indices"]
