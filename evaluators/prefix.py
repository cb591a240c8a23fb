"""Run a scoring plan for one sub-network, resuming from residual streams that an earlier
candidate with the same first layers left behind.

A plan's rounds (:mod:`evaluators.plan`) each run as one model pass over one row of packed
tokens: :class:`_PackedRound` does the attention within each sequence (the model's own
attention, batched over the plan's groups under a tree mask by position), and the LM head
runs only at the positions whose log-probabilities are needed.

Two sub-networks whose first ``k`` kept layers are identical (same supernet layers, heads,
FFN width, experts and top-k, same ``d_model``) compute identical residual streams for
every round of a plan up to layer ``k``. :class:`PrefixCache` keeps, per plan, the residual
stream of every round at layer boundaries, keyed by the path of per-layer configs that
produced it (a trie: a boundary's key is a prefix of the keys below it), bounded in bytes
and evicted least recently used first (a candidate's deep boundaries before its shallow
ones, which more later candidates share). :func:`run_plan` looks up the deepest stored
boundary of the candidate's path, runs only the layers below it and stores the new
boundaries. Scores are bit-identical with and without reuse: the same operations run on the
same tensors in the same rounds.

Log-likelihoods are, by default (``logprobs="exact"``), each target token's logit minus a
logsumexp over the vocabulary accumulated in fp32 (a few rows at a time in one reused
buffer, never a full log-probability tensor); greedy is the argmax of the logits. ``logprobs="hflm"`` instead
takes lm-eval HFLM's log-softmax in the logits' dtype (or ``softmax_dtype``) and its argmax,
for parity checks. With mixed numerics (``mixed=True``, a bf16 model) the residual stream
runs and is stored in fp32 (its boundaries cost twice the bytes, and are never served to an
all-bf16 run or the other way round) and the log-probabilities come from
:func:`refined_logprobs`: the target's and the top logits in fp32.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from evaluators.errors import EvaluatorError
from evaluators.plan import AttentionGroup, LoglikelihoodPlan, Round
from nas.model.cache import AttentionCore
from nas.model.directory import weights_state
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

log = logging.getLogger(__name__)

LOGPROB_MODES = ("exact", "hflm")
#: the bf16 logits per position that :func:`refined_logprobs` recomputes in fp32 (with the target's)
REFINE_TOP = 16
_LSE_BLOCK = 8  # rows of (positions x vocab) logits converted to fp32 at once on a CPU (cache-sized)
LayerKey = tuple[int, int, int, int, int]  # (supernet layer, heads, FFN width, experts, top-k)


def prefix_path(subnet: SubnetConfig) -> tuple[int | LayerKey, ...]:
    """``(d_model, layer key, layer key, ...)``: boundary ``k`` is keyed by the first ``k + 1``."""
    moe = bool(subnet.n_expert)
    return (subnet.d_model,) + tuple(
        (subnet.layers[p], subnet.n_head[p], subnet.d_ff[p], subnet.n_expert[p] if moe else 0, subnet.top_k[p] if moe else 0)
        for p in range(subnet.n_layer)
    )


def reuse_order(subnets: Sequence[SubnetConfig]) -> list[int]:
    """Indices of ``subnets`` in the order that maximises shared first layers between
    neighbours: sorted by (d_model, per-layer configs), i.e. a depth-first walk of their
    prefix trie, so a stored boundary serves every candidate below it before it is evicted."""
    return sorted(range(len(subnets)), key=lambda i: prefix_path(subnets[i]))


CACHE_ENV = "NAS_PREFIX_CACHE_MB"


def default_cache_bytes(device: torch.device | str = "cpu") -> int:
    """``$NAS_PREFIX_CACHE_MB`` MiB when set (0 turns reuse off), else a quarter of the memory
    free now (on the device for CUDA), at most 8 GiB."""
    env = os.environ.get(CACHE_ENV)
    if env is not None and env.strip():
        try:
            return max(0, int(float(env) * 2**20))
        except ValueError:
            raise EvaluatorError(f"{CACHE_ENV}={env!r} is not a number of MiB; set it to e.g. 2048, or 0 to turn prefix reuse off") from None
    device = torch.device(device)
    free = 0
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = 4 << 30
    return int(min(free // 4, 8 << 30))


@dataclass
class Boundary:
    """The residual stream entering kept layer ``depth`` for every model pass of a plan."""

    depth: int
    hidden: list[Tensor]
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.nbytes = sum(t.numel() * t.element_size() for t in self.hidden)


def model_key(model: Supernet) -> str:
    """Identifies ``model``'s weights as they are now: a token of the module object plus every
    parameter's storage address and in-place version counter, so a boundary stored for other
    weights (another model, a cast, a training step) is never found."""
    token = model.__dict__.get("_prefix_token")
    if token is None:
        token = uuid.uuid4().hex
        model.__dict__["_prefix_token"] = token
    return f"{token}:{hash(weights_state(model)):x}"


class PrefixCache:
    """Stored boundaries keyed by (weights, plan key, path prefix), at most ``max_bytes`` in
    all (0: store nothing); least recently used first out. Counters: ``layer_passes`` run and
    ``layer_passes_skipped`` (a pass = one kept layer over one batch of the plan). One cache
    may serve several models (:func:`shared_cache`): keys name the weights (:func:`model_key`)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._entries: OrderedDict[tuple[str, str, tuple[int | LayerKey, ...]], Boundary] = OrderedDict()
        self.nbytes = 0
        self.layer_passes = 0
        self.layer_passes_skipped = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def deepest(self, plan_key: tuple[str, str], path: Sequence[int | LayerKey]) -> Boundary | None:
        """The deepest stored boundary on ``path`` for ``plan_key`` = (weights, plan) (marked as
        just used), or None."""
        for depth in range(len(path) - 1, 0, -1):
            key = (plan_key[0], plan_key[1], tuple(path[: depth + 1]))
            found = self._entries.get(key)
            if found is not None:
                for shallower in range(1, depth + 1):  # the trunk above it is in use too
                    trunk = (plan_key[0], plan_key[1], tuple(path[: shallower + 1]))
                    if trunk in self._entries:
                        self._entries.move_to_end(trunk)
                return found
        return None

    def put(self, plan_key: tuple[str, str], path: Sequence[int | LayerKey], boundary: Boundary) -> bool:
        """Store ``boundary`` (at ``boundary.depth`` on ``path``), evicting the least recently
        used ones; False when it alone exceeds the budget."""
        if boundary.nbytes > self.max_bytes:
            return False
        key = (plan_key[0], plan_key[1], tuple(path[: boundary.depth + 1]))
        if key in self._entries:
            self._entries.move_to_end(key)
            return True
        while self._entries and self.nbytes + boundary.nbytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evicted += 1
        self._entries[key] = boundary
        self.nbytes += boundary.nbytes
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def drop(self, model: Supernet) -> None:
        """Forget every boundary of ``model`` (whatever its weights were)."""
        token = model.__dict__.get("_prefix_token")
        if token is None:
            return
        for key in [k for k in self._entries if k[0].startswith(f"{token}:")]:
            self.nbytes -= self._entries.pop(key).nbytes

    @property
    def reuse_fraction(self) -> float:
        total = self.layer_passes + self.layer_passes_skipped
        return self.layer_passes_skipped / total if total else 0.0


