"""Which sub-networks each training step trains: the sandwich's arms.

Every step trains the largest sub-network, the smallest (if different; unless
``train_smallest`` is false) and ``n_random`` random ones, drawn from a checkpointed ``random.Random``.
How a random arm is drawn (``sandwich.arm_draw``): ``uniform`` picks every elastic dim
(``n_layer``, each layer's ``d_ff``, ...) independently and uniformly, so with per-layer
choices the sizes of the draws pile up at the middle of the space's range (a sum of many
independent picks) and the small, homogeneous sub-networks are almost never trained but as
the smallest arm. ``spread`` first draws one size level ``u ~ U(0, 1)`` per arm and then
each dim's choice index from Binomial(choices - 1, u): every dim's marginal is still
uniform over its choices (a Beta(1, 1)-binomial), but the dims move together, so the draws
spread over the whole range of sizes (AttentiveNAS, arXiv 2011.09011, makes the same
observation and samples by a FLOPs target). Healing SmolLM2 over the demo's space for 133k
tokens, ``spread`` changed nothing measurable against ``uniform`` (README, "Heal a supernet"):
the shared weights carry a step's gain to sub-networks near no draw. Optional progressive shrinking
enables the elastic dimensions in stages (``sandwich.stages``), as OFA does: until a
stage's ``until`` fraction of the steps, only its dims vary and the others stay at their
largest choice. MoE supernets also sample ``n_expert``/``top_k``.

``schedule: ernie`` replaces the sandwich with :class:`ErnieSampler`, ERNIE 5's elastic
training (arXiv 2602.04705 §3.3): each step trains one sub-network on the data, whose
depth, experts kept and top-k are drawn independently — each its full value with a
configured probability, else one of its smaller choices uniformly. "Routing restricted
to a subset of experts" is our ``n_expert`` prefix of the importance-ordered experts:
:meth:`nas.model.layers.MixtureOfExperts.route` takes its softmax (and top-k
renormalisation) over the kept experts only and the load-balancing loss counts only
them, exactly as when that sub-network is scored. Other elastic dims stay at their
largest choice. ``ernie.train_full`` adds the full sub-network to every reduced step, first
(the sandwich's largest arm on ERNIE's draws).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from nas.errors import NasError
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.training.config import ERNIE_AXES, ERNIE_DEFAULTS, ErnieConfig, StageConfig
from nas.training.sandwich import Arm

ELASTIC_DIMS = ("n_layer", "d_model", "n_head", "d_ff", "n_expert", "top_k")


ARM_DRAWS = ("uniform", "spread")


def level_pick(rng: random.Random) -> Callable[[tuple[int, ...]], int]:
    """``spread``'s chooser: one size level ``u`` drawn now, then for each dim's (ascending)
    choices the one at index Binomial(len - 1, u) (``len - 1`` draws from ``rng`` per dim)."""
    level = rng.random()

    def pick(choices: tuple[int, ...]) -> int:
        return sorted(choices)[sum(rng.random() < level for _ in range(len(choices) - 1))]
    return pick


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
        train_smallest: bool = True,
        arm_draw: str = "uniform",
    ) -> None:
        if arm_draw not in ARM_DRAWS:
            raise NasError(f"sandwich.arm_draw {arm_draw!r} is not one of {', '.join(ARM_DRAWS)}")
        self.space = space
        self.n_random = n_random if space.size() > 1 else 0
        self.rng = rng
        self.stages = list(stages)
        self.total_steps = total_steps
        self.train_largest = train_largest
        self.train_smallest = train_smallest
        self.arm_draw = arm_draw
        self.largest = space.largest()

    def draw(self, elastic: Sequence[str]) -> SubnetConfig:
        """One random arm: its elastic dims drawn by ``arm_draw``, the others at their largest."""
        pick = self.rng.choice if self.arm_draw == "uniform" else level_pick(self.rng)
        return restrict(self.space, pick, elastic)  # uniform with every dim elastic: SearchSpace.sample's draws

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
        if self.train_smallest and smallest != self.largest:
            out.append(Arm("smallest", smallest))
        for i in range(self.n_random):
            sub = self.draw(elastic)
            if sub != self.largest:  # a copy of the teacher would learn nothing (KL to itself is 0)
                out.append(Arm(f"random{i}", sub))
        return out


def ernie_choices(space: SearchSpace) -> dict[str, tuple[int, ...]]:
    """Each ERNIE axis's choices in ``space`` (ascending; one value: not elastic). The MoE
    layers must share their ``n_expert``/``top_k`` choices (one draw serves them all)."""
    out = {"n_layer": space.n_layer_choices}
    moe = [c for i, c in enumerate(space.layers) if space.config.layer(i).n_expert]
    for dim in ("n_expert", "top_k"):
        values = {getattr(c, dim) for c in moe}
        if len(values) > 1:
            raise NasError(f"ernie schedule: the MoE layers have different {dim}_choices {sorted(values)}; "
                           f"give one {dim}_choices for every layer")
        if values:
            out[dim] = tuple(sorted(values.pop()))
    return out


class ErnieSampler:
    """ERNIE 5's schedule: one sub-network per step, each axis full with probability
    ``probabilities[axis]``, else a smaller choice, drawn from ``rng`` (checkpointed).
    Build it with :func:`ernie_sampler`, which checks the schedule against the space."""

    def __init__(self, space: SearchSpace, probabilities: Mapping[str, float], *, rng: random.Random,
                 train_full: bool = False) -> None:
        self.space = space
        self.rng = rng
        self.train_full = train_full
        self.choices = ernie_choices(space)
        self.probabilities = {axis: float(probabilities[axis]) for axis in ERNIE_AXES if axis in probabilities}
        self.largest = space.largest()

    def draw(self) -> dict[str, int]:
        """One step's value per axis (axes in a fixed order, so a seed fixes the sequence)."""
        out = {}
        for axis, p in self.probabilities.items():
            choices = self.choices[axis]
            out[axis] = choices[-1] if self.rng.random() < p else self.rng.choice(choices[:-1])
        return out

    def subnet(self, draw: Mapping[str, int]) -> SubnetConfig:
        """The sub-network of a draw: its axes as drawn, every other dim at its largest choice."""
        params = {}
        for name, choices in self.space.param_choices().items():
            params[name] = draw.get(name.rpartition(".")[2], max(choices))
        return self.space.from_params(params)

    def arms(self, step: int) -> list[Arm]:
        """The step's draw; with ``train_full`` a reduced draw comes after the full sub-network
        (the same draws either way, so the two runs differ only by the full arm)."""
        sub = self.subnet(self.draw())
        if sub == self.largest:
            return [Arm("largest", sub)]
        return [Arm("largest", self.largest), Arm("reduced", sub)] if self.train_full else [Arm("reduced", sub)]


