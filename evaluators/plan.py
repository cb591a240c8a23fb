"""A scoring plan: everything about scoring loglikelihood requests that does not depend on
the sub-network, built once per study and document set and reused for every candidate.

:func:`build_plan` takes tokenised requests ``(context ids, continuation ids)`` and fixes,
exactly as lm-eval's HFLM would score them: the left truncation of ``context +
continuation`` to ``max_length + 1`` tokens, the grouping of requests that share a
(truncated) context (each distinct context runs once), and how the tokens are run:

* **Rounds.** Contexts (longest first) and the continuation tokens fed after them are packed
  end to end into one row of at most ``pack_tokens`` real tokens (one context at least): a
  *round*, one model pass. Every position-wise part of a block (norms, projections, FFN,
  experts) runs on the whole round at once — large matrix products, no padding — and only
  attention sees the sequences (:class:`nas.model.cache.PackedAttention`).
* **Attention groups.** A *row* is one context followed by the tokens fed after it for each
  of its continuations; every continuation attends to its context and to itself, never to
  a sibling (a tree mask by position). Rows of similar length are attended together
  (``batch_size`` rows, ``max_batch_tokens`` padded tokens), right-padded.
* **Logits.** Only where a log-probability is needed — each context's last token (the first
  continuation token) and each fed continuation token — in blocks of ``max_batch_tokens``
  rows: no padding reaches the LM head.

Every index is a position in the round's packed tokens; padding entries point at position 0
(any real row: what they read is masked, what they produce is dropped).

Because every candidate of a study runs the same rounds, two sub-networks whose first ``k``
kept layers are identical compute bit-identical residual streams up to layer ``k``: that is
what prefix reuse stores (see :mod:`evaluators.prefix`).

Shapes in comments: N tokens of a round, B rows of an attention group, L its longest row,
P positions whose logits are needed, V vocab.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from evaluators.errors import EvaluatorError

log = logging.getLogger(__name__)

T_ = TypeVar("T_")


def batches(items: Sequence[T_], width: Callable[[T_], int], *, rows: int, tokens: int,
            slack: float | None = 0.1) -> list[list[T_]]:
    """Consecutive batches of ``items`` (sorted by decreasing ``width``) of at most ``rows``
    rows and ``tokens`` padded tokens; a row whose width is more than ``slack`` (relative,
    4 tokens at least) below the batch's first row starts a new batch, so little compute
    goes to padding (``slack=None``: no such rule)."""
    out: list[list[T_]] = []
    for item in items:
        if out:
            batch = out[-1]
            first, w = max(width(batch[0]), 1), width(item)
            fits = len(batch) < rows and (len(batch) + 1) * first <= tokens
            tight = slack is None or first - w <= max(4, slack * first)
            if fits and tight:
                batch.append(item)
                continue
        out.append([item])
    return out


@dataclass(frozen=True)
class AttentionGroup:
    """Rows attended together, right-padded to the longest: ``index`` (B, L) the packed
    position of each row's tokens (padding: 0), ``branch`` (B, L) 0 for a context token, c + 1
    for a token fed after the row's continuation c, -1 for padding. A token attends to the
    tokens of its row at earlier (or equal) positions on branch 0 or its own."""

    index: Tensor
    branch: Tensor


@dataclass(frozen=True)
class Round:
    """One model pass: ``tokens`` (N,) packed ids and ``positions`` (N,) each token's
    position in its own sequence (a fed continuation token's counts from its context's
    length); the attention ``groups``; and the log-probabilities wanted: ``predict`` (P,) the
    packed positions whose logits predict ``target`` (P,), for request ``owner`` (P,)."""

    tokens: Tensor
    positions: Tensor
    groups: tuple[AttentionGroup, ...]
    predict: Tensor
    target: Tensor
    owner: Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())


@dataclass(frozen=True)
class LoglikelihoodPlan:
    """The rounds of one set of loglikelihood requests (see the module docstring).

    ``key`` identifies the requests' token ids and the batching settings (prefix reuse keys
    its stored residual streams on it).
    """

    rounds: tuple[Round, ...]
    n_requests: int
    key: str
    n_truncated: int

    @property
    def n_units(self) -> int:
        """Model passes one candidate runs (one per round)."""
        return len(self.rounds)

    @property
    def n_tokens(self) -> int:
        """Real tokens one candidate runs through the model (no padding is run)."""
        return sum(r.n_tokens for r in self.rounds)

    @property
    def unit_tokens(self) -> int:
        """Token positions over every pass (what one stored residual stream holds)."""
        return self.n_tokens


def build_plan(
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    max_length: int,
    batch_size: int,
    max_batch_tokens: int,
    pack_tokens: int,
) -> LoglikelihoodPlan:
    """The plan of ``requests`` = (context ids, continuation ids) (see the module docstring)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    conts: list[list[int]] = []
    truncated = 0
    digest = hashlib.sha256(repr(("rows-1", max_length, batch_size, max_batch_tokens, pack_tokens)).encode())
    for i, (ctx, cont) in enumerate(requests):
        if not ctx or not cont:
            raise EvaluatorError("a loglikelihood request has an empty context or continuation after tokenisation")
        if len(cont) > max_length:
            raise EvaluatorError(
                f"a continuation of {len(cont)} tokens exceeds the model's maximum length {max_length}; raise max_length"
            )
        whole = list(ctx) + list(cont)
        if len(whole) > max_length + 1:  # HFLM: (ctx + cont)[-(max_length + 1):][:-1]
            truncated += 1
            whole = whole[-(max_length + 1):]
        groups.setdefault(tuple(whole[: len(whole) - len(cont)]), []).append(i)
        conts.append(list(cont))
        digest.update(repr((tuple(ctx), tuple(cont))).encode())

    # a row: a context, then the tokens fed after it for each continuation (longest rows first)
    size = {c: len(c) + sum(len(conts[i]) - 1 for i in groups[c]) for c in groups}
    contexts = sorted(groups, key=lambda c: (-size[c], c))
    members: list[list[tuple[int, ...]]] = []
    total = 0
    for c in contexts:
        if members and total + size[c] <= pack_tokens:
            members[-1].append(c)
            total += size[c]
        else:
            members.append([c])
            total = size[c]
    rounds = [_round(m, groups, conts, size, rows=batch_size, tokens=max_batch_tokens) for m in members]
    return LoglikelihoodPlan(rounds=tuple(rounds), n_requests=len(requests), key=digest.hexdigest()[:32], n_truncated=truncated)