_shared: dict[str, PrefixCache] = {}
_shared_lock = threading.Lock()


def shared_cache(device: torch.device | str = "cpu") -> PrefixCache:
    """The process's prefix cache for a device type (budget :func:`default_cache_bytes` on first
    use), shared by every Evaluator that is not given a budget of its own: one bound for all
    the models a process scores (a study's fake-quantised copies, export verification)."""
    kind = torch.device(device).type
    with _shared_lock:
        if kind not in _shared:
            _shared[kind] = PrefixCache(default_cache_bytes(device))
        return _shared[kind]


def boundaries_to_store(start: int, n_layer: int, per_boundary: int, budget: int,
                        useful: Collection[int] | None = None) -> list[int]:
    """Depths ``start + 1 .. n_layer`` whose residual streams this run keeps (only those in
    ``useful`` when given: where another candidate of the space can branch off, see
    :meth:`nas.model.space.SearchSpace.branch_depths`): all of them when they fit ``budget``
    together, else evenly spaced ones (a later candidate then redoes at most the gap)."""
    depths = [d for d in range(start + 1, n_layer + 1) if useful is None or d in useful]
    if not depths or per_boundary <= 0 or budget < per_boundary:
        return []
    room = budget // per_boundary
    if room >= len(depths):
        return depths
    step = len(depths) / room
    return sorted({depths[min(len(depths) - 1, int((i + 1) * step) - 1)] for i in range(int(room))})


