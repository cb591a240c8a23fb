"""lm-eval adapter: score a sub-network of a supernet in memory (``--model nas-subnet``).

:class:`SubnetLM` is an lm-eval ``LM`` (via ``TemplateLM``, which supplies lm-eval's
own context/continuation tokenisation) over one sub-network of a loaded supernet. No
weights are exported or written: the sub-network is an explicit argument of every
forward call, and one adapter object is bound to one sub-network for its lifetime.

Scoring follows lm-eval's ``HFLM`` exactly where results depend on it:

- ``loglikelihood``: the same tokenisation (trailing spaces move to the continuation;
  an empty context becomes the prefix token), the same left truncation of
  ``context + continuation`` to ``max_length + 1`` tokens. Unlike HFLM, requests that
  share a (truncated) context — the choices of a multiple-choice question — run that
  context once: each context and the tokens fed after it for every one of its
  continuations are packed, with many others, end to end into rounds of up to
  ``pack_tokens`` real tokens, so every position-wise part of a layer runs on a whole
  round at once without padding; attention runs per row (a context and its
  continuations, each continuation seeing its context and itself: a tree mask by
  position), rows of similar length batched (``batch_size`` rows, ``max_batch_tokens``
  padded tokens), and the LM head only where a log-probability is needed. Those rounds
  are a *scoring plan* (:mod:`evaluators.plan`) that depends only on the requests and
  settings, so a study builds it once and every candidate runs it
  (:mod:`evaluators.prefix`, which can also resume from the residual streams a candidate
  with the same first layers left).
  Log-likelihoods are the target logit minus an fp32 logsumexp (``logprobs="exact"``,
  the default), or HFLM's log-softmax in the logits' dtype (``logprobs="hflm"``, with
  ``softmax_dtype``) and its greedy check, for parity runs.
- ``loglikelihood_rolling``: HFLM's disjoint rolling windows (``max_length`` tokens,
  the prefix token before the first), summed per document.
- ``generate_until``: greedy decoding with the KV cache in left-padded batches, stop
  sequences (plus the EOS text), ``max_gen_toks``; the text is cut at the first stop
  sequence as HFLM does. Sampling is refused.

From lm-eval's CLI (the registry has no plugin entry points in lm-eval 0.4.x, so the
model is registered when this module is imported; ``python -m evaluators.lm_eval_cli``
imports it and then runs lm-eval's own CLI)::

    python -m evaluators.lm_eval_cli --model nas-subnet \\
        --model_args supernet=work/smollm2,subnet=largest,dtype=bf16 --tasks arc_easy

``subnet`` is ``largest`` or ``smallest`` (of the supernet's search space), ``full``
(every weight), a JSON sub-network config, or the path of a JSON file holding one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import model_registry
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

from evaluators.errors import EvaluatorError
from evaluators.plan import LoglikelihoodPlan, batches, build_plan
from evaluators.prefix import LOGPROB_MODES, PrefixCache, run_plan
from nas.errors import NasError
from nas.model.directory import LoadedSupernet, load_supernet
from nas.model.fused import resolve_kernels
from nas.model.precision import torch_dtype
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

log = logging.getLogger(__name__)

MODEL_NAME = "nas-subnet"
DEFAULT_BATCH_SIZE = 32
#: how a bf16 model computes what is not a matmul: ``mixed`` (the residual stream, its norms
#: and the logits that decide a log-probability in fp32) or ``model`` (all in the weights'
#: dtype, as lm-eval's HFLM computes); see :class:`ScoringOptions`
NUMERICS = ("mixed", "model")
DEFAULT_NUMERICS = "mixed"
_Request = tuple[Any, list[int], list[int]]


def parse_eval_dtype(name: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype | None:
    """``bf16``/``fp32`` (or a torch dtype) to a torch dtype; ``auto``: bf16 where ``device``
    computes it natively, else fp32 (:func:`nas.model.precision.fast_dtype`); fp16 is refused
    (unusably slow on CPUs)."""
    try:
        return None if name is None else torch_dtype(name, device)
    except NasError as exc:
        raise EvaluatorError(str(exc)) from None


def resolve_subnet(spec: Any, model: Supernet, space: SearchSpace | None = None) -> SubnetConfig:
    """A sub-network from ``largest`` | ``smallest`` | ``full`` | a JSON config (text,
    mapping or file path) | a :class:`SubnetConfig`, checked to fit ``model``."""
    space = space or SearchSpace.default(model.config, model.layer_rank)
    try:
        if isinstance(spec, SubnetConfig):
            subnet = spec
        elif isinstance(spec, Mapping):
            subnet = SubnetConfig.from_dict(spec)
        elif isinstance(spec, (str, Path)):
            text = str(spec).strip()
            if text == "largest":
                subnet = space.largest()
            elif text == "smallest":
                subnet = space.smallest()
            elif text == "full":
                subnet = model.full_subnet()
            elif text.startswith("{"):
                subnet = SubnetConfig.from_json(text)
            elif Path(text).expanduser().is_file():
                subnet = SubnetConfig.from_json(Path(text).expanduser().read_text())
            else:
                raise EvaluatorError(
                    f"subnet {text!r} is not 'largest', 'smallest', 'full', a JSON config or an existing JSON file"
                )
        else:
            raise EvaluatorError(f"subnet must be a name, a JSON config or a SubnetConfig, got {type(spec).__name__}")
        subnet.check_fits(model.config)
    except NasError as exc:
        raise EvaluatorError(f"{exc} (the supernet does not contain this sub-network; pick one from its search space)") from None
    return subnet


def _available_device(name: str | None) -> str:
    """``name`` if torch can use it, else ``cpu`` (lm-eval's CLI asks for ``cuda`` by default)."""
    name = name or "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %s is not available; evaluating on cpu", name)
        return "cpu"
    if name == "mps" and not torch.backends.mps.is_available():
        log.warning("device mps is not available; evaluating on cpu")
        return "cpu"
    return name


