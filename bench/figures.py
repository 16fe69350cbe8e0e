"""The statistics of a benchmark: quantiles, a figure (its median, spread, baseline, ratio and
target) and how a value is printed."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile, linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


@dataclasses.dataclass(frozen=True)
class Target:
    """`op` is '>=' or '<='; it applies to the ratio (on='ratio') or the value itself."""

    op: str
    bound: float
    on: str = "ratio"

    def met(self, x: float | None) -> bool | None:
        if x is None or math.isnan(x):
            return None
        return x >= self.bound if self.op == ">=" else x <= self.bound

    def text(self, unit: str) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        if self.on == "ratio":
            return f"{sign} {self.bound:g}× baseline"
        return f"{sign} {fmt(self.bound, unit)}"


@dataclasses.dataclass
class Figure:
    """One measured figure: its median (or named statistic) and spread, the baseline it is
    held against, the ratio to it (paired per round), and the target."""

    name: str
    unit: str
    value: float | None
    low: float | None = None
    high: float | None = None
    spread: str = "min–max of rounds"
    samples: list[float] = dataclasses.field(default_factory=list)
    baseline: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    target: Target | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.met(self.ratio if self.target.on == "ratio" else self.value)

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target"] = (
            None
            if self.target is None
            else {**dataclasses.asdict(self.target), "text": self.target.text(self.unit)}
        )
        data["met"] = self.met
        return finite(data)


def finite(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "×":
        return f"{value:.2f}×"
    if unit in ("ms", "s"):
        digits = 1 if abs(value) >= 10 else (2 if abs(value) >= 1 else 3)
        return f"{value:,.{digits}f} {unit}"
    whole = abs(value) >= 100 or float(value).is_integer()
    text = f"{value:,.0f}" if whole else f"{value:,.2f}"
    return f"{text} {unit}".strip()
