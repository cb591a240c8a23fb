"""Search spaces over a supernet: which sub-networks a study may visit.

A :class:`SearchSpace` says which values of every elastic dimension are allowed. Depth
is chosen by *rank*: keeping ``n`` layers keeps the ``n`` most important layers (the
supernet's ``layer_rank``) in their original order. Per-layer choices are named
``layer_<i>.<dim>`` after the supernet layer index ``i``, so Optuna parameter names
stay stable whatever the depth.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.subnet import SubnetConfig

_PER_LAYER_DIMS = ("n_head", "d_ff", "n_expert", "top_k")


@dataclass(frozen=True)
class LayerChoices:
    """Allowed values for one supernet layer."""

    n_head: tuple[int, ...]
    d_ff: tuple[int, ...]
    n_expert: tuple[int, ...] = (0,)
    top_k: tuple[int, ...] = (0,)


class SearchSpace:
    """The sub-networks a study may visit.

    Built from a supernet config, its ``layer_rank`` (layer indices, most important
    first) and per-dimension ``*_choices``. ``tied=True`` makes one choice per
    dimension shared by every layer (homogeneous sub-networks).
    """

    def __init__(
        self,
        config: SupernetConfig,
        *,
        layer_rank: Sequence[int],
        n_layer_choices: Sequence[int],
        layers: Sequence[LayerChoices],
        d_model_choices: Sequence[int] | None = None,
        tied: bool = False,
    ) -> None:
        self.config = config
        self.layer_rank = tuple(int(i) for i in layer_rank)
        self.n_layer_choices = tuple(sorted({int(n) for n in n_layer_choices}))
        self.layers = tuple(layers)
        self.d_model_choices = tuple(sorted({int(d) for d in (d_model_choices or [config.d_model])}))
        self.tied = bool(tied)
        self._validate()

    # ------------------------------------------------------------- validation
    def _validate(self) -> None:
        cfg = self.config
        if sorted(self.layer_rank) != list(range(cfg.n_layer)):
            raise NasError(
                f"search space: layer_rank must be a permutation of 0..{cfg.n_layer - 1}, got {list(self.layer_rank)}"
            )
        if len(self.layers) != cfg.n_layer:
            raise NasError(f"search space: {len(self.layers)} layer entries for a {cfg.n_layer}-layer supernet")
        bad = [n for n in self.n_layer_choices if not 1 <= n <= cfg.n_layer]
        if bad or not self.n_layer_choices:
            raise NasError(
                f"search space: n_layer_choices {list(self.n_layer_choices)} must be non-empty and within 1..{cfg.n_layer}"
            )
        bad = [d for d in self.d_model_choices if not 1 <= d <= cfg.d_model]
        if bad:
            raise NasError(f"search space: d_model_choices {bad} must be within 1..{cfg.d_model}")
        q = cfg.q_per_kv
        for i, choices in enumerate(self.layers):
            full = cfg.layer(i)
            allowed_heads = list(range(q, full.n_head + 1, q))
            for name, values, ok, allowed in (
                ("n_head", choices.n_head, lambda h: h in allowed_heads, f"multiples of {q} up to {full.n_head}: {allowed_heads}"),
                ("d_ff", choices.d_ff, lambda f: 1 <= f <= full.d_ff, f"1..{full.d_ff}"),
            ):
                wrong = [v for v in values if not ok(v)]
                if wrong or not values:
                    raise NasError(
                        f"search space: layer {i} {name}_choices {list(values)} has illegal value(s) {wrong}; allowed: {allowed}"
                    )
            if full.n_expert:
                wrong = [e for e in choices.n_expert if not 1 <= e <= full.n_expert]
                if wrong or not choices.n_expert:
                    raise NasError(
                        f"search space: layer {i} n_expert_choices {list(choices.n_expert)} must be within 1..{full.n_expert}"
                    )
                wrong = [k for k in choices.top_k if not 1 <= k <= full.n_expert]
                if wrong or not choices.top_k:
                    raise NasError(
                        f"search space: layer {i} top_k_choices {list(choices.top_k)} must be within 1..{full.n_expert}"
                    )
            elif choices.n_expert != (0,) or choices.top_k != (0,):
                raise NasError(
                    f"search space: layer {i} is dense in the supernet; remove n_expert/top_k choices for it"
                )
        if self.tied and len(set(self.layers)) != 1:
            raise NasError("search space: tied=true needs the same choices for every layer")

    # ------------------------------------------------------------ constructors
    @classmethod
    def default(cls, config: SupernetConfig, layer_rank: Sequence[int] | None = None) -> SearchSpace:
        """A sensible space for any supernet: d_ff in quarters, heads in whole KV groups,
        depth from n_layer/2 to n_layer, experts in halves and top_k up to the full model's."""
        rank = tuple(layer_rank) if layer_rank is not None else tuple(range(config.n_layer))
        lo = max(1, math.ceil(config.n_layer / 2))
        steps = min(6, config.n_layer - lo + 1)
        depth = sorted({round(lo + (config.n_layer - lo) * s / max(1, steps - 1)) for s in range(steps)})
        layers = []
        for i in range(config.n_layer):
            full = config.layer(i)
            heads = tuple(range(config.q_per_kv, full.n_head + 1, config.q_per_kv))
            d_ff = tuple(sorted({max(1, full.d_ff * k // 4) for k in range(1, 5)}))
            if full.n_expert:
                experts = tuple(sorted({max(1, full.n_expert * k // 4) for k in (2, 3, 4)}))
                top_k = tuple(range(1, full.top_k + 1))
                layers.append(LayerChoices(heads, d_ff, experts, top_k))
            else:
                layers.append(LayerChoices(heads, d_ff))
        return cls(config, layer_rank=rank, n_layer_choices=depth, layers=layers)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], config: SupernetConfig, layer_rank: Sequence[int] | None = None
    ) -> SearchSpace:
        """Build from the YAML/JSON form::

            n_layer_choices: [15, 20, 25, 30]
            n_head_choices: [3, 6, 9]          # every layer (whole KV groups)
            d_ff_choices: [384, 768, 1152, 1536]
            d_model_choices: [576]
            tied: false                        # true: one choice shared by all layers
            layers:                            # optional per-layer overrides
              0: {d_ff_choices: [1536]}

        Missing keys take the default space's values.
        """
        allowed = {
            "n_layer_choices", "n_head_choices", "d_ff_choices", "d_model_choices",
            "n_expert_choices", "top_k_choices", "tied", "layers", "layer_rank",
        }
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise NasError(f"search space: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")
        rank = data.get("layer_rank", layer_rank)
        base = cls.default(config, rank)
        overrides = data.get("layers") or {}
        if not isinstance(overrides, Mapping):
            raise NasError("search space: 'layers' must map a layer index to its *_choices")
        overrides = {int(k): v for k, v in overrides.items()}
        bad = sorted(k for k in overrides if not 0 <= k < config.n_layer)
        if bad:
            raise NasError(f"search space: layers {bad} do not exist (0..{config.n_layer - 1})")

        def pick(key: str, layer: int, fallback: tuple[int, ...]) -> tuple[int, ...]:
            source = overrides.get(layer, {})
            value = source.get(key, data.get(key))
            if value is None:
                return fallback
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise NasError(f"search space: {key} must be a list of integers, got {value!r}")
            return tuple(sorted(set(value)))

        has_moe = any(config.layer(i).n_expert for i in range(config.n_layer))
        for key in ("n_expert_choices", "top_k_choices"):
            dense_override = [i for i, o in overrides.items() if key in o and not config.layer(i).n_expert]
            if (key in data and not has_moe) or dense_override:
                where = f"layers {dense_override}" if dense_override else "every layer"
                raise NasError(f"search space: {key} given but {where} is dense in the supernet; remove it")
        layers = []
        for i, b in enumerate(base.layers):
            layers.append(
                LayerChoices(
                    n_head=pick("n_head_choices", i, b.n_head),
                    d_ff=pick("d_ff_choices", i, b.d_ff),
                    n_expert=pick("n_expert_choices", i, b.n_expert) if config.layer(i).n_expert else (0,),
                    top_k=pick("top_k_choices", i, b.top_k) if config.layer(i).n_expert else (0,),
                )
            )
        n_layer_choices = data.get("n_layer_choices", base.n_layer_choices)
        if isinstance(n_layer_choices, int):
            n_layer_choices = [n_layer_choices]
        return cls(
            config,
            layer_rank=base.layer_rank,
            n_layer_choices=n_layer_choices,
            layers=layers,
            d_model_choices=data.get("d_model_choices", base.d_model_choices),
            tied=bool(data.get("tied", False)),
        )

    @classmethod
    def from_yaml(cls, path: str | Path, config: SupernetConfig, layer_rank: Sequence[int] | None = None) -> SearchSpace:
        path = Path(path)
        if not path.is_file():
            raise NasError(f"search space file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise NasError(f"search space file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise NasError(f"search space file {path} must contain a mapping of *_choices")
        return cls.from_dict(data, config, layer_rank)

    @classmethod
    def resolve(
        cls, override: str | Path | Mapping[str, Any] | None, config: SupernetConfig, layer_rank: Sequence[int],
        default: SearchSpace,
    ) -> SearchSpace:
        """A study's space: ``override`` (a ``*_choices`` mapping or a YAML file, as a study
        spec's ``space`` gives it) over ``config``, else ``default`` (the supernet's own)."""
        if override is None:
            return default
        if isinstance(override, Mapping):
            return cls.from_dict(override, config, layer_rank)
        return cls.from_yaml(override, config, layer_rank)

    def to_dict(self) -> dict[str, Any]:
        """The explicit form (every layer listed), loadable with :meth:`from_dict`."""
        first = self.layers[0]
        out: dict[str, Any] = {
            "layer_rank": list(self.layer_rank),
            "n_layer_choices": list(self.n_layer_choices),
            "d_model_choices": list(self.d_model_choices),
            "n_head_choices": list(first.n_head),
            "d_ff_choices": list(first.d_ff),
            "tied": self.tied,
        }
        overrides: dict[int, dict[str, list[int]]] = {}
        for i, c in enumerate(self.layers):
            diff: dict[str, list[int]] = {}
            if c.n_head != first.n_head:
                diff["n_head_choices"] = list(c.n_head)
            if c.d_ff != first.d_ff:
                diff["d_ff_choices"] = list(c.d_ff)
            if c.n_expert != (0,):
                diff["n_expert_choices"] = list(c.n_expert)
                diff["top_k_choices"] = list(c.top_k)
            if diff:
                overrides[i] = diff
        if overrides:
            out["layers"] = overrides
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # --------------------------------------------------------------- members
    def kept_layers(self, n_layer: int) -> tuple[int, ...]:
        """The ``n_layer`` highest-ranked layers, in their original order."""
        return tuple(sorted(self.layer_rank[:n_layer]))

    def largest(self) -> SubnetConfig:
        return self._build(
            max(self.n_layer_choices),
            max(self.d_model_choices),
            {i: (max(c.n_head), max(c.d_ff), max(c.n_expert), max(c.top_k)) for i, c in enumerate(self.layers)},
        )

    def smallest(self) -> SubnetConfig:
        return self._build(
            min(self.n_layer_choices),
            min(self.d_model_choices),
            {i: (min(c.n_head), min(c.d_ff), min(c.n_expert), min(c.top_k)) for i, c in enumerate(self.layers)},
        )

    def _build(self, n_layer: int, d_model: int, per_layer: Mapping[int, tuple[int, int, int, int]]) -> SubnetConfig:
        kept = self.kept_layers(n_layer)
        moe = any(self.config.layer(i).n_expert for i in kept)
        experts = tuple(per_layer[i][2] for i in kept)
        top_k = tuple(min(per_layer[i][3], per_layer[i][2]) for i in kept)
        return SubnetConfig(
            layers=kept,
            n_head=tuple(per_layer[i][0] for i in kept),
            d_ff=tuple(per_layer[i][1] for i in kept),
            d_model=d_model,
            n_expert=experts if moe else (),
            top_k=top_k if moe else (),
        )

    def contains(self, subnet: SubnetConfig) -> bool:
        try:
            self.check(subnet)
        except NasError:
            return False
        return True

    def check(self, subnet: SubnetConfig) -> None:
        """Raise :class:`NasError` naming the first field of ``subnet`` outside this space."""
        subnet.check_fits(self.config)
        if subnet.n_layer not in self.n_layer_choices:
            raise NasError(
                f"sub-network config: keeps {subnet.n_layer} layers; allowed n_layer_choices are {list(self.n_layer_choices)}"
            )
        if subnet.layers != self.kept_layers(subnet.n_layer):
            raise NasError(
                f"sub-network config: layers {list(subnet.layers)} are not the {subnet.n_layer} highest-ranked layers "
                f"{list(self.kept_layers(subnet.n_layer))} of this search space"
            )
        if subnet.d_model not in self.d_model_choices:
            raise NasError(
                f"sub-network config: d_model={subnet.d_model} not in d_model_choices {list(self.d_model_choices)}"
            )
        for pos, layer in enumerate(subnet.layers):
            c = self.layers[layer]
            for name, value, allowed in (
                ("n_head", subnet.n_head[pos], c.n_head),
                ("d_ff", subnet.d_ff[pos], c.d_ff),
                ("n_expert", subnet.n_expert[pos] if subnet.n_expert else 0, c.n_expert),
            ):
                if value not in allowed:
                    raise NasError(
                        f"sub-network config: layer {layer} {name}={value} not in {name}_choices {list(allowed)}"
                    )
            if subnet.top_k:
                # a top_k choice above the experts kept is lowered to them (see from_params)
                reachable = sorted({min(k, subnet.n_expert[pos]) for k in c.top_k})
                if subnet.top_k[pos] not in reachable:
                    raise NasError(
                        f"sub-network config: layer {layer} top_k={subnet.top_k[pos]} not in top_k_choices {list(c.top_k)}"
                    )
        if self.tied and not (len(set(subnet.n_head)) == 1 and len(set(subnet.d_ff)) == 1):
            raise NasError("sub-network config: this space is tied; every layer must have the same sizes")

    def branch_depths(self, subnet: SubnetConfig) -> frozenset[int] | None:
        """The depths ``k`` (1 .. ``subnet.n_layer``) at which another sub-network of this space
        can run exactly the same first ``k`` kept layers as ``subnet`` (same supernet layers,
        sizes and ``d_model``) and then differ or end: the only residual streams of ``subnet``
        that a later candidate could resume from (:mod:`evaluators.prefix`). In a tied space
        these are where the kept layers of two depth choices part, a handful per sub-network;
        with per-layer choices, every kept layer that has a choice adds its depth. None when
        ``subnet`` is not in this space (any depth may then be shared)."""
        if not self.contains(subnet):
            return None
        n = subnet.n_layer
        dims = [
            (subnet.n_head[p], subnet.d_ff[p], subnet.n_expert[p] if subnet.n_expert else 0, subnet.top_k[p] if subnet.top_k else 0)
            for p in range(n)
        ]
        # how far another sub-network can copy these sizes: all the way with per-layer choices,
        # in a tied space as long as they equal the first layer's (its one choice for every layer)
        same = n if not self.tied else next((p for p in range(n) if dims[p] != dims[0]), n)
        depths: set[int] = set()
        for other in self.n_layer_choices:
            if other == n:
                continue
            theirs = self.kept_layers(other)
            k = next((p for p in range(min(n, other)) if theirs[p] != subnet.layers[p]), min(n, other))
            depths.add(min(k, same))
        if not self.tied:
            depths.update(p for p, layer in enumerate(subnet.layers) if len(self._layer_options(layer)) > 1)
        elif same < n:
            depths.add(same)
        depths.discard(0)  # the embedding output is not a boundary
        return frozenset(depths)

    # ----------------------------------------------------------- enumeration
    def _layer_options(self, layer: int) -> list[tuple[int, int, int, int]]:
        c = self.layers[layer]
        options = set()
        for h, f, e, k in itertools.product(c.n_head, c.d_ff, c.n_expert, c.top_k):
            options.add((h, f, e, min(k, e)))
        return sorted(options)

    def size(self) -> int:
        """Number of distinct sub-networks in the space."""
        total = 0
        for n in self.n_layer_choices:
            kept = self.kept_layers(n)
            if self.tied:
                count = len(self._layer_options(kept[0]))
            else:
                count = math.prod(len(self._layer_options(i)) for i in kept)
            total += count * len(self.d_model_choices)
        return total

    def enumerate(self, limit: int = 1_000_000) -> Iterator[SubnetConfig]:
        """Every distinct sub-network (refuses spaces larger than ``limit``)."""
        size = self.size()
        if size > limit:
            raise NasError(
                f"search space has {size:,} sub-networks, more than the enumeration limit {limit:,}; "
                "sample it instead or narrow the *_choices"
            )
        for n in self.n_layer_choices:
            kept = self.kept_layers(n)
            for d_model in self.d_model_choices:
                if self.tied:
                    for opt in self._layer_options(kept[0]):
                        yield self._build(n, d_model, {i: opt for i in kept})
                else:
                    for combo in itertools.product(*(self._layer_options(i) for i in kept)):
                        yield self._build(n, d_model, dict(zip(kept, combo)))

    def sample(self, rng: random.Random) -> SubnetConfig:
        """A uniformly random choice per dimension (not per sub-network), from ``rng``."""
        return self.from_params({name: rng.choice(choices) for name, choices in self.param_choices().items()})

    # ---------------------------------------------------------------- optuna
    def param_choices(self) -> dict[str, tuple[int, ...]]:
        """Stable Optuna parameter names and their choices (only dims with a choice to make
        are listed; e.g. ``n_layer``, ``d_model``, ``layer_3.d_ff``, or ``d_ff`` when tied)."""
        out: dict[str, tuple[int, ...]] = {}
        if len(self.n_layer_choices) > 1:
            out["n_layer"] = self.n_layer_choices
        if len(self.d_model_choices) > 1:
            out["d_model"] = self.d_model_choices
        if self.tied:
            c = self.layers[0]
            for dim in _PER_LAYER_DIMS:
                values = getattr(c, dim)
                if len(values) > 1:
                    out[dim] = values
        else:
            for i, c in enumerate(self.layers):
                for dim in _PER_LAYER_DIMS:
                    values = getattr(c, dim)
                    if len(values) > 1:
                        out[f"layer_{i}.{dim}"] = values
        return out

    def from_params(self, params: Mapping[str, int]) -> SubnetConfig:
        """The sub-network named by Optuna parameters (missing names take their only choice;
        a top_k above the experts kept is lowered to the experts kept)."""
        choices = self.param_choices()
        unknown = sorted(set(params) - set(choices))
        if unknown:
            raise NasError(f"search space: unknown parameter(s) {unknown}; known: {sorted(choices)[:8]}...")
        for name, value in params.items():
            if value not in choices[name]:
                raise NasError(f"search space: parameter {name}={value} not in its choices {list(choices[name])}")
        n_layer = int(params.get("n_layer", self.n_layer_choices[-1]))
        d_model = int(params.get("d_model", self.d_model_choices[-1]))
        per_layer = {}
        for i, c in enumerate(self.layers):
            values = []
            for dim in _PER_LAYER_DIMS:
                key = dim if self.tied else f"layer_{i}.{dim}"
                values.append(int(params.get(key, getattr(c, dim)[-1])))
            per_layer[i] = tuple(values)
        return self._build(n_layer, d_model, per_layer)

    def to_params(self, subnet: SubnetConfig) -> dict[str, int]:
        """Optuna parameters that name ``subnet`` (dropped layers take their largest choice)."""
        self.check(subnet)
        by_layer = {layer: pos for pos, layer in enumerate(subnet.layers)}
        params: dict[str, int] = {}
        for name, choices in self.param_choices().items():
            if name == "n_layer":
                params[name] = subnet.n_layer
            elif name == "d_model":
                params[name] = subnet.d_model
            else:
                layer_name, _, dim = name.rpartition(".")
                layer = int(layer_name.split("_")[1]) if layer_name else subnet.layers[0]
                pos = by_layer.get(layer)
                if pos is None:
                    params[name] = choices[-1]
                else:
                    seq = getattr(subnet, dim)
                    value = seq[pos] if seq else 0
                    if dim == "top_k" and value not in choices:
                        value = min(k for k in choices if k >= value)  # a top_k lowered to the experts kept
                    params[name] = value
        return params

    def suggest(self, trial: Any) -> SubnetConfig:
        """Ask an Optuna trial for one sub-network (categorical parameters, stable names)."""
        params = {name: trial.suggest_categorical(name, list(choices)) for name, choices in self.param_choices().items()}
        return self.from_params(params)

    def describe(self) -> str:
        """One line per dimension, for `nas supernet info`."""
        c0 = self.layers[0]
        uniform = all(c == c0 for c in self.layers)
        lines = [
            f"depth (by layer rank): n_layer_choices={list(self.n_layer_choices)}",
            f"d_model_choices={list(self.d_model_choices)}",
        ]
        if uniform:
            lines.append(f"every layer: n_head_choices={list(c0.n_head)} d_ff_choices={list(c0.d_ff)}"
                         + (f" n_expert_choices={list(c0.n_expert)} top_k_choices={list(c0.top_k)}" if c0.n_expert != (0,) else ""))
        else:
            for i, c in enumerate(self.layers):
                lines.append(f"layer {i}: n_head={list(c.n_head)} d_ff={list(c.d_ff)}"
                             + (f" n_expert={list(c.n_expert)} top_k={list(c.top_k)}" if c.n_expert != (0,) else ""))
        lines.append(f"tied={self.tied}; layer rank (most important first): {list(self.layer_rank)}")
        return "\n".join(lines)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.config == other.config and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"SearchSpace(n_layer_choices={list(self.n_layer_choices)}, size={self.size():,}, tied={self.tied})"


__all__ = ["LayerChoices", "SearchSpace"]
