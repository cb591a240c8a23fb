"""`SubnetConfig`: one sub-network of a supernet, frozen and hashable.

A :class:`SubnetConfig` names which supernet layers a sub-network keeps and, for every
kept layer, how many query heads (in whole KV groups), FFN neurons and (for MoE layers)
experts and routing top-k it keeps, plus the embedding width. All of them are *prefixes*
of the supernet's importance-ordered units, so a config is all it takes to run the
sub-network. Its canonical JSON and 16-hex hash are the cache key everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nas.errors import NasError
from nas.model.config import LayerDims, SupernetConfig


@dataclass(frozen=True)
class SubnetConfig:
    """One sub-network of a supernet; frozen, hashable, with a canonical JSON form.

    ``layers`` are supernet layer indices in ascending order; every other tuple has one
    entry per kept layer. ``n_expert``/``top_k`` are 0 for dense layers and may be
    empty tuples for an all-dense supernet.
    """

    layers: tuple[int, ...]
    n_head: tuple[int, ...]
    d_ff: tuple[int, ...]
    d_model: int
    n_expert: tuple[int, ...] = ()
    top_k: tuple[int, ...] = ()
    #: weight format it is deployed (and scored) in: "" = unquantised, at the study's dtype;
    #: else a :mod:`nas.model.quant` format (``q8_0``, ``q4_0``, ...). Written only when set,
    #: so unquantised configs keep their JSON and hash.
    quant: str = ""

    def __post_init__(self) -> None:
        for name in ("layers", "n_head", "d_ff", "n_expert", "top_k"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "d_model", int(self.d_model))
        if self.quant:
            # deferred: nas.model.quant imports this module
            from nas.model.quant import parse_quant

            object.__setattr__(self, "quant", parse_quant(self.quant).name)
        n = len(self.layers)
        if n == 0:
            raise NasError("sub-network config: it must keep at least one layer")
        if list(self.layers) != sorted(set(self.layers)):
            raise NasError(
                f"sub-network config: layers {list(self.layers)} must be distinct and ascending"
            )
        for name in ("n_head", "d_ff"):
            if len(getattr(self, name)) != n:
                raise NasError(
                    f"sub-network config: {name} has {len(getattr(self, name))} entries for {n} kept layers"
                )
        if self.n_expert or self.top_k:
            if len(self.n_expert) != n or len(self.top_k) != n:
                raise NasError(
                    f"sub-network config: n_expert and top_k need one entry per kept layer ({n})"
                )
            for i, (e, k) in enumerate(zip(self.n_expert, self.top_k)):
                if e == 0 and k == 0:
                    continue
                if e < 1:
                    raise NasError(
                        f"sub-network config: layer {self.layers[i]} keeps {e} experts; keep at least 1"
                    )
                if not 1 <= k <= e:
                    raise NasError(
                        f"sub-network config: layer {self.layers[i]} has top_k={k} but keeps {e} "
                        f"experts; top_k must be between 1 and the experts kept"
                    )

    # --------------------------------------------------------------- identity
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "layers": list(self.layers),
            "n_head": list(self.n_head),
            "d_ff": list(self.d_ff),
            "d_model": self.d_model,
        }
        if any(self.n_expert):
            out["n_expert"] = list(self.n_expert)
            out["top_k"] = list(self.top_k)
        if self.quant:
            out["quant"] = self.quant
        return out

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace; the cache key everywhere."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubnetConfig:
        allowed = {"layers", "n_head", "d_ff", "d_model", "n_expert", "top_k", "quant"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise NasError(f"sub-network config: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")
        missing = sorted({"layers", "n_head", "d_ff", "d_model"} - set(data))
        if missing:
            raise NasError(f"sub-network config: missing key(s) {missing}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> SubnetConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NasError(f"sub-network config: not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(data, dict):
            raise NasError("sub-network config: expected a JSON object")
        return cls.from_dict(data)

    # ---------------------------------------------------------------- helpers
    @property
    def n_layer(self) -> int:
        return len(self.layers)

    def layer_dims(self, position: int, q_per_kv: int) -> LayerDims:
        """Sizes of the ``position``-th kept layer."""
        moe = bool(self.n_expert) and self.n_expert[position] > 0
        return LayerDims(
            n_head=self.n_head[position],
            n_kv_head=self.n_head[position] // q_per_kv,
            d_ff=self.d_ff[position],
            n_expert=self.n_expert[position] if moe else 0,
            top_k=self.top_k[position] if moe else 0,
        )

    def is_homogeneous(self) -> bool:
        """True when every kept layer has the same sizes (and no layer is MoE)."""
        return (
            len(set(self.n_head)) == 1
            and len(set(self.d_ff)) == 1
            and not any(self.n_expert)
        )

    def summary(self) -> str:
        """A short human-readable description, e.g. ``L24 h[6..9] ff[768..1536] d576``."""

        def rng(values: Sequence[int]) -> str:
            lo, hi = min(values), max(values)
            return str(lo) if lo == hi else f"{lo}..{hi}"

        text = f"L{self.n_layer} h{rng(self.n_head)} ff{rng(self.d_ff)} d{self.d_model}"
        if any(self.n_expert):
            text += f" e{rng([e for e in self.n_expert if e])} k{rng([k for k in self.top_k if k])}"
        if self.quant:
            text += f" {self.quant}"
        return text

    def check_fits(self, config: SupernetConfig) -> None:
        """Raise :class:`NasError` unless this sub-network is a sub-network of ``config``."""
        if self.layers[-1] >= config.n_layer:
            raise NasError(
                f"sub-network config: layer {self.layers[-1]} does not exist; the supernet has "
                f"{config.n_layer} layers (0..{config.n_layer - 1})"
            )
        if not 1 <= self.d_model <= config.d_model:
            raise NasError(
                f"sub-network config: d_model={self.d_model} must be between 1 and the supernet's {config.d_model}"
            )
        q = config.q_per_kv
        for pos, layer in enumerate(self.layers):
            full = config.layer(layer)
            h = self.n_head[pos]
            if h < q or h > full.n_head or h % q:
                raise NasError(
                    f"sub-network config: layer {layer} n_head={h} must be a multiple of {q} "
                    f"(whole KV groups) between {q} and {full.n_head}"
                )
            if not 1 <= self.d_ff[pos] <= full.d_ff:
                raise NasError(
                    f"sub-network config: layer {layer} d_ff={self.d_ff[pos]} must be between 1 and {full.d_ff}"
                )
            e = self.n_expert[pos] if self.n_expert else 0
            if (e > 0) != (full.n_expert > 0):
                kind = "a mixture-of-experts" if full.n_expert else "a dense"
                raise NasError(
                    f"sub-network config: layer {layer} is {kind} layer in the supernet; "
                    f"set n_expert={'1..' + str(full.n_expert) if full.n_expert else 0} for it"
                )
            if e > full.n_expert:
                raise NasError(
                    f"sub-network config: layer {layer} keeps {e} experts but the supernet has {full.n_expert}"
                )


__all__ = ["SubnetConfig"]
