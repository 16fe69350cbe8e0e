"""The statistics of a benchmark: quantiles, a figure (its median, spread, baseline, ratio and
target), how a value is printed and the table of a benchmark's figures."""

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


def paired_ratios(
    values: Sequence[float], baseline: Sequence[float]
) -> tuple[list[float], list[int]]:
    """Each round's value over the same round's baseline, and the rounds (numbered from 1) that
    have no ratio: a baseline of 0 or less (an added latency lost in the noise has no ratio),
    or a round not measured on either side (NaN)."""
    ratios: list[float] = []
    unpaired: list[int] = []
    for n, (a, b) in enumerate(zip(values, baseline, strict=True), 1):
        if not math.isnan(a) and not math.isnan(b) and b > 0:
            ratios.append(a / b)
        else:
            unpaired.append(n)
    return ratios, unpaired


def unpaired_note(name: str, rounds: Sequence[int]) -> str:
    listed = ", ".join(map(str, rounds))
    return f"{name}: no ratio for round(s) {listed} (baseline 0 or less, or not measured)"


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


def table(figures: Sequence[Figure]) -> str:
    """The figures as a text table, a row each: value, spread, baseline, ratio, target, met."""
    head = ["figure", "value", "spread", "baseline", "ratio (spread)", "target", "met"]
    rows = []
    for f in figures:
        spread = (
            f"{fmt(f.low, f.unit)} – {fmt(f.high, f.unit)}"
            if f.low is not None and f.high is not None and len(f.samples) != 1
            else "-"
        )
        ratio = "-"
        if f.ratio is not None:
            ratio = fmt(f.ratio, "×")
            if f.ratio_low is not None and f.ratio_high is not None:
                ratio += f" ({f.ratio_low:.2f}–{f.ratio_high:.2f})"
        met = {True: "yes", False: "NO", None: "-"}[f.met]
        rows.append(
            [
                f.name,
                fmt(f.value, f.unit),
                spread,
                fmt(f.baseline, f.unit),
                ratio,
                f.target.text(f.unit) if f.target else "-",
                met,
            ]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)
