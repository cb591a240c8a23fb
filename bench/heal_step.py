"""Heal step: the students' losses fused into one pass over their logits (this tree) vs a
log-softmax and the losses from it (before).

A heal step (:func:`nas.training.sandwich.sandwich_step` with a frozen teacher) runs every
arm's forward and backward; each student's loss reads its (N, V) logits. Unfused, that is a
log-softmax in fp32, the KL's product with the teacher's probabilities, the cross-entropy,
and the backward of each: several passes over N x V floats, which on SmolLM2 (a 49,152-token
vocabulary against 576 channels) cost as much as a good part of the model's matmuls. Fused
(:func:`nas.training.sandwich.student_objective`), the log-sum-exp, both losses and the
gradient come out of one loop per row, compiled by TorchInductor where it builds.

This script runs the step ``nas heal`` runs on a CPU (its defaults: 4 x 256 tokens, bf16
autocast where native, the largest, the smallest and one random sub-network of the
supernet's own space, the frozen full model as teacher) on SmolLM2, on consecutive windows of
the heal's default corpus (``NAS_DATA_DIR``'s Gutenberg text), alternating the two on the
same batches and arms (which goes first alternates too), and prints one JSON object: seconds per step (median of
``--repeats``), ``speedup``, tokens per second, and how far the two are apart:
``kd_max_abs_diff`` over the arms' KL losses (``kd_last``: the last step's, unfused and
fused); ``grad_rel_norm_diff``, ||fused - unfused|| / ||unfused|| over all the parameters'
gradients together, and ``grad_max_rel_norm_diff``, the largest such ratio of one parameter
(both round the logits' gradient to bf16, each its own way), beside
``grad_rel_norm_diff_{unfused,fused}_vs_fp32``: each against the same step in fp32 (no
autocast, an fp32 teacher) over the arms other than the largest (in fp32 the largest is its
teacher exactly and has no gradient; in bf16 its gradient is the two precisions' mismatch),
the size of bf16's own effect on the gradients.

    .venv/bin/python bench/heal_step.py [--supernet work/smollm2] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from nas.model.directory import load_supernet  # noqa: E402
from nas.model.fused import probe  # noqa: E402
from nas.model.space import SearchSpace  # noqa: E402
from nas.model.tokenizer import eos_id  # noqa: E402
from nas.paths import work_dir  # noqa: E402
from nas.training.data import CorpusSpec, iter_documents, tokenize_documents  # noqa: E402
from nas.training.heal import heal_settings  # noqa: E402
from nas.training.sandwich import Arm, SandwichLoss, sandwich_step  # noqa: E402


def _global_rel(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """||grads - reference|| / ||reference|| over all parameters together."""
    num = sum(float((grads[n] - reference[n]).double().pow(2).sum()) for n in reference)
    den = sum(float(reference[n].double().pow(2).sum()) for n in reference)
    return (num / den) ** 0.5 if den else 0.0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supernet", default=str(work_dir() / "smollm2"), help="an imported supernet (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per side (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    settings = heal_settings("cpu")
    loaded = load_supernet(args.supernet, dtype="fp32")
    model = loaded.model.train()
    teacher = model.extract(model.full_subnet()).requires_grad_(False).eval()
    if settings.dtype == "bf16":
        teacher = teacher.to(torch.bfloat16)  # as the trainer keeps it
    space = loaded.space or SearchSpace.default(model.config)
    rng = random.Random(0)
    arms = [Arm("largest", space.largest()), Arm("smallest", space.smallest())]
    arms += [Arm(f"random{i}", space.sample(rng)) for i in range(settings.n_random)]
    # real text, as a heal reads it (random token ids make activations, and bf16's errors, unlike text's)
    tokenizer = loaded.load_tokenizer()
    spec = CorpusSpec(settings.corpus, text_field=settings.text_field, max_chars=400_000)
    ids = tokenize_documents(iter_documents(spec), tokenizer, eos_id(tokenizer))
    window = settings.seq_len + 1
    need = (args.repeats + 1) * settings.batch_size
    if len(ids) < need * window:
        raise SystemExit(f"heal_step: the corpus {settings.corpus} gave {len(ids)} tokens, fewer than {need * window}")
    rows = torch.from_numpy(ids[: need * window].astype("int64")).view(need, window)
    batches = list(rows.split(settings.batch_size))

    def step(fused: bool, tokens: torch.Tensor, dtype: str = settings.dtype, teacher: torch.nn.Module = teacher,
             arms: list[Arm] = arms) -> tuple[float, dict[str, float], dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = SandwichLoss(temperature=settings.temperature, frozen_teacher=True, fused=fused)
        start = time.perf_counter()
        stats = sandwich_step(model, tokens[:, :-1], tokens[:, 1:], arms, loss, teacher=teacher, dtype=dtype)
        seconds = time.perf_counter() - start
        return seconds, {a: float(s.kd or 0.0) for a, s in stats.items()}, {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    times: dict[str, list[float]] = {"unfused": [], "fused": []}
    kd_diff = grad_diff = global_diff = 0.0
    kd_seen: dict[str, tuple[float, float]] = {}
    for i, tokens in enumerate(batches):  # the first batch warms both up (and compiles the fused kernel)
        order = ("unfused", "fused") if i % 2 else ("fused", "unfused")  # neither side always in the first slot
        out = {side: step(side == "fused", tokens) for side in order}
        if i:
            for side in times:
                times[side].append(out[side][0])
        (_, kd_a, grad_a), (_, kd_b, grad_b) = out["unfused"], out["fused"]
        kd_diff = max([kd_diff] + [abs(kd_a[a] - kd_b[a]) for a in kd_a])
        global_diff = max(global_diff, _global_rel(grad_b, grad_a))
        grad_diff = max([grad_diff] + [float((grad_a[n] - grad_b[n]).norm() / grad_a[n].norm().clamp_min(1e-30))
                                       for n in grad_a])
        kd_seen = {a: (kd_a[a], kd_b[a]) for a in kd_a}
    # the scale of those differences: both against the unfused step without autocast (fp32), same batch
    noise: dict[str, float] = {}
    if settings.dtype == "bf16":
        exact = model.extract(model.full_subnet()).requires_grad_(False).eval()  # an fp32 teacher for the fp32 step
        # the smaller arms only: in fp32 the largest is its teacher exactly, with no gradient at all
        students = arms[1:]
        reference = step(False, batches[-1], "fp32", exact, students)[2]
        del exact
        for side in ("unfused", "fused"):
            grads = step(side == "fused", batches[-1], arms=students)[2]
            noise[f"grad_rel_norm_diff_{side}_vs_fp32"] = _global_rel(grads, reference)
    before, after = statistics.median(times["unfused"]), statistics.median(times["fused"])
    tokens_per_step = settings.batch_size * settings.seq_len
    report = {
        "supernet": loaded.content_hash, "threads": args.threads, "repeats": args.repeats, "dtype": settings.dtype,
        "batch": [settings.batch_size, settings.seq_len], "arms": [a.subnet.summary() for a in arms],
        "vocab": model.config.vocab_size, "compiled": probe()[0],
        "unfused_s": round(before, 3), "fused_s": round(after, 3), "speedup": round(before / after, 3),
        "unfused_steps_s": [round(t, 3) for t in times["unfused"]], "fused_steps_s": [round(t, 3) for t in times["fused"]],
        "tokens_per_s_unfused": round(tokens_per_step / before, 1), "tokens_per_s_fused": round(tokens_per_step / after, 1),
        "kd_last": {a: [round(x, 5) for x in v] for a, v in kd_seen.items()},
        "kd_max_abs_diff": kd_diff, "grad_rel_norm_diff": global_diff, "grad_max_rel_norm_diff": grad_diff, **noise,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
