"""lm-eval adapter: score a sub-network of a supernet in memory (``--model nas-subnet``).

:class:`SubnetLM` is an lm-eval ``LM`` (via ``TemplateLM``, which supplies lm-eval's
own context/continuation tokenisation) over one sub-network of a loaded supernet. No
weights are exported or written: the sub-network is an explicit argument of every
forward call, and one adapter object is bound to one sub-network for its lifetime.

Scoring follows lm-eval's ``HFLM`` exactly where results depend on it:

- ``loglikelihood``: the same tokenisation (trailing spaces move to the continuation;
  an empty context becomes the prefix token), the same left truncation of
  ``context + continuation`` to ``max_length + 1`` tokens, the same log-softmax dtype
  (that of the logits unless ``softmax_dtype`` is set) and the same greedy check.
  Unlike HFLM, requests that share a (truncated) context — the choices of a
  multiple-choice question — run that context once: distinct contexts go through the
  model in length-sorted, right-padded batches of similar lengths that fill KV caches;
  then the continuations, sorted by length across all questions, run in batches whose
  KV cache rows are gathered from those caches (a context repeated for each of its
  continuations), with an attention mask over the padding. Batches are bounded in rows
  (``batch_size``) and padded tokens (``max_batch_tokens``, which bounds the logits).
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import model_registry
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

from evaluators.errors import EvaluatorError
from nas.errors import NasError
from nas.model.directory import LoadedSupernet, load_supernet, parse_dtype
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

log = logging.getLogger(__name__)

MODEL_NAME = "nas-subnet"
DEFAULT_BATCH_SIZE = 32
_Request = tuple[Any, list[int], list[int]]


def parse_eval_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``bf16``/``fp32`` (or a torch dtype) to a torch dtype; fp16 is refused (unusably slow on CPUs)."""
    try:
        return parse_dtype(name)
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

    ``dtype`` (``bf16`` or ``fp32``; fp16 is refused): the dtype a supernet directory is
    loaded in (default bf16); an in-memory model keeps its dtype unless it is given, in
    which case it is cast in place. ``batch_size`` (an integer, or lm-eval's ``"auto"``:
    the default) bounds the rows of one model call, capped by ``max_batch_size``;
    ``max_batch_tokens`` bounds its padded tokens (and so the logits) and
    ``max_cache_tokens`` the context tokens whose KV caches are held at once.
    ``max_length`` (default: the model's ``max_seq_len``) is where requests are truncated,
    ``max_gen_toks`` the default generation length. ``add_bos_token`` and
    ``prefix_token_id`` follow lm-eval's HFLM. ``softmax_dtype`` is the log-softmax dtype
    (default: that of the logits, as HFLM). ``device`` is where a directory is loaded
    (unavailable devices fall back to cpu). ``score_greedy=False`` skips the greedy check
    of ``loglikelihood`` (``is_greedy`` is then always False): only for callers whose
    tasks do not read it (see ``Evaluator``).
    """

    dtype: str | torch.dtype | None = None
    batch_size: int | str = DEFAULT_BATCH_SIZE
    max_batch_size: int | None = None
    max_batch_tokens: int = 4096
    max_cache_tokens: int = 32768
    max_length: int | None = None
    max_gen_toks: int = 256
    add_bos_token: bool | None = None
    prefix_token_id: int | None = None
    softmax_dtype: str | torch.dtype | None = None
    device: str | None = None
    score_greedy: bool = True


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
        target = parse_eval_dtype(opts.dtype)
        space: SearchSpace | None = None
        if isinstance(supernet, (str, Path)):
            try:
                supernet = load_supernet(supernet, dtype=target or torch.bfloat16, device=_available_device(opts.device))
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
        if target is not None and supernet.lm_head_weight.dtype != target:  # after every check: no half-done casts
            log.info("casting the supernet to %s for evaluation", target)
            supernet.to(target)
        supernet.eval()
        self.options = opts
        self.model = supernet
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
        self.max_cache_tokens = int(opts.max_cache_tokens)  # context tokens whose KV caches are held at once
        self._encode_cache = encode_cache
        # is_greedy costs a pass over the vocabulary per continuation token; a caller whose
        # tasks never read it (multiple-choice acc/acc_norm) may switch it off: it is then False
        self.score_greedy = bool(opts.score_greedy)
        self.n_forward = 0  # model calls made by this adapter
        self.n_tokens = 0  # real (not padding) tokens run through the model

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
        return self.model(tokens, self.subnet, cache=cache, attention_mask=mask, logits_index=logits_index)

    # --------------------------------------------------------- loglikelihood
    def _loglikelihood_tokens(self, requests: list[_Request], disable_tqdm: bool = False, override_bs: int | None = None) -> list[tuple[float, bool]]:
        """(log p(continuation | context), is_greedy) per (key, context ids, continuation ids)."""
        max_len = self.max_length
        groups: dict[tuple[int, ...], list[int]] = {}
        conts: list[list[int]] = []
        truncated = 0
        for i, (_, ctx, cont) in enumerate(requests):
            if not ctx or not cont:
                raise EvaluatorError("a loglikelihood request has an empty context or continuation after tokenisation")
            if len(cont) > max_len:
                raise EvaluatorError(
                    f"a continuation of {len(cont)} tokens exceeds the model's maximum length {max_len}; raise max_length"
                )
            whole = list(ctx) + list(cont)
            if len(whole) > max_len + 1:  # HFLM: (ctx + cont)[-(max_length + 1):][:-1]
                truncated += 1
                whole = whole[-(max_len + 1):]
            groups.setdefault(tuple(whole[: len(whole) - len(cont)]), []).append(i)
            conts.append(list(cont))
        if truncated:
            log.warning("%d request(s) exceed the maximum length %d; contexts truncated from the left as lm-eval's HFLM does", truncated, max_len)

        results: list[tuple[float, bool] | None] = [None] * len(requests)
        contexts = sorted(groups, key=lambda c: (-len(c), c))  # longest first
        # rounds of contexts whose KV caches are held at once (bounded memory)
        for round_ in self._batches(contexts, len, rows=len(contexts), tokens=self.max_cache_tokens, slack=None):
            self._score_round(round_, groups, conts, results)
        return results  # type: ignore[return-value]

    def _batches(self, items: list[Any], width: Any, *, rows: int | None = None, tokens: int | None = None,
                 slack: float | None = 0.1) -> list[list[Any]]:
        """Consecutive batches of ``items`` (sorted by decreasing ``width``) of at most ``rows``
        rows (default ``batch_size``) and ``tokens`` padded tokens (default ``max_batch_tokens``);
        a row whose width is more than ``slack`` (relative, 4 tokens at least) below the
        batch's first row starts a new batch, so little compute goes to padding."""
        rows = rows or self.batch_size
        tokens = tokens or self.max_batch_tokens
        batches: list[list[Any]] = []
        for item in items:
            if batches:
                batch = batches[-1]
                first, w = max(width(batch[0]), 1), width(item)
                fits = len(batch) < rows and (len(batch) + 1) * first <= tokens
                tight = slack is None or first - w <= max(4, slack * first)
                if fits and tight:
                    batch.append(item)
                    continue
            batches.append([item])
        return batches

    @torch.inference_mode()
    def _score_round(
        self,
        contexts: list[tuple[int, ...]],
        groups: dict[tuple[int, ...], list[int]],
        conts: list[list[int]],
        results: list[tuple[float, bool] | None],
    ) -> None:
        """Run every distinct context once (tightly padded batches filling KV caches), then
        every continuation: rows of similar length gathered from those caches."""
        device = self.device
        caches: list[Any] = []  # one KV cache per context batch
        where: dict[tuple[int, ...], tuple[int, int]] = {}  # context -> (cache, row)
        last: dict[tuple[int, ...], torch.Tensor] = {}  # context -> logits (V,) predicting the 1st continuation token
        for batch in self._batches(contexts, len):
            lens = [len(c) for c in batch]
            T = lens[0]
            tokens = torch.full((len(batch), T), self.eot_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), T), dtype=torch.long)
            for b, ctx in enumerate(batch):
                tokens[b, : len(ctx)] = torch.tensor(ctx)
                mask[b, : len(ctx)] = 1
            cache = self.model.new_cache(self.subnet)
            ends = (torch.tensor(lens) - 1)[:, None].to(device)  # only the last real position's logits
            rows_last = self._forward(tokens.to(device), cache, mask.to(device) if lens[-1] != T else None, ends)[:, 0]  # (B, V)
            for b, ctx in enumerate(batch):
                where[ctx] = (len(caches), b)
                last[ctx] = rows_last[b]
            caches.append(cache)

        rows = sorted(
            ((ctx, i) for ctx in contexts for i in groups[ctx]),
            key=lambda r: (-len(conts[r[1]]), -len(r[0]), r[1]),
        )
        for chunk in self._batches(rows, lambda r: len(conts[r[1]])):
            lengths = [len(conts[i]) for _, i in chunk]
            K = lengths[0] - 1  # continuation tokens fed after the context (longest first)
            target = torch.zeros((len(chunk), K + 1), dtype=torch.long)
            for r, (_, i) in enumerate(chunk):
                target[r, : lengths[r]] = torch.tensor(conts[i])
            scored = torch.stack([last[ctx] for ctx, _ in chunk])[:, None]  # (N, 1, V)
            if K > 0:
                T = max(len(ctx) for ctx, _ in chunk)
                mask = torch.zeros((len(chunk), T + K), dtype=torch.long)
                for r, (ctx, _) in enumerate(chunk):
                    mask[r, : len(ctx)] = 1
                    mask[r, T : T + lengths[r] - 1] = 1
                feed = target[:, :K].clone()
                feed[mask[:, T:] == 0] = self.eot_token_id
                cache = self._gather_cache([where[ctx] for ctx, _ in chunk], caches, T)
                rest = self._forward(feed.to(device), cache, mask.to(device))  # (N, K, V)
                scored = torch.cat((scored, rest), dim=1)  # (N, K + 1, V)
            # as HFLM: log-softmax in the logits' dtype (or softmax_dtype); greedy = argmax of it
            logp = F.log_softmax(scored, dim=-1, dtype=self.softmax_dtype)
            target = target.to(device)
            token_lp = torch.gather(logp, 2, target[..., None]).squeeze(-1)  # (N, K + 1)
            greedy = self._is_argmax(logp, token_lp, target) if self.score_greedy else torch.zeros_like(token_lp, dtype=torch.bool)
            for r, ((_, i), n) in enumerate(zip(chunk, lengths)):
                results[i] = (float(token_lp[r : r + 1, :n].contiguous().sum()), bool(greedy[r, :n].all()))

    def _gather_cache(self, sources: list[tuple[int, int]], caches: list[Any], T: int) -> Any:
        """A KV cache whose row r holds the first ``T`` cached positions of row ``sources[r]``
        = (cache, row) (positions past a context's end are padding, masked by the caller)."""
        device = self.device
        out = self.model.new_cache(self.subnet)
        for layer in range(len(out.keys)):
            for store, held in ((out.keys, [c.keys[layer] for c in caches]), (out.values, [c.values[layer] for c in caches])):
                parts = []
                for cache_id, row in sources:
                    t = held[cache_id][row, :, :T]  # (K, <=T, hd)
                    if t.shape[1] < T:
                        t = F.pad(t, (0, 0, 0, T - t.shape[1]))
                    parts.append(t)
                store[layer] = torch.stack(parts).to(device)  # (N, K, T, hd)
        return out

    @staticmethod
    def _is_argmax(logp: torch.Tensor, token_lp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logp.argmax(-1) == target`` (the first maximal index, as torch's argmax), computed
        with a cheap max and an argmax only where the target reaches the maximum."""
        hit = token_lp >= logp.amax(dim=-1)  # (N, L)
        if hit.any():
            rows, cols = hit.nonzero(as_tuple=True)
            hit[rows, cols] = logp[rows, cols].argmax(dim=-1) == target[rows, cols]
        return hit

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

__all__ = ["MODEL_NAME", "ScoringOptions", "SubnetLM", "parse_eval_dtype", "register", "resolve_subnet"]
