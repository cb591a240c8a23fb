"""Synthetic finished studies written straight into storage (for tests, benchmarks, demos).

The rows look like a real study's: a supernet row, one sub-network per trial sampled from
a search space, task metrics with stderr at one or two fidelities (bigger sub-networks
score better, plus seeded noise), analytic costs, infeasible trials that violate a
parameter budget (never scored), and a study spec with objectives, tasks and a fidelity
ladder. No model is run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.search.spec import parse_spec
from storage import Database, create_study, set_study_status, upsert_supernet
from storage.records import CostRecord, EvaluationRecord, SubnetRecord, TrialRecord

LOW_FIDELITY = "n50-s0"
HARNESS_VERSION = "synthetic-0"


def analytic_params(config: SupernetConfig, subnet: SubnetConfig) -> int:
    """Parameters kept by ``subnet``: the cost model's count (same as ``Supernet.num_params``)."""
    from evaluators.cost import cost_breakdown

    return cost_breakdown(config, subnet).params


@dataclass(frozen=True)
class SyntheticStudy:
    name: str
    supernet_hash: str
    n_trials: int
    spec: dict


def write_synthetic_study(
    db: Database,
    *,
    name: str,
    config: SupernetConfig,
    space: SearchSpace | None = None,
    n_trials: int = 40,
    seed: int = 0,
    supernet_hash: str = "synthetic0000000",
    supernet_path: str = "",
    tasks: Sequence[str] = ("hellaswag", "arc_easy"),
    max_params: float | None = None,
    low_fidelity_fraction: float = 0.3,
    status: str = "finished",
    quality_shift: float = 0.0,
) -> SyntheticStudy:
    """Write a finished study of ``n_trials`` synthetic trials into ``db``.

    ``max_params``: trials above it are infeasible (constraint ``params <= max_params`` in
    the spec, never scored); default: the 80th percentile of the sampled sizes.
    ``low_fidelity_fraction`` of the feasible trials are scored at ``n50-s0`` only; the
    rest at ``n50-s0`` and ``full``. ``quality_shift`` adds to every score (e.g. to fake a
    healed supernet).
    """
    rng = random.Random(seed)
    space = space or SearchSpace.default(config)
    subnets = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(max(0, n_trials - 2))]
    subnets = subnets[:n_trials]
    params = [analytic_params(config, s) for s in subnets]
    if max_params is None:
        ordered = sorted(params)
        max_params = float(ordered[min(len(ordered) - 1, int(0.8 * len(ordered)))])
    lo, hi = math.log(min(params)), math.log(max(params))
    spec = parse_spec(
        {
            "name": name,
            "supernet": supernet_path or f"synthetic/{supernet_hash}",
            "tasks": list(tasks),
            "objectives": ["accuracy", "params"],
            "constraints": [{"metric": "params", "max": max_params}],
            "fidelities": [50, "full"],
            "budget": {"n_trials": n_trials},
            "sampler": "random",
            "seed": seed,
            "confirmation": None,  # synthetic rows sit at n50-s0 and full: nothing is held out
        },
        source="synthetic study spec",
    ).to_dict()
    supernet_id = upsert_supernet(
        db,
        content_hash=supernet_hash,
        name=f"synthetic-{supernet_hash[:6]}",
        path=supernet_path,
        config=config.to_dict(),
        space=space.to_dict(),
        provenance={"kind": "synthetic"},
    )
    study_id = create_study(db, name=name, optuna_study_name=name, spec=spec, supernet_id=supernet_id)
    task_base = {task: 0.25 + 0.05 * i for i, task in enumerate(tasks)}
    with db.session_scope() as session:
        subnet_ids: dict[str, int] = {}
        for number, (subnet, n_params) in enumerate(zip(subnets, params)):
            key = subnet.hash
            if key not in subnet_ids:
                existing = session.query(SubnetRecord).filter_by(supernet_id=supernet_id, config_hash=key).one_or_none()
                if existing is None:
                    rec = SubnetRecord(
                        supernet_id=supernet_id,
                        config_json=subnet.to_json(),
                        config_hash=key,
                        n_layer=subnet.n_layer,
                        params=n_params,
                    )
                    session.add(rec)
                    session.flush()
                    subnet_ids[key] = rec.id
                    _add_costs(session, rec.id, config, subnet, n_params)
                    feasible = n_params <= max_params
                    if feasible:
                        size = (math.log(n_params) - lo) / (hi - lo) if hi > lo else 1.0
                        fidelities = [LOW_FIDELITY] if rng.random() < low_fidelity_fraction else [LOW_FIDELITY, "full"]
                        for fid in fidelities:
                            n_ex = 50 if fid == LOW_FIDELITY else 500
                            for task, base in task_base.items():
                                acc = base + 0.35 * size ** 0.7 + quality_shift + rng.gauss(0, 0.01 if fid == "full" else 0.03)
                                acc = min(max(acc, 0.0), 1.0)
                                for metric, value in (("acc", acc), ("acc_norm", min(acc + 0.02, 1.0))):
                                    session.add(
                                        EvaluationRecord(
                                            subnet_id=rec.id,
                                            task=task,
                                            metric=metric,
                                            value=value,
                                            stderr=math.sqrt(max(value * (1 - value), 1e-6) / n_ex),
                                            n_examples=n_ex,
                                            fidelity=fid,
                                            harness_version=HARNESS_VERSION,
                                            task_hash=f"{task}-hash",
                                            wall_s=0.01,
                                        )
                                    )
                    subnet_ids[key] = rec.id
                else:
                    subnet_ids[key] = existing.id
            feasible = n_params <= max_params
            reached = None
            if feasible:
                evaluated = {
                    e.fidelity
                    for e in session.query(EvaluationRecord.fidelity).filter_by(subnet_id=subnet_ids[key])
                }
                reached = "full" if "full" in evaluated else (LOW_FIDELITY if evaluated else None)
            session.add(
                TrialRecord(
                    study_id=study_id,
                    trial_number=number,
                    subnet_id=subnet_ids[key],
                    fidelity=reached,
                    feasible=feasible,
                    state="COMPLETE",
                )
            )
    set_study_status(db, name, status)
    return SyntheticStudy(name=name, supernet_hash=supernet_hash, n_trials=n_trials, spec=spec)


def _add_costs(session, subnet_id: int, config: SupernetConfig, subnet: SubnetConfig, n_params: int) -> None:  # noqa: ANN001
    embedding = config.vocab_size * subnet.d_model * (1 if config.tie_embeddings else 2)
    values = {
        ("params", "analytic"): float(n_params),
        ("non_embedding_params", "analytic"): float(n_params - embedding),
        ("flops_per_token", "analytic"): float(2 * (n_params - embedding + config.vocab_size * subnet.d_model)),
        ("prefill_latency_ms", "predicted"): 1.0 + n_params / 2e6,
    }
    for (metric, method), value in values.items():
        session.add(CostRecord(subnet_id=subnet_id, device="synthetic-cpu", metric=metric, value=value, method=method))


__all__ = ["HARNESS_VERSION", "LOW_FIDELITY", "SyntheticStudy", "analytic_params", "write_synthetic_study"]
