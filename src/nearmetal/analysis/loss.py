"""A loss estimate: a variant's loss against its baseline, direction-aware, with its interval and verdict, and
the words and numbers the reports print for it. How the intervals are computed is ``estimate.py``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


def loss_from_ratio(ratio: float | np.ndarray, direction: str) -> float | np.ndarray:
    """Loss as a fraction from statistic(variant)/statistic(baseline): positive means the variant costs."""
    return ratio - 1.0 if direction == "lower" else 1.0 - ratio


def loss_bounds(low: float, high: float, direction: str) -> tuple[float, float]:
    """A ratio interval (low, high) as loss bounds, in order (they swap for a higher-is-better metric)."""
    a, b = float(loss_from_ratio(low, direction)), float(loss_from_ratio(high, direction))
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True)
class LossEstimate:
    loss: float  # fraction; 0.12 = 12% loss
    low: float | None  # interval bounds (fractions); None when it cannot be computed
    high: float | None
    confidence: float
    # delta-t | sign-test (paired), bca | percentile (unpaired), +stage-1, +welch-log, +resolution, exact, none
    method: str
    # "mean": ratio of means; "median": of medians (unpaired) or the median per-block ratio (paired)
    statistic: str = "mean"
    check_low: float | None = None  # an independent interval on the log scale: a cross-check (unpaired)
    check_high: float | None = None
    reason: str = ""  # why there is no interval
    hierarchical: bool = False  # the metric has several values per trial (the interval is over trial means)
    design: str = "unpaired"  # paired (block by block) | unpaired (every trial of each side)
    pairs: int = 0  # blocks with a trial of both cells (paired), else 0
    direction: str = "lower"  # of the metric: how the loss was made from the ratio
    note: str = ""  # why the unpaired form was used, or which baseline trials were used
    resolution: float = 0.0  # the quantum the values were printed at (0: resolution-free)
    p_value: float | None = None  # of "no difference", consistent with the row's interval
    # family-wise control over the rows of a metric (``analysis.family``): the rows in the family, Holm's
    # verdict for this row, and its simultaneous (Bonferroni, confidence 1 − α/k) interval
    family: int = 1
    family_significant: bool | None = None
    family_low: float | None = None
    family_high: float | None = None
    # the row's interval on the log ratio scale at another confidence (paired rows; None: approximated)
    at: Callable[[float], tuple[float, float] | None] | None = field(default=None, compare=False, repr=False)

    @property
    def row_significant(self) -> bool | None:
        """Whether this row's own interval excludes 0 (the verdict when it is alone in its family)."""
        if self.low is None or self.high is None:
            return None
        return self.low > 0 or self.high < 0

    @property
    def significant(self) -> bool | None:
        """The verdict: Holm's over the row's family when it has more than one row, else the row's own."""
        if self.family > 1 and self.family_significant is not None:
            return self.family_significant
        return self.row_significant

    @property
    def ratio_bounds(self) -> tuple[float, float] | None:
        """The interval as ratios variant/baseline (low, high)."""
        if self.low is None or self.high is None:
            return None
        if self.direction == "lower":
            return 1.0 + self.low, 1.0 + self.high
        return 1.0 - self.high, 1.0 - self.low

    @property
    def relative_half_width(self) -> float | None:
        """Half-width of the interval relative to the ratio, as a fraction: exp(half-width of the log ratio
        interval) − 1. The same for a +90% rate loss and a +900% time loss of the same precision; what the
        adaptive target (``±4%``) is compared with."""
        bounds = self.ratio_bounds
        if bounds is None or bounds[0] <= 0 or bounds[1] <= 0:
            return None
        return math.expm1((math.log(bounds[1]) - math.log(bounds[0])) / 2)

    @property
    def half_width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2

    @property
    def ratio(self) -> float:
        """statistic(variant) / statistic(baseline)."""
        return 1.0 + self.loss if self.direction == "lower" else 1.0 - self.loss

    @property
    def slowdown(self) -> float:
        """How many times slower the variant is (> 1) or faster (< 1): the time ratio for a time, the inverse
        of the ratio for a rate."""
        r = self.ratio
        if self.direction == "lower":
            return r
        return 1.0 / r if r > 0 else float("inf")

    @property
    def check_agrees(self) -> bool | None:
        """Whether the cross-check interval reaches the same verdict (excludes 0 or not)."""
        if self.check_low is None or self.check_high is None or self.significant is None:
            return None
        return (self.check_low > 0 or self.check_high < 0) == self.significant

    def to_dict(self) -> dict[str, object]:
        return {
            "loss": self.loss,
            "low": self.low,
            "high": self.high,
            "ratio": self.ratio,
            "slowdown": self.slowdown,
            "confidence": self.confidence,
            "method": self.method,
            "design": self.design,
            "pairs": self.pairs,
            "statistic": self.statistic,
            "significant": self.significant,
            "half_width": self.half_width,
            "check_low": self.check_low,
            "check_high": self.check_high,
            "hierarchical": self.hierarchical,
            "reason": self.reason,
            "note": self.note,
            "resolution": self.resolution,
            "p_value": self.p_value,
            "row_significant": self.row_significant,
            "family": self.family,
            "family_low": self.family_low,
            "family_high": self.family_high,
            "relative_half_width": self.relative_half_width,
        }