class _PackedRound:
    """Attention within each row of a round (a :class:`nas.model.cache.PackedAttention`): per
    attention group, every token attends to the earlier tokens of its row on the context or
    its own continuation (see :func:`group_mask`). Masks are built once per round and window
    size; in a global layer, a group whose rows hold one continuation at most needs none (plain
    causal attention)."""

    def __init__(self, round_: Round, windows: set[int], device: torch.device) -> None:
        self.index = [g.index.to(device) for g in round_.groups]
        self.real = [(g.branch >= 0).reshape(-1).to(device) for g in round_.groups]  # (B*L,): not padding
        # a row of a context and at most one continuation is one sequence: causal attention by column
        self.masks = {w: [group_mask(g, round_.positions, w).to(device) if w or g.branch.max() > 1 else None
                          for g in round_.groups] for w in windows | {0}}

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, window: int, core: AttentionCore) -> Tensor:
        _, H, N, hd = q.shape
        Kh = k.shape[1]
        q0, k0, v0 = q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1)  # (N, H|K, hd)
        out = q0.new_empty((N, H * hd))
        for index, real, mask in zip(self.index, self.real, self.masks[window]):
            B, L = index.shape
            flat = index.reshape(-1)
            qg = q0.index_select(0, flat).view(B, L, H, hd).transpose(1, 2)  # (B, H, L, hd)
            kg = k0.index_select(0, flat).view(B, L, Kh, hd).transpose(1, 2)  # (B, K, L, hd)
            vg = v0.index_select(0, flat).view(B, L, Kh, hd).transpose(1, 2)
            y = core(qg, kg, vg, mask).transpose(1, 2).reshape(B * L, H * hd)  # (B*L, H*hd)
            out.index_copy_(0, flat[real], y[real])
        return out[None]  # (1, N, H*hd)


def group_mask(group: AttentionGroup, positions: Tensor, window: int) -> Tensor:
    """(B, 1, L, L) keys each token of ``group`` may attend to: the real tokens of its row at
    positions up to its own (``positions``: the round's), on the context (branch 0) or its own
    branch, and for a sliding-window layer within the last ``window`` positions."""
    real = group.branch >= 0  # (B, L)
    pos = positions[group.index]  # (B, L)
    qb, kb = group.branch[:, :, None], group.branch[:, None, :]  # (B, L, 1), (B, 1, L)
    qp, kp = pos[:, :, None], pos[:, None, :]
    allowed = real[:, None, :] & (kp <= qp) & ((kb == 0) | (kb == qb))  # (B, L, L)
    if window:
        allowed &= kp > qp - window
    allowed |= ~allowed.any(-1, keepdim=True)  # a padding query (its output is dropped) must not give NaN
    return allowed[:, None]


