"""Once-for-all supernet training: the sandwich rule with in-place distillation.

Every step draws one batch and runs several *arms* (sub-networks) on it, accumulating
their gradients into the shared weights before one optimiser step:

- the **largest** sub-network of the search space learns from the data (cross-entropy);
- the **smallest** and ``n_random`` **random** sub-networks learn from the largest one's
  *detached* logits (KL divergence at a temperature, times ``T**2``), plus an optional
  cross-entropy share.

With ``teacher: frozen`` (the default when ``init_from`` names an imported supernet)
every arm instead distils from a frozen copy of the full starting model: "healing" an
importance-ordered model so that its sub-networks recover quality. Optional progressive
shrinking enables the elastic dimensions in stages (``sandwich.stages``), as OFA does.
MoE supernets also sample ``n_expert``/``top_k`` and add the load-balancing loss.

Training is exactly resumable (:mod:`nas.training.checkpoints`) and data-parallel under
``torchrun`` (:mod:`nas.training.distributed`): the same config gives the same model on
1 or N processes, killed and resumed or not.

This module holds the loop (:func:`train`) and its reports; the pieces it wires together
live beside it: the config (:mod:`~nas.training.config`), the per-step losses
(:mod:`~nas.training.sandwich`), the arms of each step (:mod:`~nas.training.sampling`),
the memory check (:mod:`~nas.training.memory`), the optimiser (:mod:`~nas.training.optim`)
and the log (:mod:`~nas.training.runlog`).

The library never prints: progress goes to ``on_step``/``on_eval`` callbacks (the CLI
draws a rich progress bar), logs to ``OUT/train/log.jsonl`` and the ``logging`` module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from evaluators.cost import cost_breakdown
from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.directory import load_supernet, save_supernet
from nas.model.heap import retain_freed_memory
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.model.supernet import Supernet
from nas.model.tokenizer import eos_id, fingerprint, load_tokenizer, save_tokenizer, train_tokenizer
from nas.paths import work_dir
from nas.training.checkpoints import TrainingState, check_compatible, list_checkpoints, load_checkpoint, save_checkpoint
from nas.training.config import TrainConfig
from nas.training.data import TokenBatches, corpus_fingerprint, eval_windows, iter_documents, load_tokens, split_tokens
from nas.training.distributed import DistContext, data_parallel, setup_dist
from nas.training.memory import available_memory, check_memory, estimate_memory
from nas.training.optim import build_optimizer, lr_lambda
from nas.training.runlog import ArmWindow, JsonLog
from nas.training.sampling import ArmSampler, ErnieSampler, ernie_sampler
from nas.training.sandwich import ArmStats, SandwichLoss, autocast, sandwich_step

log = logging.getLogger(__name__)


# ================================================================ reports
@dataclass(frozen=True)
class StepReport:
    step: int
    total_steps: int
    tokens: int
    lr: float
    arms: dict[str, ArmStats]
    tokens_per_s: float
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class EvalReport:
    step: int
    val_loss: dict[str, float]


@dataclass(frozen=True)
class TrainResult:
    out: Path
    content_hash: str
    steps: int
    tokens: int
    wall_time_s: float
    train_flops: float
    val_loss: dict[str, float]
    resumed_from: str | None = None
    stopped_early: bool = False


# ============================================================ evaluation
@torch.no_grad()
def window_losses(
    model: Supernet, windows: Tensor, subnet: SubnetConfig | None = None, *, batch_size: int = 8, dtype: str = "auto"
) -> Tensor:
    """Mean next-token cross-entropy of ``subnet`` on each of ``windows`` (N, T + 1): (N,) in
    float64, for paired comparisons of two models on the same windows; under bf16 autocast for
    ``dtype="bf16"`` (``"auto"``: where the device computes bf16 natively)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start:start + batch_size].to(device)
        with autocast(device, dtype):
            logits = model(batch[:, :-1], subnet)
        loss = F.cross_entropy(logits.float().transpose(1, 2), batch[:, 1:], reduction="none")  # (B, T)
        out.append(loss.mean(dim=1).double().cpu())
    model.train(was_training)
    return torch.cat(out)