def _round(contexts: list[tuple[int, ...]], groups: dict[tuple[int, ...], list[int]], conts: list[list[int]],
           size: dict[tuple[int, ...], int], *, rows: int, tokens: int) -> Round:
    """One round: each row's tokens packed (its context, then each continuation's fed tokens),
    the rows' attention groups and the positions whose logits are needed."""
    ids: list[int] = []
    positions: list[int] = []
    branches: list[int] = []
    start: dict[tuple[int, ...], int] = {}  # row (context) -> packed position of its first token
    predict: list[int] = []
    target: list[int] = []
    owner: list[int] = []
    for ctx in contexts:
        start[ctx] = len(ids)
        ids.extend(ctx)
        positions.extend(range(len(ctx)))
        branches.extend([0] * len(ctx))
        for c, i in enumerate(groups[ctx]):
            cont = conts[i]
            fed = len(cont) - 1
            predict.append(start[ctx] + len(ctx) - 1)  # the context's last token predicts the first
            predict.extend(range(len(ids), len(ids) + fed))  # each fed token predicts the next
            target.extend(cont)
            owner.extend([i] * len(cont))
            ids.extend(cont[:fed])
            positions.extend(range(len(ctx), len(ctx) + fed))
            branches.extend([c + 1] * fed)
    all_branches = torch.tensor(branches)
    out: list[AttentionGroup] = []
    for batch in batches(contexts, lambda c: size[c], rows=rows, tokens=tokens):
        index = torch.zeros((len(batch), size[batch[0]]), dtype=torch.long)
        branch = torch.full(index.shape, -1, dtype=torch.long)
        for b, ctx in enumerate(batch):
            where = torch.arange(start[ctx], start[ctx] + size[ctx])
            index[b, : size[ctx]] = where
            branch[b, : size[ctx]] = all_branches[where]
        out.append(AttentionGroup(index=index, branch=branch))
    return Round(tokens=torch.tensor(ids), positions=torch.tensor(positions), groups=tuple(out),
                 predict=torch.tensor(predict), target=torch.tensor(target), owner=torch.tensor(owner))


def plan_requests(lm: Any, requests: Sequence[Any]) -> list[tuple[list[int], list[int]]]:
    """lm-eval's tokenisation of loglikelihood ``requests`` (``TemplateLM.loglikelihood``:
    an empty context becomes the prefix token, else ``_encode_pair``) with ``lm``'s tokenizer."""
    out = []
    for req in requests:
        context, continuation = req.args
        if context == "":
            cont = lm.tok_encode(continuation, add_special_tokens=False)
            ctx, cont = ([lm.prefix_token_id], cont) if lm.prefix_token_id != cont[0] else (cont[:1], cont[1:])
        else:
            ctx, cont = lm._encode_pair(context, continuation)
        out.append((list(ctx), list(cont)))
    return out


__all__ = ["AttentionGroup", "LoglikelihoodPlan", "Round", "batches", "build_plan", "plan_requests"]