def run_plan(
    model: Supernet,
    subnet: SubnetConfig,
    plan: LoglikelihoodPlan,
    *,
    cache: PrefixCache | None = None,
    logprobs: str = "exact",
    softmax_dtype: torch.dtype | None = None,
    score_greedy: bool = True,
    logits_rows: int = 2048,
    branch_depths: Collection[int] | None = None,
    fused: bool = False,
    mixed: bool = False,
) -> tuple[list[tuple[float, bool]], dict[str, int]]:
    """(log p(continuation | context), is_greedy) per request of ``plan`` for ``subnet``, and
    counters (``n_forward`` model passes, ``n_tokens`` real tokens, ``start`` the kept layer
    the run resumed at, ``stored`` boundaries stored). ``logits_rows`` bounds the positions
    whose logits are held at once. ``branch_depths``: the only depths worth storing (where
    another sub-network of the study's space can branch off); None: any depth. ``fused``: the
    blocks' norms and RoPE as compiled kernels (:mod:`nas.model.fused`). ``mixed``: over
    weights that are not fp32, the residual stream in fp32
    (:meth:`nas.model.supernet.Supernet.embed_tokens`) and, with ``logprobs="exact"``, the
    log-probabilities from :func:`refined_logprobs`."""
    if logprobs not in LOGPROB_MODES:
        raise ValueError(f"logprobs must be one of {LOGPROB_MODES}, got {logprobs!r}")
    path = prefix_path(subnet)
    L = subnet.n_layer
    # fused and eager kernels round bf16 differently: neither resumes from the other's streams
    # nor do streams kept in fp32 over bf16 weights (mixed numerics) and streams in bf16
    mixed = mixed and model.lm_head_weight.dtype != torch.float32
    residual = torch.float32 if mixed else model.lm_head_weight.dtype
    weights = model_key(model) + (":fused" if fused else "") + (":mixed" if mixed else "") if cache is not None else ""
    key = (weights, plan.key)
    found = cache.deepest(key, path) if cache is not None else None
    start = found.depth if found is not None else 0
    keep: list[int] = []
    if cache is not None and cache.max_bytes:
        per = plan.unit_tokens * subnet.d_model * residual.itemsize
        keep = boundaries_to_store(start, L, per, cache.max_bytes, branch_depths)
    stored: dict[int, list[Tensor]] = {d: [] for d in keep}
    results: list[tuple[float, bool] | None] = [None] * plan.n_requests
    counts = {"n_forward": 0, "n_tokens": 0, "start": start, "stored": 0}
    resumed = iter(found.hidden) if found is not None else None
    windows = {model.config.window(i) for i in range(model.config.n_layer)}
    with torch.inference_mode():
        for round_ in plan.rounds:
            _run_round(model, subnet, round_, start, resumed, stored, results, counts, windows=windows, block=max(1, logits_rows),
                       logprobs=logprobs, softmax_dtype=softmax_dtype, score_greedy=score_greedy, fused=fused,
                       mixed=mixed)
    n_units = plan.n_units
    if cache is not None:
        cache.layer_passes += n_units * (L - start)
        cache.layer_passes_skipped += n_units * start
        # deepest first: a candidate's shallow boundaries, which more later candidates share,
        # are then its most recently used ones and the last of it to be evicted
        for depth in sorted(keep, reverse=True):
            if cache.put(key, path, Boundary(depth, stored.pop(depth))):
                counts["stored"] += 1
    return results, counts  # type: ignore[return-value]


