"""How numbers read, everywhere a study is shown: one human format, the raw value on hover.

* scores (``accuracy``, ``<task>/<metric>``, their standard errors): four decimals, ``0.5123``;
* counts (``params``, ``non_embedding_params`` ...): three significant digits with an SI
  prefix, ``75.1 M``; FLOPs ``190 MFLOP``; bytes ``12.3 MB``; rates ``1.2 k/s``;
* milliseconds: ``12.3 ms``; anything else: three significant digits (SI prefix from 10^4).

The web pages render with the JavaScript twin of :func:`human` (``fmtValue`` in
``reports/web/static/app.js``); ``tests/test_web_ui.py`` checks in Chromium that both give
the same text for the same values, so a server-rendered table and its live refresh agree.
"""

from __future__ import annotations

import html
import math
from typing import Any

from nas.metrics import ACCURACY

_PREFIXES = ("", " k", " M", " G", " T", " P")


def unit(column: str) -> str:
    """What kind of number a column holds: ``score``, ``count``, ``flop``, ``bytes``, ``ms``,
    ``rate`` or ``plain``."""
    name = column.removesuffix("_stderr").split("@", 1)[0]
    if name == ACCURACY or "/" in name:
        return "score"
    if name.endswith("_ms"):
        return "ms"
    if "flop" in name:
        return "flop"
    if name.endswith("_bytes") or name == "memory":  # memory: weights + KV cache, in bytes
        return "bytes"
    if name.endswith("_per_s"):
        return "rate"
    if name.endswith("params") or name in ("n_trials", "n_examples"):
        return "count"
    return "plain"


_SUFFIX = {"count": "", "flop": "FLOP", "bytes": "B", "rate": "/s", "plain": ""}


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _sig3(v: float) -> str:
    """Three significant digits without trailing zeros (``12.3``, ``1230``, ``0.412``)."""
    return f"{float(f'{v:.3g}'):g}"


def _si(v: float, suffix: str) -> str:
    """Three significant digits with an SI prefix: ``75.1 M``, ``190 MFLOP``, ``512 B``."""
    sign = "-" if v < 0 else ""
    r = float(f"{abs(v):.3g}")  # round first: 999.7 k reads 1 M, not 1000 k
    group = 0 if r < 1000 else min(len(_PREFIXES) - 1, int(math.floor(math.log10(r) / 3)))
    mantissa = _sig3(r / 10 ** (3 * group))
    if group:
        return f"{sign}{mantissa}{_PREFIXES[group]}{suffix}"
    return f"{sign}{mantissa} {suffix}" if suffix else f"{sign}{mantissa}"


def human(value: Any, column: str = "") -> str:
    """``value`` of ``column`` as people read it (``–`` when missing or not finite)."""
    v = _finite(value)
    if v is None:
        return "–"
    kind = unit(column)
    if kind == "score":
        return f"{v:.4f}"
    if kind == "ms":
        return f"{_sig3(v)} ms" if abs(v) < 1e4 else f"{_sig3(v / 1e3)} s"
    if kind == "plain":
        if abs(v) >= 1e4:
            return _si(v, "")
        return str(int(v)) if v == int(v) else _sig3(v)
    return _si(v, _SUFFIX[kind])


def raw(value: Any) -> str:
    """The exact value, as shown on hover (``repr`` of the float; integers without ``.0``)."""
    v = _finite(value)
    if v is None:
        return ""
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)


def cell_html(value: Any, column: str = "", stderr: Any = None, z: float = 1.0) -> str:
    """``<span class="num" title="RAW">HUMAN</span>`` plus `` ± z·stderr`` when it has one
    (the same markup as ``numHTML`` in app.js)."""
    text = f'<span class="num" title="{html.escape(raw(value))}">{html.escape(human(value, column))}</span>'
    se = _finite(stderr)
    if se is not None and se > 0 and _finite(value) is not None:
        text += f' <small class="pm">± {z * se:.4f}</small>'
    return text


__all__ = ["cell_html", "human", "raw", "unit"]