def ernie_sampler(space: SearchSpace, config: ErnieConfig, *, rng: random.Random) -> ErnieSampler:
    """The ERNIE sampler for ``space``, or one clear :class:`NasError` for a schedule the space
    cannot run: an axis given a probability that the space does not vary, no elastic axis
    at all, or a top-k choice above an expert choice (the axes are drawn independently, so
    every top-k must be runnable with every number of experts kept)."""
    choices = ernie_choices(space)
    elastic = [axis for axis in ERNIE_AXES if len(choices.get(axis, ())) > 1]
    given = config.given()
    for axis in given:
        if axis not in elastic:
            have = list(choices[axis]) if axis in choices else "none (a dense supernet)"
            raise NasError(
                f"ernie.{axis}: the search space is not elastic in {axis} (its {axis}_choices: {have}); "
                f"remove ernie.{axis} or give the space smaller {axis}_choices"
            )
    if not elastic:
        raise NasError("schedule: ernie needs a search space elastic in n_layer, n_expert or top_k; "
                       "give it n_layer_choices (or, for a MoE supernet, n_expert_choices/top_k_choices)")
    if "n_expert" in choices and max(choices["top_k"]) > min(choices["n_expert"]):
        raise NasError(
            f"ernie schedule: top_k_choices {list(choices['top_k'])} go above n_expert_choices "
            f"{list(choices['n_expert'])}; every top-k must fit the fewest experts kept "
            f"({min(choices['n_expert'])}): drop the larger top-k choices or the smaller expert choices"
        )
    probabilities = {axis: given.get(axis, ERNIE_DEFAULTS[axis]) for axis in elastic}
    return ErnieSampler(space, probabilities, rng=rng, train_full=config.train_full)


__all__ = ["ELASTIC_DIMS", "ArmSampler", "ErnieSampler", "ernie_choices", "ernie_sampler", "restrict"]