def _run_round(model: Supernet, subnet: SubnetConfig, round_: Round, start: int, resumed: Iterator[Tensor] | None,
               stored: dict[int, list[Tensor]], results: list[tuple[float, bool] | None], counts: dict[str, int], *,
               windows: set[int], block: int, logprobs: str, softmax_dtype: torch.dtype | None, score_greedy: bool,
               fused: bool = False, mixed: bool = False) -> None:
    """One round: every kept layer over its packed tokens, then the log-probability of each
    continuation token from the logits of the position before it (``block`` rows at a time)."""
    device = model.lm_head_weight.device
    dtype = model.lm_head_weight.dtype
    ctx = model.packed_context(round_.positions.to(device), _PackedRound(round_, windows, device), dtype=dtype, fused=fused)
    if resumed is not None:
        x = next(resumed)
    else:  # (1, N, D)
        x = model.embed_tokens(round_.tokens.to(device)[None], subnet, residual_dtype=torch.float32 if mixed else None)
    hidden: list[Tensor] | None = [] if stored else None
    x = model.run_layers(x, subnet, ctx, start=start, hidden=hidden)
    if hidden is not None:
        hidden.append(x)
        for depth, kept in stored.items():
            kept.append(hidden[depth - start])
    counts["n_forward"] += 1
    counts["n_tokens"] += round_.n_tokens
    flat = x[0]  # (N, D)
    P = round_.predict.numel()
    token_lp = torch.empty(P, dtype=torch.float32, device=device)
    greedy = torch.empty(P, dtype=torch.bool, device=device)
    for i in range(0, P, block):
        rows = round_.predict[i : i + block].to(device)
        xs = flat.index_select(0, rows)  # (p, D)
        logits = model.head(xs[:, None])  # (p, 1, V)
        target = round_.target[i : i + block].to(device)[:, None]  # (p, 1)
        if logprobs == "exact" and mixed:
            h = model.head_input(xs)  # (p, D) in fp32
            lp, hit = refined_logprobs(logits, target, lambda index, h=h: model.logits_at(h, index), score_greedy=score_greedy)
        elif logprobs == "exact":
            lp, hit = exact_logprobs(logits, target, score_greedy=score_greedy)
        else:
            lp, hit = hflm_logprobs(logits, target, softmax_dtype=softmax_dtype, score_greedy=score_greedy)
        token_lp[i : i + block], greedy[i : i + block] = lp[:, 0].float(), hit[:, 0]
    # per request, its tokens in order: their sum and whether every one is the greedy choice
    owner = round_.owner.tolist()
    lps, hits = token_lp.cpu().tolist(), greedy.cpu().tolist()
    sums: dict[int, float] = {}
    alls: dict[int, bool] = {}
    for o, lp_, hit_ in zip(owner, lps, hits):
        sums[o] = sums.get(o, 0.0) + lp_
        alls[o] = alls.get(o, True) and hit_
    for o, total in sums.items():
        results[o] = (total, alls[o])


def _logsumexp_rows(flat: Tensor) -> tuple[Tensor, Tensor]:
    """(logsumexp, max) of each row of ``flat`` (R, V), accumulated in fp32. The rows are
    converted a few at a time into one reused fp32 buffer (small enough to stay in cache on a
    CPU): no full-vocabulary fp32 tensor is ever allocated."""
    rows, V = flat.shape
    lse = torch.empty(rows, dtype=torch.float32, device=flat.device)
    top = torch.empty(rows, dtype=torch.float32, device=flat.device)
    step = _LSE_BLOCK if flat.device.type == "cpu" else 4096
    buf = torch.empty((min(step, rows), V), dtype=torch.float32, device=flat.device)
    for i in range(0, rows, step):
        block = buf[: min(step, rows - i)]
        block.copy_(flat[i : i + step])
        m = block.amax(dim=-1, keepdim=True)  # exact: the max of bf16 values is one of them
        top[i : i + step] = m.squeeze(-1)
        lse[i : i + step] = block.sub_(m).exp_().sum(dim=-1).log_().add_(m.squeeze(-1))
    return lse, top


def exact_logprobs(logits: Tensor, target: Tensor, *, score_greedy: bool = True) -> tuple[Tensor, Tensor]:
    """Per-position log p(target) (N, L) in fp32 = the target's logit minus a logsumexp over
    the vocabulary accumulated in fp32; greedy (N, L) = the target is the (first) argmax of
    the logits. No log-probability tensor is ever allocated (:func:`_logsumexp_rows`), and it
    is faster than a bf16 log-softmax."""
    N, L, V = logits.shape
    flat = logits.reshape(N * L, V)
    rows = flat.shape[0]
    index = target.reshape(rows, 1)
    picked = flat.gather(1, index).squeeze(1).float()  # (N*L,)
    lse, top = _logsumexp_rows(flat)
    token_lp = (picked - lse).view(N, L)
    if not score_greedy:
        return token_lp, torch.zeros_like(target, dtype=torch.bool)
    hit = picked >= top  # the target reaches the maximum; then it must be the first index that does
    if hit.any():
        where = hit.nonzero(as_tuple=True)[0]
        hit[where] = flat[where].argmax(dim=-1) == index[where, 0]
    return token_lp, hit.view(N, L)


