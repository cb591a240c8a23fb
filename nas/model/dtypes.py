"""The dtypes a model runs, is costed and scored in: ``bf16`` and ``fp32``.

fp16 is refused everywhere: on CPUs it is unusably slow (~3 GFLOP/s on the machines this
is developed on), so neither scores, costs nor latencies at fp16 would describe a
sensible deployment. Torch dtypes are accepted by name (``torch.bfloat16``), so this
module needs no torch; :func:`nas.model.directory.parse_dtype` maps names to torch dtypes.
"""

from __future__ import annotations

from typing import Any

from nas.errors import NasError

_NAMES = {"bf16": "bf16", "bfloat16": "bf16", "fp32": "fp32", "float32": "fp32"}
_REFUSED = {"fp16", "float16", "half"}
#: Bytes per element of each canonical dtype name.
DTYPE_BYTES = {"bf16": 2, "fp32": 4}


def dtype_name(dtype: Any) -> str:
    """The canonical name (``bf16`` or ``fp32``) of a dtype name or torch dtype."""
    name = str(dtype).lower().removeprefix("torch.")
    if name in _REFUSED:
        raise NasError(f"dtype {dtype!r} is refused (fp16 is unusably slow on CPUs); use bf16 or fp32")
    try:
        return _NAMES[name]
    except KeyError:
        raise NasError(f"dtype {dtype!r} is not supported; use bf16 or fp32") from None


__all__ = ["DTYPE_BYTES", "dtype_name"]