@dataclass(frozen=True, kw_only=True)
class ScoringOptions:
    """How a :class:`SubnetLM` scores (numbers and dtype names only; the model, tokenizer and
    token cache are arguments of the adapter itself).

    ``dtype`` (``bf16``, ``fp32`` or ``auto``; fp16 is refused): the dtype a supernet directory
    is loaded in (default ``auto``: bf16 where the device computes it natively, else fp32); an
    in-memory model keeps its dtype unless it is given, in
    which case it is cast in place. ``batch_size`` (an integer, or lm-eval's ``"auto"``:
    the default) bounds the rows of one model call, capped by ``max_batch_size``;
    ``max_batch_tokens`` bounds the padded tokens attended together and the positions whose
    logits are held at once, and
    ``pack_tokens`` the real tokens (contexts and the continuation tokens fed after them)
    packed into one model pass (see :mod:`evaluators.plan`).
    ``max_length`` (default: the model's ``max_seq_len``) is where requests are truncated,
    ``max_gen_toks`` the default generation length. ``add_bos_token`` and
    ``prefix_token_id`` follow lm-eval's HFLM. ``logprobs``: ``exact`` (target logit minus a
    logsumexp accumulated in fp32: no bf16 rounding of log-probabilities) or ``hflm``
    (HFLM's log-softmax in the logits' dtype, or ``softmax_dtype``). ``device`` is where a
    directory is loaded (unavailable devices fall back to cpu). ``score_greedy=False``
    skips the greedy check of ``loglikelihood`` (``is_greedy`` is then always False): only
    for callers whose tasks do not read it (see ``Evaluator``). ``prefix_cache_bytes``
    bounds the residual streams an :class:`~evaluators.evaluate.Evaluator` keeps for
    prefix reuse across candidates (None: the process's shared cache, whose budget is
    ``$NAS_PREFIX_CACHE_MB`` or a quarter of free memory, at most 8 GiB; 0: off).
    ``kernels`` (``auto``, ``eager`` or ``fused``; None: ``$NAS_KERNELS``, else ``auto``):
    whether a block's norms and RoPE run as compiled kernels, by default for bf16 on a CPU
    where Inductor builds (see :mod:`nas.model.fused`). ``numerics`` (``mixed`` or ``model``)
    says how a bf16 model computes around its matmuls, which run in bf16 either way:
    ``model`` rounds everything to bf16, as HFLM does; ``mixed`` keeps the residual stream,
    its adds and norms in fp32 (:meth:`nas.model.supernet.Supernet.embed_tokens`) and, for
    log-likelihoods, takes each target's logit and the top of each distribution in fp32
    (:func:`evaluators.prefix.refined_logprobs`), so its scores stay closer to fp32's. An
    fp32 model computes everything in fp32 under both.
    """

    dtype: str | torch.dtype | None = None
    batch_size: int | str = DEFAULT_BATCH_SIZE
    max_batch_size: int | None = None
    max_batch_tokens: int = 4096
    pack_tokens: int = 8192
    max_length: int | None = None
    max_gen_toks: int = 256
    add_bos_token: bool | None = None
    prefix_token_id: int | None = None
    softmax_dtype: str | torch.dtype | None = None
    logprobs: str = "exact"
    device: str | None = None
    score_greedy: bool = True
    prefix_cache_bytes: int | None = None
    kernels: str | None = None
    numerics: str = DEFAULT_NUMERICS


