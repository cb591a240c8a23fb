"""Optuna's view of a search space: distributions and the parameters of one trial.

Parameter names are the space's stable names (``n_layer``, ``d_model``, ``layer_3.d_ff``
...; see :meth:`nas.model.space.SearchSpace.param_choices`), asked in a fixed order so
that the same sampler seed gives the same trials.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig


def param_distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Optuna distributions of the space's parameters.

    Evenly spaced integer choices (d_ff in quarters, heads in whole KV groups, depths,
    expert counts: nearly every dimension) become ``IntDistribution(low, high, step)`` so
    that model-based samplers (TPE, GP) and QMC see their order; anything else stays
    categorical. Every value is one of the space's choices either way.
    """
    out: dict[str, BaseDistribution] = {}
    for name, choices in space.param_choices().items():
        values = sorted(choices)
        steps = {b - a for a, b in zip(values, values[1:])}
        if len(steps) == 1:
            out[name] = IntDistribution(values[0], values[-1], step=steps.pop())
        else:
            out[name] = CategoricalDistribution(values)
    return out


def suggest_subnet(space: SearchSpace, trial: Any) -> SubnetConfig:
    """Ask an Optuna trial for one sub-network of ``space`` (parameters in a fixed order).

    Every parameter of the space is asked in every trial, the per-layer sizes of layers
    that the depth then drops included: depth decides which of them are used. A
    conditional space (a layer's sizes asked only when it is kept) breaks Optuna's samplers
    once several workers share a study: NSGA-II's crossover picks a parent that lacks a
    parameter its search space holds (``KeyError: 'layer_2.d_ff'``), because the search
    space was computed while that shallow parent was still running. With one fixed set of
    parameters every sampler (nsga2, nsga3, tpe, gp, random, qmc and the grid plan) sees
    the same space in every trial.
    """
    dists = param_distributions(space)
    order = [name for name in ("n_layer", "d_model") if name in dists] + [n for n in dists if n not in ("n_layer", "d_model")]
    return space.from_params({name: int(_suggest(trial, name, dists[name])) for name in order})


def _suggest(trial: Any, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step)
    return trial.suggest_categorical(name, list(dist.choices))


__all__ = ["param_distributions", "suggest_subnet"]