def evaluate_loss(
    model: Supernet, windows: Tensor, subnet: SubnetConfig | None = None, *, batch_size: int = 8, dtype: str = "auto"
) -> float:
    """Mean next-token cross-entropy of ``subnet`` over ``windows`` (N, T + 1): every window has
    T targets, so the token mean is the mean of :func:`window_losses`."""
    return float(window_losses(model, windows, subnet, batch_size=batch_size, dtype=dtype).mean())


def train_flops_per_token(config: SupernetConfig, subnet: SubnetConfig, seq_len: int) -> float:
    """Training FLOPs per token of one arm: 3 x the forward FLOPs (forward + backward),
    attention at the mean causal context ``seq_len / 2`` (see :mod:`evaluators.cost`)."""
    return 3.0 * cost_breakdown(config, subnet, context_len=max(1, seq_len // 2)).flops_per_token


# ============================================================ run set-up
def _tokenizer_cache_key(config: TrainConfig) -> str:
    tok = config.tokenizer
    raw = f"{corpus_fingerprint(config.data.spec())}|bpe|{tok.vocab_size}|{tok.min_frequency}|{tok.train_chars}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def _obtain_tokenizer(config: TrainConfig, run_dir: Path, resuming: bool) -> tuple[Any, str]:
    """The run's tokenizer (rank 0 only) and a description of where it came from."""
    saved = run_dir / "tokenizer"
    if resuming and saved.is_dir():
        return load_tokenizer(saved), f"resumed from {saved}"
    if config.init_from:
        tok = load_tokenizer(Path(config.init_from) / "tokenizer")
        source = f"imported with {config.init_from}"
    elif config.tokenizer.path:
        tok = load_tokenizer(config.tokenizer.path)
        source = config.tokenizer.path
    else:
        cache = work_dir() / "cache" / "tokenizers" / _tokenizer_cache_key(config)
        if cache.is_dir():
            tok = load_tokenizer(cache)
        else:
            docs: Iterator[str] = iter_documents(config.data.spec())
            if config.tokenizer.train_chars:
                docs = _capped(docs, config.tokenizer.train_chars)
            tok = train_tokenizer(docs, vocab_size=config.tokenizer.vocab_size, min_frequency=config.tokenizer.min_frequency)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            save_tokenizer(tok, tmp)
            try:
                tmp.rename(cache)  # atomic: concurrent runs never see a half-written cache entry
            except OSError:  # another run cached the same tokenizer first
                shutil.rmtree(tmp, ignore_errors=True)
        source = f"byte-level BPE ({len(tok)} tokens) trained on the corpus"
    save_tokenizer(tok, saved)
    return tok, source


def _capped(docs: Iterator[str], limit: int) -> Iterator[str]:
    for doc in docs:
        if limit <= 0:
            return
        yield doc[:limit]
        limit -= len(doc)


def _supernet_config(config: TrainConfig, vocab_size: int, tokenizer: Any) -> SupernetConfig:
    if config.init_from:
        path = Path(config.init_from) / "config.json"
        if not path.is_file():
            raise NasError(f"init_from {config.init_from} is not a supernet directory (no config.json); run `nas supernet import` first")
        return SupernetConfig.from_dict(json.loads(path.read_text()))
    m = config.model
    assert m is not None
    return SupernetConfig(
        vocab_size=vocab_size,
        d_model=m.d_model,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_kv_head=m.n_kv_head or m.n_head,
        d_ff=m.d_ff,
        head_dim=m.head_dim,
        max_seq_len=m.max_seq_len or max(config.seq_len, 256),
        rope_theta=m.rope_theta,
        norm_eps=m.norm_eps,
        tie_embeddings=m.tie_embeddings,
        n_expert=m.n_expert,
        top_k=m.top_k,
        moe_layers=tuple(m.moe_layers) if m.moe_layers is not None else None,
        shared_expert=m.shared_expert,
        bos_token_id=getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None,
        eos_token_id=getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None,
    )


def _search_space(config: TrainConfig, supernet: SupernetConfig, layer_rank: Sequence[int], loaded: SearchSpace | None) -> SearchSpace:
    if isinstance(config.space, str):
        return SearchSpace.from_yaml(config.space, supernet, layer_rank)
    if isinstance(config.space, dict):
        # keys given in the config override the imported supernet's space (else the default space)
        base = loaded.to_dict() if loaded is not None else {}
        return SearchSpace.from_dict({**base, **config.space}, supernet, layer_rank)
    return loaded or SearchSpace.default(supernet, layer_rank)


def train(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    fresh: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
    on_eval: Callable[[EvalReport], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train (or heal) a supernet and save it to ``config.out`` with its tokenizer and provenance.

    ``resume``: ``"latest"`` or a checkpoint path. Without it, an ``out`` that already has
    checkpoints is refused unless ``fresh`` (which deletes them). ``stop_after``: stop
    after that many steps without saving the supernet (as if the run were killed; the
    checkpoints written so far stay).
    """
    dist_info = setup_dist(config.device)
    if dist_info.device.type == "cpu":
        retain_freed_memory()  # activations and gradients of every step: reused, not page-faulted in anew
    try:
        return _Trainer(config, dist_info).run(resume=resume, fresh=fresh, on_step=on_step, on_eval=on_eval, stop_after=stop_after)
    finally:
        dist_info.close()


class _Trainer:
    def __init__(self, config: TrainConfig, d: DistContext) -> None:
        self.config = config
        self.d = d
        self.out = Path(config.out)
        self.run_dir = self.out / "train"

    # ------------------------------------------------------------- set-up
    def _checkpoint_to_resume(self, resume: str | Path | None, fresh: bool) -> Path | None:
        existing = list_checkpoints(self.out)
        if resume is None:
            if existing and not fresh:
                raise NasError(
                    f"{self.out} already has training checkpoints (latest {existing[-1].name}); "
                    "resume it (--resume) or start over (--fresh), or choose another --out"
                )
            if fresh and self.d.main and self.run_dir.exists():
                shutil.rmtree(self.run_dir)
            self.d.barrier()
            return None
        if str(resume) == "latest":
            if not existing:
                raise NasError(f"nothing to resume: {self.out} has no checkpoints in train/checkpoints")
            return existing[-1]
        path = Path(resume)
        if not path.is_file():
            raise NasError(f"checkpoint {path} does not exist")
        return path

    def run(
        self,
        *,
        resume: str | Path | None,
        fresh: bool,
        on_step: Callable[[StepReport], None] | None,
        on_eval: Callable[[EvalReport], None] | None,
        stop_after: int | None,
    ) -> TrainResult:
        cfg, d = self.config, self.d
        total_steps = cfg.total_steps()
        local_batch, remainder = divmod(cfg.batch_size, d.world)
        if remainder:
            raise NasError(f"batch_size {cfg.batch_size} is not divisible by the {d.world} processes; make it a multiple")
        micro = min(cfg.micro_batch_size or local_batch, local_batch)
        if local_batch % micro:
            raise NasError(f"micro_batch_size {micro} does not divide the per-process batch {local_batch}")
        ckpt_path = self._checkpoint_to_resume(resume, fresh)
        state = load_checkpoint(ckpt_path) if ckpt_path else None
        frozen = cfg.teacher == "frozen"

        # memory first: refuse before tokenising or allocating anything big
        pre_vocab = cfg.tokenizer.vocab_size
        if cfg.tokenizer.path and not cfg.init_from:
            pre_vocab = len(load_tokenizer(cfg.tokenizer.path))
        estimate = estimate_memory(
            _supernet_config(cfg, pre_vocab, None), micro_batch=micro, seq_len=cfg.seq_len, dtype=cfg.dtype, frozen_teacher=frozen
        )
        check_memory(estimate, available=available_memory(d.device), limit_gb=cfg.memory_limit_gb)
        log.info("memory estimate: %s", estimate.describe())

        # tokenizer and tokens: rank 0 builds the caches, the others read them
        if d.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tokenizer, tok_source = _obtain_tokenizer(cfg, self.run_dir, resuming=state is not None)
        d.barrier()
        if not d.main:
            tokenizer, tok_source = load_tokenizer(self.run_dir / "tokenizer"), "rank 0"

        cache_dir = work_dir() / "cache"
        if d.main:
            stream, corpus_key = load_tokens(cfg.data.spec(), tokenizer, cache_dir=cache_dir, eos=eos_id(tokenizer))
        d.barrier()
        if not d.main:
            stream, corpus_key = load_tokens(cfg.data.spec(), tokenizer, cache_dir=cache_dir, eos=eos_id(tokenizer))
        train_tokens, val_tokens = split_tokens(stream, val_fraction=cfg.data.val_fraction, seq_len=cfg.seq_len)
        batches = TokenBatches(train_tokens, cfg.seq_len, cfg.seed)
        val = eval_windows(val_tokens, cfg.seq_len, cfg.eval_tokens)

        # model, teacher, space
        net_config = _supernet_config(cfg, len(tokenizer), tokenizer)
        if len(tokenizer) > net_config.vocab_size:
            raise NasError(f"the tokenizer has {len(tokenizer)} tokens but the supernet's vocab_size is {net_config.vocab_size}")
        teacher: Supernet | None = None
        loaded_space: SearchSpace | None = None
        init_hash: str | None = None
        if cfg.init_from:
            loaded = load_supernet(cfg.init_from, dtype="fp32", device=d.device)
            model, loaded_space, init_hash = loaded.model, loaded.space, loaded.content_hash
            if frozen:
                teacher = model.extract(model.full_subnet())
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = Supernet(net_config)
            model = model.to(d.device)
            if frozen:
                teacher = model.extract(model.full_subnet())
        if teacher is not None:
            teacher.requires_grad_(False).eval()
            if cfg.dtype == "bf16":
                teacher = teacher.to(torch.bfloat16)
        model.train()
        space = _search_space(cfg, model.config, model.layer_rank, loaded_space)

        optimizer = build_optimizer(model, cfg.optim)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.optim, total_steps))
        rng = random.Random(cfg.seed)
        step, samples, tokens_seen, flops, elapsed = 0, 0, 0, 0.0, 0.0
        if state is not None:
            check_compatible(
                state, ckpt_path, model=model, space=space, tok_fp=fingerprint(tokenizer), corpus_key=corpus_key, config=cfg
            )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            version, internal, gauss = state["sample_rng"]
            rng.setstate((version, tuple(internal), gauss))
            step, samples, tokens_seen = state["step"], state["samples"], state["tokens"]
            flops, elapsed = state["train_flops"], state["elapsed_s"]
            if step > total_steps:
                raise NasError(f"checkpoint {ckpt_path} is at step {step}, beyond this run's {total_steps} steps; raise steps/tokens")
        sampler: ArmSampler | ErnieSampler = ArmSampler(
            space, n_random=cfg.sandwich.n_random, rng=rng, stages=cfg.sandwich.stages,
            total_steps=total_steps, train_largest=cfg.sandwich.train_largest,
            train_smallest=cfg.sandwich.train_smallest, arm_draw=cfg.sandwich.arm_draw,
        ) if cfg.schedule == "sandwich" else ernie_sampler(space, cfg.ernie, rng=rng)  # checked before any step
        # an undistilled ERNIE step learns the data alone, also as the reduced (second) arm of ernie.train_full
        # (with a frozen teacher every arm distils from it, by the sandwich's weights, as before)
        data_only_reduced = cfg.schedule == "ernie" and cfg.ernie.train_full and not cfg.ernie.distill and not frozen
        loss_cfg = SandwichLoss(
            temperature=cfg.sandwich.temperature, distill_weight=0.0 if data_only_reduced else cfg.sandwich.distill_weight,
            ce_weight=1.0 if data_only_reduced else cfg.sandwich.ce_weight, aux_loss_weight=cfg.sandwich.aux_loss_weight,
            frozen_teacher=frozen,
        )
        ramp_steps = cfg.sandwich.distill_ramp * total_steps

        def step_loss(step: int) -> SandwichLoss:
            r = 1.0 if ramp_steps <= 0 else min(1.0, step / ramp_steps)
            if r >= 1.0:
                return loss_cfg
            return dataclasses.replace(
                loss_cfg, distill_weight=r * loss_cfg.distill_weight, ce_weight=(1.0 - r) + r * loss_cfg.ce_weight
            )

        flops_cache: dict[SubnetConfig, float] = {}

        def arm_flops(sub: SubnetConfig) -> float:
            if sub not in flops_cache:
                flops_cache[sub] = train_flops_per_token(model.config, sub, cfg.seq_len)
            return flops_cache[sub]

        teacher_flops = arm_flops(model.full_subnet()) / 3.0 if frozen else 0.0
        # ERNIE with distillation: a reduced step first runs the full sub-network without gradient
        # (with train_full the step's full arm is the teacher, in place)
        teacher_subnet = space.largest() if cfg.schedule == "ernie" and cfg.ernie.distill and not cfg.ernie.train_full else None
        jlog = JsonLog(self.run_dir / "log.jsonl" if d.main else None)
        jlog.write(
            "start", step=step, total_steps=total_steps, world_size=d.world, resumed_from=ckpt_path,
            tokenizer=tok_source, train_tokens_available=int(train_tokens.size), val_tokens=int(val.numel()),
            params=model.num_params(), memory_estimate=estimate.describe(), space=space.to_dict(),
            config=cfg.model_dump(mode="json"),
        )
        if d.main and state is None:
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

        params = [p for p in model.parameters()]
        replicas = data_parallel(model, d)  # torch DDP on N > 1 processes, after the weights are loaded
        window = ArmWindow()
        recent: list[float] = []
        stopped = False
        val_loss: dict[str, float] = {}
        start_step = step
        while step < total_steps:
            if stop_after is not None and step - start_step >= stop_after:
                stopped = True
                break
            t0 = time.perf_counter()
            arms = sampler.arms(step)
            batch = batches.get(samples + d.rank * local_batch, local_batch).to(d.device)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            optimizer.zero_grad(set_to_none=True)
            stats: dict[str, ArmStats] = {}
            for m0 in range(0, local_batch, micro):
                part = sandwich_step(
                    model, inputs[m0:m0 + micro], targets[m0:m0 + micro], arms, step_loss(step),
                    teacher=teacher, dtype=cfg.dtype, scale=micro / local_batch,
                    replicas=replicas, sync=m0 + micro >= local_batch, teacher_subnet=teacher_subnet,
                )
                stats = part if not stats else {
                    k: ArmStats(
                        loss=stats[k].loss + part[k].loss, ce=stats[k].ce + part[k].ce,
                        kd=None if part[k].kd is None else (stats[k].kd or 0.0) + part[k].kd,
                        aux=None if part[k].aux is None else (stats[k].aux or 0.0) + part[k].aux,
                    ) for k in part
                }
            n_micro = local_batch // micro
            if n_micro > 1:
                stats = {k: ArmStats(s.loss / n_micro, s.ce / n_micro, None if s.kd is None else s.kd / n_micro,
                                     None if s.aux is None else s.aux / n_micro) for k, s in stats.items()}
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            samples += cfg.batch_size
            tokens_seen += cfg.tokens_per_step
            distilled = teacher_subnet is not None and arms[0].subnet != teacher_subnet
            flops += cfg.tokens_per_step * (sum(arm_flops(a.subnet) for a in arms) + teacher_flops
                                            + (arm_flops(teacher_subnet) / 3.0 if distilled else 0.0))
            dt = time.perf_counter() - t0
            elapsed += dt
            recent = (recent + [dt])[-20:]
            window.add(stats)
            if d.main and on_step is not None:
                per_step = sum(recent) / len(recent)
                on_step(StepReport(
                    step=step, total_steps=total_steps, tokens=tokens_seen, lr=lr, arms=stats,
                    tokens_per_s=cfg.tokens_per_step / per_step, elapsed_s=elapsed, eta_s=per_step * (total_steps - step),
                ))
            if step % cfg.log_every == 0 or step == total_steps:
                jlog.write("step", step=step, tokens=tokens_seen, lr=lr, arms=window.means(),
                           tokens_per_s=round(cfg.tokens_per_step * len(recent) / sum(recent), 1), elapsed_s=round(elapsed, 2))
            if d.main and cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                val_loss = self._evaluate(model, val, space)
                jlog.write("eval", step=step, tokens=tokens_seen, val_loss=val_loss)
                if on_eval is not None:
                    on_eval(EvalReport(step=step, val_loss=val_loss))
            if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == total_steps):
                path = None
                if d.main:
                    snapshot = TrainingState(
                        model=model, optimizer=optimizer, scheduler=scheduler, rng=rng, space=space, step=step,
                        samples=samples, tokens=tokens_seen, train_flops=flops, elapsed_s=elapsed,
                        tok_fp=fingerprint(tokenizer), corpus_key=corpus_key,
                    )
                    path = save_checkpoint(self.out, snapshot, config=cfg)
                d.barrier()  # no rank goes on (or resumes, after a stop) before the checkpoint exists
                jlog.write("checkpoint", step=step, path=path)

        if stopped:
            jlog.write("stopped", step=step)
            return TrainResult(out=self.out, content_hash="", steps=step, tokens=tokens_seen, wall_time_s=elapsed,
                               train_flops=flops, val_loss={}, resumed_from=None if ckpt_path is None else str(ckpt_path),
                               stopped_early=True)

        digest = ""
        if d.main:
            val_loss = self._evaluate(model, val, space)
            jlog.write("eval", step=step, tokens=tokens_seen, val_loss=val_loss)
            if on_eval is not None:
                on_eval(EvalReport(step=step, val_loss=val_loss))

            provenance = {
                "source": "nas train",
                "init_from": None if cfg.init_from is None else {"path": cfg.init_from, "content_hash": init_hash},
                "teacher": cfg.teacher,
                "train_tokens": tokens_seen,
                "train_steps": step,
                "train_flops": flops,
                "wall_time_s": round(elapsed, 2),
                "world_size": d.world,
                "tokenizer": tok_source,
                "corpus": {"sources": cfg.data.corpus, "cache_key": corpus_key, "train_tokens_available": int(train_tokens.size)},
                "val_loss": val_loss,
                "config": cfg.model_dump(mode="json"),
            }
            digest = save_supernet(model, self.out, space=space, tokenizer=tokenizer, provenance=provenance)
            jlog.write("end", step=step, tokens=tokens_seen, wall_time_s=round(elapsed, 2), train_flops=flops, content_hash=digest)
        d.barrier()
        return TrainResult(
            out=self.out, content_hash=digest, steps=step, tokens=tokens_seen, wall_time_s=elapsed, train_flops=flops,
            val_loss=val_loss, resumed_from=None if ckpt_path is None else str(ckpt_path),
        )

    # ------------------------------------------------------------ helpers
    def _evaluate(self, model: Supernet, val: Tensor, space: SearchSpace) -> dict[str, float]:
        largest, smallest = space.largest(), space.smallest()
        out = {"largest": round(evaluate_loss(model, val, largest, dtype=self.config.dtype), 5)}
        if smallest != largest:
            out["smallest"] = round(evaluate_loss(model, val, smallest, dtype=self.config.dtype), 5)
        return out


__all__ = ["EvalReport", "StepReport", "TrainResult", "evaluate_loss", "train", "train_flops_per_token"]