def loss_definition(direction: str) -> str:
    """How a loss is made from the ratio r = variant / baseline, in words a reader can check."""
    if direction == "lower":
        return "time-like metric (lower is better): loss = t/t₀ − 1 (unbounded above, ≥ −100%); +100% = ×2 slower"
    return "rate-like metric (higher is better): loss = 1 − v/v₀ (≤ +100%); +50% = ×2 slower"


def fmt_slowdown(est: LossEstimate) -> str:
    """'×2.12 slower' / '×1.05 faster' / '×1.00' from a loss estimate."""
    factor = est.slowdown
    if not math.isfinite(factor) or factor <= 0:
        return "–"
    if abs(factor - 1) < 0.005:
        return "×1.00"
    if factor > 1:
        return f"×{factor:.2f} slower"
    return f"×{1 / factor:.2f} faster"


def fmt_bound(fraction: float) -> str:
    """A bound in percent with one decimal, or as many more as it takes not to round it to 0 or across it
    ('+0.04' for 0.0004, never '+0.0' beside a significant loss)."""
    pct = fraction * 100
    if pct == 0 or not math.isfinite(pct):
        return f"{pct:+.1f}"
    for digits in range(1, 7):
        text = f"{pct:+.{digits}f}"
        if float(text) != 0:
            return text
    return f"{pct:+.2e}"


def fmt_interval(low: float, high: float) -> str:
    """'+14.9, +25.0' (percent) with ``fmt_bound``'s digits."""
    return f"{fmt_bound(low)}, {fmt_bound(high)}"


def describe_loss(est: LossEstimate) -> str:
    """Words for a loss: significant only when the interval excludes 0 (Holm's verdict over the row's family
    when it has several rows)."""
    pct = est.loss * 100
    if est.significant is None:
        why = est.reason or "too few trials"
        return f"{pct:+.1f}% (no interval: {why})" if math.isfinite(pct) else f"no estimate ({why})"
    assert est.low is not None and est.high is not None
    bounds = f"{fmt_bound(est.low)}%, {fmt_bound(est.high)}%"
    level = f"{est.confidence:.0%}"
    of = "" if est.statistic in ("mean", "per-block ratio") else f" ({est.statistic}s)"
    family = ""
    if est.family > 1:
        family = f"; family-wise over {est.family} rows (Holm)"
    if not est.significant:
        if est.row_significant:
            return (
                f"no significant difference{of} once {est.family} rows are read together ({level} interval"
                f" [{bounds}] of this row alone excludes 0{family})"
            )
        return f"no significant difference{of} ({level} interval [{bounds}] includes 0{family})"
    if pct > 0:
        return f"costs {pct:.1f}%{of}, {fmt_slowdown(est)} ({level} interval [{bounds}] excludes 0{family})"
    return f"gains {-pct:.1f}%{of}, {fmt_slowdown(est)} ({level} interval [{bounds}] excludes 0{family})"
