"""Running a GGUF export in llama.cpp (through llama-cpp-python) and checking it against ours.

:func:`verify_gguf` feeds the same token ids (a fixed English text in the export's
tokenizer) to llama.cpp and to our model, and compares next-token log-probabilities at
every position: at ``f32`` the largest absolute difference (goal <= 1e-3) and a greedy
generation of 32 tokens (must be identical); at a quantisation the mean KL divergence
KL(ours || llama.cpp) and the top-1 agreement against our unquantised model — and, when
given, against our *fake-quantised* model (the weights passed through the format's
quantise/dequantise, :mod:`nas.model.fakequant`), which isolates what llama.cpp's
kernels add (they also quantise activations for the dot products).

llama-cpp-python is an optional dependency (``pip install -e '.[engine]'``): it builds
llama.cpp from source; :func:`require_llama_cpp` says how when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluators.engine_table import INSTALL_HINT, engine_device
from nas.errors import NasError
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet

F32_TOLERANCE = 1e-3
VERIFY_TEXT = (
    "The old lighthouse keeper climbed the winding stairs every evening at dusk. From the top he could see "
    "the fishing boats returning to the harbour, their lanterns swinging in the wind. He wrote the names of "
    "the ships in a worn leather book, and on quiet nights he read the entries aloud to the sea."
)


def require_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or one :class:`NasError` naming the install command."""
    try:
        import llama_cpp  # deferred: optional dependency, built from source
    except ImportError:
        raise NasError(f"llama-cpp-python is not installed, and GGUF verification and engine latency need it; install it "
                       f"with: {INSTALL_HINT}") from None
    return llama_cpp


def engine_version() -> str:
    """``llama-cpp-python <version>`` (it pins the llama.cpp it was built with)."""
    return f"llama-cpp-python {require_llama_cpp().__version__}"


def load_engine(path: str | Path, *, n_ctx: int = 512, n_threads: int | None = None, logits_all: bool = True) -> Any:
    """A ``llama_cpp.Llama`` over the GGUF at ``path`` (logits for every position unless
    ``logits_all`` is False: timing runs keep only the last)."""
    llama_cpp = require_llama_cpp()
    path = Path(path)
    if not path.is_file():
        raise NasError(f"GGUF file {path} does not exist; export it with `nas export ... --format gguf`")
    threads = n_threads or max(1, min(4, os.cpu_count() or 1))
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        try:
            # an f32 KV cache (llama.cpp's default is f16): the cache must not be what differs from ours
            return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=logits_all, verbose=False,
                                   n_threads=threads, n_threads_batch=threads, seed=0, type_k=0, type_v=0, flash_attn=False)
        except ValueError as exc:
            raise NasError(f"llama.cpp could not load {path} ({exc}); export it again") from None


