"""A scoring plan: everything about scoring loglikelihood requests that does not depend on
the sub-network, built once per study and document set and reused for every candidate.

:func:`build_plan` takes tokenised requests ``(context ids, continuation ids)`` and fixes,
exactly as the adapter's one-candidate path did: HFLM's left truncation of ``context +
continuation`` to ``max_length + 1`` tokens, the grouping of requests that share a
(truncated) context, the rounds of contexts whose KV caches are held at once
(``max_cache_tokens``), the length-sorted, right-padded context batches and continuation
chunks (``batch_size`` rows, ``max_batch_tokens`` padded tokens), their token tensors and
attention masks, the rows of the round's KV cache each continuation reads and the positions
whose logits are needed. A candidate then only runs the model (:mod:`evaluators.prefix`).

Because every candidate of a study runs the same batches, two sub-networks whose first
``k`` kept layers are identical compute bit-identical residual streams up to layer ``k``
for every batch: that is what prefix reuse stores (see :mod:`evaluators.prefix`).

Shapes in comments: B rows of a batch, T context tokens, K continuation tokens fed, V vocab.
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
class ContextBatch:
    """Distinct contexts run together: right-padded ``tokens`` (B, T), ``mask`` (B, T) over
    the padding (None when every row is full), ``ends`` (B, 1) the last real position (whose
    logits predict the first continuation token); rows ``offset`` .. ``offset + B`` of the
    round's KV cache."""

    tokens: Tensor
    mask: Tensor | None
    ends: Tensor
    offset: int

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel() if self.mask is None else self.mask.sum())


@dataclass(frozen=True)
class ContinuationChunk:
    """Continuations of similar length scored together. ``requests`` (N) are request indices,
    ``lengths`` their continuation lengths, ``target`` (N, K + 1) the continuation ids (0
    past a row's end), ``first`` (N,) the round row of each one's context (its first-token
    logits and its KV cache). When K > 0: ``feed`` (N, K) the tokens fed after the context
    (EOT padding), ``mask`` (N, T + K) over the context's padding and the continuation's,
    ``span`` = T, the context positions of the round's KV cache read."""

    requests: tuple[int, ...]
    lengths: tuple[int, ...]
    target: Tensor
    first: Tensor
    feed: Tensor | None
    mask: Tensor | None
    span: int

    @property
    def fed(self) -> int:
        return 0 if self.feed is None else int(self.feed.shape[1])

    @property
    def n_tokens(self) -> int:
        return sum(n - 1 for n in self.lengths)


@dataclass(frozen=True)
class Round:
    """Contexts whose KV caches are held at once (``n_rows`` rows, the longest ``width``
    tokens), then every continuation of theirs; ``reserve`` is the longest continuation fed
    (the round's cache keeps room for it after ``width``)."""

    batches: tuple[ContextBatch, ...]
    chunks: tuple[ContinuationChunk, ...]
    n_rows: int
    width: int
    reserve: int


@dataclass(frozen=True)
class LoglikelihoodPlan:
    """The batches of one set of loglikelihood requests (see the module docstring).

    ``key`` identifies the requests' token ids and the batching settings (prefix reuse keys
    its stored residual streams on it); ``n_units`` counts the model passes (context
    batches, then continuation chunks that feed tokens) in the order a candidate runs them.
    """

    rounds: tuple[Round, ...]
    n_requests: int
    key: str
    n_truncated: int

    @property
    def n_units(self) -> int:
        return sum(len(r.batches) + sum(1 for c in r.chunks if c.fed) for r in self.rounds)

    @property
    def n_tokens(self) -> int:
        """Real (not padding) tokens one candidate runs through the model."""
        return sum(b.n_tokens for r in self.rounds for b in r.batches) + sum(
            c.n_tokens for r in self.rounds for c in r.chunks
        )

    @property
    def unit_tokens(self) -> int:
        """Padded token positions over every unit (what one stored residual stream holds)."""
        return sum(b.tokens.numel() for r in self.rounds for b in r.batches) + sum(
            c.feed.numel() for r in self.rounds for c in r.chunks if c.feed is not None
        )


def build_plan(
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    max_length: int,
    pad_id: int,
    batch_size: int,
    max_batch_tokens: int,
    max_cache_tokens: int,
) -> LoglikelihoodPlan:
    """The plan of ``requests`` = (context ids, continuation ids) (see the module docstring)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    conts: list[list[int]] = []
    truncated = 0
    digest = hashlib.sha256(repr((max_length, pad_id, batch_size, max_batch_tokens, max_cache_tokens)).encode())
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

    contexts = sorted(groups, key=lambda c: (-len(c), c))  # longest first
    rounds = [
        _round(members, groups, conts, pad_id=pad_id, rows=batch_size, tokens=max_batch_tokens)
        for members in batches(contexts, len, rows=len(contexts), tokens=max_cache_tokens, slack=None)
    ]
    return LoglikelihoodPlan(rounds=tuple(rounds), n_requests=len(requests), key=digest.hexdigest()[:32], n_truncated=truncated)


def _round(contexts: list[tuple[int, ...]], groups: dict[tuple[int, ...], list[int]], conts: list[list[int]], *,
           pad_id: int, rows: int, tokens: int) -> Round:
    """One round: context batches filling the round's cache rows, then continuation chunks."""
    where: dict[tuple[int, ...], int] = {}  # context -> round row
    out_batches: list[ContextBatch] = []
    offset = 0
    for batch in batches(contexts, len, rows=rows, tokens=tokens):
        lens = [len(c) for c in batch]
        T = lens[0]
        ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        for b, ctx in enumerate(batch):
            ids[b, : len(ctx)] = torch.tensor(ctx)
            mask[b, : len(ctx)] = 1
            where[ctx] = offset + b
        ends = (torch.tensor(lens) - 1)[:, None]  # only the last real position's logits
        out_batches.append(ContextBatch(tokens=ids, mask=mask if lens[-1] != T else None, ends=ends, offset=offset))
        offset += len(batch)

    order = sorted(((ctx, i) for ctx in contexts for i in groups[ctx]), key=lambda r: (-len(conts[r[1]]), -len(r[0]), r[1]))
    chunks: list[ContinuationChunk] = []
    for chunk in batches(order, lambda r: len(conts[r[1]]), rows=rows, tokens=tokens):
        lengths = tuple(len(conts[i]) for _, i in chunk)
        K = lengths[0] - 1  # continuation tokens fed after the context (longest first)
        target = torch.zeros((len(chunk), K + 1), dtype=torch.long)
        for r, (_, i) in enumerate(chunk):
            target[r, : lengths[r]] = torch.tensor(conts[i])
        feed = mask = None
        T = max(len(ctx) for ctx, _ in chunk)
        if K > 0:
            mask = torch.zeros((len(chunk), T + K), dtype=torch.long)
            for r, (ctx, _) in enumerate(chunk):
                mask[r, : len(ctx)] = 1
                mask[r, T : T + lengths[r] - 1] = 1
            feed = target[:, :K].clone()
            feed[mask[:, T:] == 0] = pad_id
        chunks.append(ContinuationChunk(
            requests=tuple(i for _, i in chunk), lengths=lengths, target=target,
            first=torch.tensor([where[ctx] for ctx, _ in chunk]), feed=feed, mask=mask, span=T,
        ))
    return Round(batches=tuple(out_batches), chunks=tuple(chunks), n_rows=offset, width=len(contexts[0]),
                 reserve=max((c.fed for c in chunks), default=0))


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


__all__ = ["ContextBatch", "ContinuationChunk", "LoglikelihoodPlan", "Round", "batches", "build_plan", "plan_requests"]
