"""Which sub-networks each training step trains: the sandwich's arms.

Every step trains the largest sub-network, the smallest (if different) and ``n_random``
random ones, drawn from a checkpointed ``random.Random``. Optional progressive shrinking
enables the elastic dimensions in stages (``sandwich.stages``), as OFA does: until a
stage's ``until`` fraction of the steps, only its dims vary and the others stay at their
largest choice. MoE supernets also sample ``n_expert``/``top_k``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.training.config import StageConfig
from nas.training.sandwich import Arm

ELASTIC_DIMS = ("n_layer", "d_model", "n_head", "d_ff", "n_expert", "top_k")


def restrict(space: SearchSpace, pick: Callable[[tuple[int, ...]], int], elastic: Sequence[str]) -> SubnetConfig:
    """The sub-network whose elastic dims take ``pick(choices)`` and whose other dims take
    their largest choice (a progressive-shrinking stage)."""
    params = {}
    for name, choices in space.param_choices().items():
        params[name] = pick(choices) if name.rpartition(".")[2] in elastic else max(choices)
    return space.from_params(params)


class ArmSampler:
    """The sandwich: largest, smallest (if different) and ``n_random`` random sub-networks
    per step, drawn from ``rng`` (a ``random.Random`` whose state is checkpointed)."""
    def __init__(
        self,
        space: SearchSpace,
        *,
        n_random: int,
        rng: random.Random,
        stages: Sequence[StageConfig] = (),
        total_steps: int = 1,
        train_largest: bool = True,
    ) -> None:
        self.space = space
        self.n_random = n_random if space.size() > 1 else 0
        self.rng = rng
        self.stages = list(stages)
        self.total_steps = total_steps
        self.train_largest = train_largest
        self.largest = space.largest()

    def elastic(self, step: int) -> tuple[str, ...]:
        for stage in self.stages:
            if step < stage.until * self.total_steps:
                return tuple(stage.elastic)
        return ELASTIC_DIMS

    def arms(self, step: int) -> list[Arm]:
        elastic = self.elastic(step)
        full = elastic == ELASTIC_DIMS
        smallest = self.space.smallest() if full else restrict(self.space, min, elastic)
        out = [Arm("largest", self.largest)] if self.train_largest else []
        if smallest != self.largest:
            out.append(Arm("smallest", smallest))
        for i in range(self.n_random):
            sub = self.space.sample(self.rng) if full else restrict(self.space, self.rng.choice, elastic)
            if sub != self.largest:  # a copy of the teacher would learn nothing (KL to itself is 0)
                out.append(Arm(f"random{i}", sub))
        return out


__all__ = ["ELASTIC_DIMS", "ArmSampler", "restrict"]