def engine_logits(llm: Any, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits (T, V) for the token ids, from an empty context."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids), :], dtype=np.float32)


def engine_greedy(llm: Any, ids: list[int], n: int) -> list[int]:
    """``n`` greedy tokens after ``ids`` (argmax of llama.cpp's logits, no sampler, no stop)."""
    llm.reset()
    llm.eval(ids)
    new: list[int] = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        new.append(nxt)
        llm.eval([nxt])
    return new


def engine_fingerprint(n_threads: int) -> str:
    """Where an engine timing was taken: CPU model, cores, threads and the engine's version
    (the caller appends the clock; the same string as
    :func:`evaluators.engine_table.engine_fingerprint`, which engine latency tables carry)."""
    return f"{engine_device()}|threads={n_threads}|{engine_version()}"


@dataclass(frozen=True)
class EngineLatency:
    """llama.cpp's timings of one GGUF: the median over ``repeats`` of a ``prompt_len``-token
    prefill and of the per-token time of ``decode_tokens`` greedy-decoded tokens after it."""

    file: str
    prompt_len: int
    decode_tokens: int
    repeats: int
    prefill_ms: float
    decode_ms_per_token: float
    device: str
    prefill_samples: tuple[float, ...]
    decode_samples: tuple[float, ...]

    @property
    def decode_tokens_per_s(self) -> float:
        return 1e3 / self.decode_ms_per_token

    @property
    def engine_latency_ms(self) -> float:
        """The cost metric ``engine_latency_ms``: the prefill of ``prompt_len`` tokens."""
        return self.prefill_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decode_tokens_per_s": self.decode_tokens_per_s, "engine_latency_ms": self.engine_latency_ms}


def engine_latency(path: str | Path, *, prompt_len: int = 128, decode_tokens: int = 32, repeats: int = 5, warmup: int = 1,
                   n_threads: int | None = None, seed: int = 0, clock: str = "wall") -> EngineLatency:
    """Time the GGUF at ``path`` in llama.cpp (see :class:`EngineLatency`) on seeded random
    token ids; each repeat starts from an empty KV cache. ``clock="process"`` times the CPU
    work of this process (llama.cpp's threads included) instead of elapsed time: with
    ``n_threads=1`` close to the idle-machine latency on a CPU shared with other jobs."""
    now = _clock(clock)
    threads = n_threads or max(1, min(4, os.cpu_count() or 1))
    llm = load_engine(path, n_ctx=prompt_len + decode_tokens + 8, n_threads=threads, logits_all=False)
    rng = np.random.default_rng(seed)
    ids = [int(i) for i in rng.integers(0, llm.n_vocab(), prompt_len)]
    prefill, decode = [], []
    for run in range(warmup + repeats):
        llm.reset()
        t0 = now()
        llm.eval(ids)
        t1 = now()
        for _ in range(decode_tokens):
            llm.eval([int(np.argmax(llm.scores[0]))])
        t2 = now()
        if run >= warmup:
            prefill.append((t1 - t0) * 1e3)
            decode.append((t2 - t1) * 1e3 / max(1, decode_tokens))
    if hasattr(llm, "close"):
        llm.close()
    return EngineLatency(file=str(path), prompt_len=prompt_len, decode_tokens=decode_tokens, repeats=repeats,
                         prefill_ms=statistics.median(prefill), decode_ms_per_token=statistics.median(decode),
                         device=f"{engine_fingerprint(threads)}|{clock}", prefill_samples=tuple(round(v, 4) for v in prefill),
                         decode_samples=tuple(round(v, 4) for v in decode))


def _clock(clock: str):  # noqa: ANN202 - a time function
    if clock not in ("wall", "process"):
        raise NasError(f"clock {clock!r} is not 'wall' or 'process'")
    return time.perf_counter if clock == "wall" else time.process_time


def prefill_round_robin(paths: list[Path], *, prompt_len: int = 128, repeats: int = 3, warmup: int = 1,
                        n_threads: int = 1, clock: str = "process", seed: int = 0) -> list[list[float]]:
    """llama.cpp's prefill milliseconds of ``prompt_len`` seeded token ids for every GGUF of
    ``paths`` (all loaded at once), ``repeats`` runs each after ``warmup``, interleaved (one
    run of each per round) so that load from other processes hits all of them alike; each
    run starts from an empty KV cache and keeps only the last position's logits."""
    now = _clock(clock)
    if repeats < 1 or warmup < 0:
        raise NasError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    llms = [load_engine(p, n_ctx=prompt_len + 8, n_threads=n_threads, logits_all=False) for p in paths]
    try:
        rng = np.random.default_rng(seed)
        samples: list[list[float]] = [[] for _ in llms]
        for run in range(warmup + repeats):
            for i, llm in enumerate(llms):
                ids = [int(t) for t in rng.integers(0, llm.n_vocab(), prompt_len)]
                llm.reset()
                t0 = now()
                llm.eval(ids)
                t1 = now()
                if run >= warmup:
                    samples[i].append((t1 - t0) * 1e3)
    finally:
        for llm in llms:
            if hasattr(llm, "close"):
                llm.close()
    return samples


def our_logits(model: Supernet, subnet: SubnetConfig | None, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids]), subnet)[0].float().numpy()