class SubnetLM(TemplateLM):
    """An lm-eval LM over one sub-network of a supernet (registered as ``nas-subnet``).

    ``supernet`` is a supernet directory, a :class:`LoadedSupernet` or a
    :class:`Supernet` (then ``tokenizer`` is required). ``options`` says how it scores
    (see :class:`ScoringOptions`); keyword ``settings`` are fields of
    :class:`ScoringOptions` that override those of ``options`` — lm-eval's
    ``--model_args key=value,...`` (and its ``batch_size``/``max_batch_size``/``device``)
    arrive this way through its ``create_from_arg_string``; an unknown name is a
    ``TypeError``. ``encode_cache`` (a dict) memoises tokenisation across adapters of the
    same tokenizer — it holds token ids only, never results.
    """

    def __init__(
        self,
        supernet: str | Path | Supernet | LoadedSupernet,
        subnet: Any = "largest",
        *,
        tokenizer: Any = None,
        options: ScoringOptions | None = None,
        encode_cache: dict[tuple[str, bool | None], list[int]] | None = None,
        **settings: Any,
    ) -> None:
        opts = replace(options if options is not None else ScoringOptions(), **settings)  # unknown names: TypeError
        super().__init__()
        device = _available_device(opts.device)
        target = parse_eval_dtype(opts.dtype, device)
        space: SearchSpace | None = None
        if isinstance(supernet, (str, Path)):
            try:
                supernet = load_supernet(supernet, dtype=target or parse_eval_dtype("auto", device), device=device)
            except NasError as exc:
                raise EvaluatorError(str(exc)) from None
        if isinstance(supernet, LoadedSupernet):
            space = supernet.space
            if tokenizer is None:
                try:
                    tokenizer = supernet.load_tokenizer()
                except NasError as exc:
                    raise EvaluatorError(str(exc)) from None
            supernet = supernet.model
        if not isinstance(supernet, Supernet):
            raise EvaluatorError(f"supernet must be a directory, a LoadedSupernet or a Supernet, got {type(supernet).__name__}")
        if isinstance(tokenizer, (str, Path)):
            # deferred: transformers takes seconds to import; only this path needs it
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        if tokenizer is None:
            raise EvaluatorError("a tokenizer is required to evaluate an in-memory supernet; pass tokenizer=")
        self.subnet = resolve_subnet(subnet, supernet, space)
        self.softmax_dtype = parse_eval_dtype(opts.softmax_dtype) if opts.softmax_dtype is not None else None
        if opts.logprobs not in LOGPROB_MODES:
            raise EvaluatorError(f"logprobs={opts.logprobs!r} is not one of {', '.join(LOGPROB_MODES)}")
        self.logprobs = opts.logprobs
        if opts.numerics not in NUMERICS:
            raise EvaluatorError(f"numerics={opts.numerics!r} is not one of {', '.join(NUMERICS)}")
        if target is not None and supernet.lm_head_weight.dtype != target:  # after every check: no half-done casts
            log.info("casting the supernet to %s for evaluation", target)
            supernet.to(target)
        supernet.eval()
        try:
            self.fused = resolve_kernels(opts.kernels, supernet.lm_head_weight.dtype, supernet.lm_head_weight.device)
        except NasError as exc:
            raise EvaluatorError(str(exc)) from None
        self.options = opts
        self.model = supernet
        # mixed numerics only change a model whose weights are not fp32
        self.mixed = opts.numerics == "mixed" and supernet.lm_head_weight.dtype != torch.float32
        self.tokenizer = tokenizer
        self.add_bos_token = opts.add_bos_token
        self.custom_prefix_token_id = opts.prefix_token_id
        self._max_length = int(opts.max_length) if opts.max_length else supernet.config.max_seq_len
        self._max_gen_toks = int(opts.max_gen_toks)
        batch_size = opts.batch_size
        if isinstance(batch_size, str):
            batch_size = int(batch_size) if batch_size.isdigit() else DEFAULT_BATCH_SIZE  # "auto" -> default
        self._batch_size = max(1, min(int(batch_size), int(opts.max_batch_size or batch_size)))
        self.max_batch_tokens = int(opts.max_batch_tokens)  # bounds the (rows x tokens x vocab) logits of one call
        self.pack_tokens = int(opts.pack_tokens)  # real tokens packed into one model pass
        self._encode_cache = encode_cache
        # is_greedy costs a pass over the vocabulary per continuation token; a caller whose
        # tasks never read it (multiple-choice acc/acc_norm) may switch it off: it is then False
        self.score_greedy = bool(opts.score_greedy)
        self.n_forward = 0  # model calls made by this adapter
        self.n_tokens = 0  # real (not padding) tokens run through the model
        self.resumed_at = 0  # kept layer the last plan run resumed at (prefix reuse)

    # ------------------------------------------------------------- properties
    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return int(eos if eos is not None else self.model.config.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        if self.custom_prefix_token_id is not None:
            return int(self.custom_prefix_token_id)
        if self.tokenizer.bos_token_id is not None:
            return int(self.tokenizer.bos_token_id)
        return self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self.model.lm_head_weight.device

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "")).replace("/", "__")

    def get_model_info(self) -> dict[str, Any]:
        return {
            "subnet": self.subnet.to_json(),
            "subnet_hash": self.subnet.hash,
            "model_dtype": str(self.model.lm_head_weight.dtype),
            "model_num_parameters": self.model.num_params(self.subnet),
        }

    # ------------------------------------------------------------ tokenising
    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None, **kwargs: Any) -> list[int]:
        """HFLM's ``tok_encode``: add special tokens per ``add_bos_token`` unless the
        string already starts with the prefix token's text."""
        special = add_special_tokens if add_special_tokens is not None else self.add_bos_token
        if add_special_tokens is None and string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            special = False
        ids = self._encode(string, special)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def _encode(self, string: str, add_special_tokens: bool | None) -> list[int]:
        """``tokenizer.encode`` (its default special tokens when None), memoised in ``encode_cache``."""
        key = (string, add_special_tokens)
        cached = self._encode_cache.get(key) if self._encode_cache is not None else None
        if cached is None:
            special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            cached = list(self.tokenizer.encode(string, **special))
            if self._encode_cache is not None:
                self._encode_cache[key] = cached
        return list(cached)

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=skip_special_tokens)

    # --------------------------------------------------------------- forward
    def _forward(self, tokens: torch.Tensor, cache: Any = None, mask: torch.Tensor | None = None,
                 logits_index: torch.Tensor | None = None) -> torch.Tensor:
        past = 0 if cache is None else cache.length
        self.n_forward += 1
        self.n_tokens += int(tokens.numel() if mask is None else mask[:, past:].sum())
        return self.model(tokens, self.subnet, cache=cache, attention_mask=mask, logits_index=logits_index,
                          residual_dtype=torch.float32 if self.mixed else None)

    # --------------------------------------------------------- loglikelihood
    def plan(self, requests: list[_Request]) -> LoglikelihoodPlan:
        """The scoring plan of tokenised requests (key, context ids, continuation ids) under
        this adapter's batching settings (see :mod:`evaluators.plan`)."""
        plan = build_plan(
            [(ctx, cont) for _, ctx, cont in requests], max_length=self.max_length,
            batch_size=self.batch_size, max_batch_tokens=self.max_batch_tokens, pack_tokens=self.pack_tokens,
        )
        if plan.n_truncated:
            log.warning("%d request(s) exceed the maximum length %d; contexts truncated from the left as lm-eval's HFLM does",
                        plan.n_truncated, self.max_length)
        return plan

    def run_plan(self, plan: LoglikelihoodPlan, cache: PrefixCache | None = None,
                 branch_depths: Collection[int] | None = None) -> list[tuple[float, bool]]:
        """(log p(continuation | context), is_greedy) per request of ``plan`` for this sub-network,
        resuming from ``cache``'s deepest stored boundary and storing those at ``branch_depths``
        (None: any; see :mod:`evaluators.prefix`)."""
        results, counts = run_plan(
            self.model, self.subnet, plan, cache=cache, logprobs=self.logprobs,
            softmax_dtype=self.softmax_dtype, score_greedy=self.score_greedy, logits_rows=self.max_batch_tokens,
            branch_depths=branch_depths, fused=self.fused, mixed=self.mixed,
        )
        self.n_forward += counts["n_forward"]
        self.n_tokens += counts["n_tokens"]
        self.resumed_at = counts["start"]
        return results

    def _loglikelihood_tokens(self, requests: list[_Request], disable_tqdm: bool = False, override_bs: int | None = None) -> list[tuple[float, bool]]:
        """(log p(continuation | context), is_greedy) per (key, context ids, continuation ids)."""
        return self.run_plan(self.plan(requests))

    def _batches(self, items: list[Any], width: Any) -> list[list[Any]]:
        return batches(items, width, rows=self.batch_size, tokens=self.max_batch_tokens)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Sum of log-probabilities of each document over HFLM's disjoint rolling windows."""
        windows: list[_Request] = []
        owners: list[int] = []
        for n, req in enumerate(requests):
            (string,) = req.args
            for ctx, cont in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, ctx, cont))
                owners.append(n)
        totals = [0.0] * len(requests)
        for owner, (ll, _) in zip(owners, self._loglikelihood_tokens(windows) if windows else []):
            totals[owner] += ll
        return totals

    # ------------------------------------------------------------ generation
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context until a stop sequence, EOS or ``max_gen_toks``."""
        out: list[str | None] = [None] * len(requests)
        by_kwargs: dict[str, list[int]] = {}
        for n, req in enumerate(requests):
            by_kwargs.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(n)
        eos_text = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        for members in by_kwargs.values():
            kwargs = dict(normalize_gen_kwargs(requests[members[0]].args[1], self.max_gen_toks))
            if kwargs.get("do_sample"):
                raise EvaluatorError("the nas-subnet model decodes greedily only; set do_sample=False (or temperature 0)")
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_gen = int(kwargs.pop("max_gen_toks"))
            max_ctx = self.max_length - max_gen
            if max_ctx <= 0:
                raise EvaluatorError(f"max_gen_toks={max_gen} leaves no room for the context in max_length={self.max_length}")
            encoded = {n: self._generation_context(requests[n].args[0])[-max_ctx:] for n in members}
            order = sorted(members, key=lambda n: (-len(encoded[n]), requests[n].args[0]))
            for chunk in self._batches(order, lambda n: len(encoded[n])):
                for n, text in zip(chunk, self._greedy([encoded[n] for n in chunk], until, max_gen)):
                    out[n] = text
        return out  # type: ignore[return-value]

    def _generation_context(self, context: str) -> list[int]:
        """HFLM's ``tok_batch_encode`` for one string: no special tokens when it already
        starts with BOS, else per ``add_bos_token``, else the tokenizer's default."""
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos is not None and context.startswith(bos):
            return self._encode(context, False)
        return self._encode(context, self.add_bos_token)

    @torch.inference_mode()
    def _greedy(self, contexts: list[list[int]], until: list[str], max_gen: int) -> list[str]:
        device = self.device
        B, T = len(contexts), max(len(c) for c in contexts)
        tokens = torch.full((B, T), self.eot_token_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        for b, ctx in enumerate(contexts):
            tokens[b, T - len(ctx) :] = torch.tensor(ctx)
            mask[b, T - len(ctx) :] = 1
        padded = bool((mask == 0).any())
        mask = mask.to(device)
        cache = self.model.new_cache(self.subnet)
        last = torch.full((B, 1), T - 1, dtype=torch.long, device=device)  # left-padded: every row ends at T - 1
        nxt = self._forward(tokens.to(device), cache, mask if padded else None, last)[:, -1].argmax(dim=-1)  # (B,)
        generated: list[list[int]] = [[] for _ in range(B)]
        active = list(range(B))  # batch rows still generating, in cache order
        for step in range(max_gen):
            still: list[int] = []
            for pos, b in enumerate(active):
                tok = int(nxt[pos])
                generated[b].append(tok)
                text = self.tok_decode(generated[b], skip_special_tokens=False)
                if tok != self.eot_token_id and not any(s and s in text for s in until):
                    still.append(pos)
            if not still or step == max_gen - 1:
                break
            if len(still) != len(active):
                keep = torch.tensor(still, device=device)
                cache, mask, nxt = cache.select(keep), mask[keep], nxt[keep]
                active = [active[p] for p in still]
            mask = torch.cat((mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)), dim=1)
            logits = self._forward(nxt[:, None], cache, mask if padded else None)
            nxt = logits[:, -1].argmax(dim=-1)
        return [postprocess_generated_text(self.tok_decode(g), until, None) for g in generated]


def register() -> None:
    """Register :class:`SubnetLM` with lm-eval's model registry as ``nas-subnet`` (idempotent)."""
    current = model_registry.get(MODEL_NAME, None)
    if current is None:
        model_registry.register(MODEL_NAME)(SubnetLM)
    elif current is not SubnetLM:
        log.warning("lm-eval model %r is already registered to %r; not replacing it", MODEL_NAME, current)


register()

__all__ = ["DEFAULT_NUMERICS", "MODEL_NAME", "NUMERICS", "ScoringOptions", "SubnetLM", "parse_eval_dtype", "register", "resolve_subnet"]