def refined_logprobs(logits: Tensor, target: Tensor, logits_at: Callable[[Tensor], Tensor], *,
                     top: int = REFINE_TOP, score_greedy: bool = True) -> tuple[Tensor, Tensor]:
    """:func:`exact_logprobs` with the logits that decide the answer taken in fp32: per row of
    bf16 ``logits`` (N, L, V), the ``top`` largest and the target's are recomputed by
    ``logits_at(index)`` (R, K) -> fp32 logits (R, K) (the head's weights, every product and
    sum in fp32: :meth:`nas.model.supernet.Supernet.logits_at`). The log-probability is the
    fp32 target logit minus a logsumexp whose top terms are the fp32 ones and whose rest (the
    tail, where bf16's independent roundings average out) is the bf16 sum less the top's bf16
    terms; greedy is the target being the first argmax of the fp32 logits among those
    recomputed. Costs ``top + 1`` dot products per row, against a vocabulary's for the head."""
    N, L, V = logits.shape
    flat = logits.reshape(N * L, V)
    rows = flat.shape[0]
    index = target.reshape(rows, 1)
    k = min(top, V)
    low, candidates = flat.topk(k, dim=-1)  # (R, k): the bf16 top
    ids = torch.cat((candidates, index), dim=1)  # (R, k + 1): the top, then the target
    exact = logits_at(ids)  # (R, k + 1): fp32
    lse, _ = _logsumexp_rows(flat)
    picked_low = flat.gather(1, index).squeeze(1).float()
    picked = exact[:, k]
    in_top = (candidates == index).any(dim=1)
    shift = torch.maximum(lse, exact.amax(dim=1))  # every term below exp(0)
    tail = (lse - shift).exp() - (low.float() - shift[:, None]).exp().sum(dim=1)  # the bf16 sum less its top
    # a target outside the top is in the tail with its bf16 logit: swap in its fp32 one
    tail = tail + torch.where(in_top, 0.0, (picked - shift).exp() - (picked_low - shift).exp())
    total = (exact[:, :k] - shift[:, None]).exp().sum(dim=1) + tail.clamp_min(0.0)
    token_lp = (picked - shift - total.log()).view(N, L)
    if not score_greedy:
        return token_lp, torch.zeros_like(target, dtype=torch.bool)
    best = exact.amax(dim=1, keepdim=True)
    first = torch.where(exact == best, ids, V).amin(dim=1)  # the first index at the fp32 maximum
    return token_lp, (first == index[:, 0]).view(N, L)


def hflm_logprobs(logits: Tensor, target: Tensor, *, softmax_dtype: torch.dtype | None = None,
                  score_greedy: bool = True) -> tuple[Tensor, Tensor]:
    """HFLM's arithmetic: log-softmax in the logits' dtype (or ``softmax_dtype``), gathered;
    greedy = the target is the argmax of that log-softmax."""
    logp = F.log_softmax(logits, dim=-1, dtype=softmax_dtype)
    token_lp = torch.gather(logp, 2, target[..., None]).squeeze(-1)  # (N, L)
    greedy = first_argmax_is(logp, token_lp, target) if score_greedy else torch.zeros_like(target, dtype=torch.bool)
    return token_lp, greedy


def first_argmax_is(scores: Tensor, picked: Tensor, target: Tensor) -> Tensor:
    """``scores.argmax(-1) == target`` (torch's argmax: the first maximal index), with a cheap
    max and an argmax only where the target reaches the maximum."""
    hit = picked >= scores.amax(dim=-1)  # (N, L)
    if hit.any():
        rows, cols = hit.nonzero(as_tuple=True)
        hit[rows, cols] = scores[rows, cols].argmax(dim=-1) == target[rows, cols]
    return hit


__all__ = [
    "CACHE_ENV",
    "LOGPROB_MODES",
    "Boundary",
    "PrefixCache",
    "boundaries_to_store",
    "default_cache_bytes",
    "exact_logprobs",
    "first_argmax_is",
    "hflm_logprobs",
    "model_key",
    "prefix_path",
    "reuse_order",
    "run_plan",
    "shared_cache",
]