def our_greedy(model: Supernet, subnet: SubnetConfig | None, ids: list[int], n: int) -> list[int]:
    """``n`` greedy tokens of our model with its KV cache."""
    cache = model.new_cache(subnet)
    new: list[int] = []
    with torch.no_grad():
        logits = model(torch.tensor([ids]), subnet, cache=cache)[0, -1]
        for _ in range(n):
            nxt = int(logits.argmax())
            new.append(nxt)
            logits = model(torch.tensor([[nxt]]), subnet, cache=cache)[0, -1]
    return new


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def compare_logprobs(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """Max abs log-prob difference, mean KL(ours || theirs) and top-1 agreement over positions."""
    a, b = _log_softmax(ours), _log_softmax(theirs)
    kl = (np.exp(a) * (a - b)).sum(-1)
    return {"logprob_max_abs_diff": float(np.abs(a - b).max()), "kl_mean": float(kl.mean()),
            "top1_agree": float((a.argmax(-1) == b.argmax(-1)).mean())}


@dataclass(frozen=True)
class EngineReport:
    """One GGUF checked in llama.cpp against our model on :data:`VERIFY_TEXT`."""

    file: str
    quant: str
    n_tokens: int
    logprob_max_abs_diff: float
    kl_mean: float
    top1_agree: float
    greedy_identical: bool
    greedy_ours: tuple[int, ...]
    greedy_engine: tuple[int, ...]
    tokenizer_agrees: bool | None
    engine: str
    #: the same against our fake-quantised model (None at f32 or when not given)
    kl_vs_fake_quant: float | None = None
    top1_vs_fake_quant: float | None = None
    logprob_max_abs_diff_vs_fake_quant: float | None = None

    @property
    def ok(self) -> bool:
        """f32: within :data:`F32_TOLERANCE` and greedy identical; a quantisation is reported, not judged."""
        return self.quant != "f32" or (self.logprob_max_abs_diff <= F32_TOLERANCE and self.greedy_identical)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def verify_gguf(path: str | Path, reference: Supernet, subnet: SubnetConfig | None, *, quant: str, tokenizer: Any = None,
                ids: list[int] | None = None, n_generate: int = 32, fake_quant: Supernet | None = None) -> EngineReport:
    """Check the GGUF at ``path`` in llama.cpp against ``reference`` (our model, fp32) run at
    ``subnet`` (None: its full model) on the fixed text's token ids (``tokenizer``) or ``ids``."""
    if ids is None:
        if tokenizer is None:
            raise NasError("verify_gguf needs the export's tokenizer or token ids")
        ids = list(tokenizer(VERIFY_TEXT)["input_ids"])
    llm = load_engine(path, n_ctx=max(512, len(ids) + n_generate + 8))
    agrees = None
    if tokenizer is not None:
        agrees = list(llm.tokenize(VERIFY_TEXT.encode(), add_bos=False, special=False)) == list(tokenizer(VERIFY_TEXT)["input_ids"])
    theirs = engine_logits(llm, ids)
    reference = reference.float().eval()
    cmp = compare_logprobs(our_logits(reference, subnet, ids), theirs)
    greedy_e = engine_greedy(llm, ids, n_generate)
    greedy_o = our_greedy(reference if fake_quant is None else fake_quant.float().eval(), subnet, ids, n_generate)
    vs_fake: dict[str, float] = {}
    if fake_quant is not None:
        vs_fake = compare_logprobs(our_logits(fake_quant.float().eval(), subnet, ids), theirs)
    if hasattr(llm, "close"):
        llm.close()
    return EngineReport(
        file=str(path), quant=quant, n_tokens=len(ids), engine=engine_version(), tokenizer_agrees=agrees,
        greedy_identical=greedy_o == greedy_e, greedy_ours=tuple(greedy_o), greedy_engine=tuple(greedy_e),
        kl_vs_fake_quant=vs_fake.get("kl_mean"), top1_vs_fake_quant=vs_fake.get("top1_agree"),
        logprob_max_abs_diff_vs_fake_quant=vs_fake.get("logprob_max_abs_diff"), **cmp,
    )


__all__ = ["F32_TOLERANCE", "INSTALL_HINT", "VERIFY_TEXT", "EngineLatency", "EngineReport", "engine_fingerprint", "engine_latency", "compare_logprobs", "engine_greedy", "engine_logits",
           "engine_version", "load_engine", "our_greedy", "prefill_round_robin", "our_logits", "require_llama_cpp", "verify_gguf"]
