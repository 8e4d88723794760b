"""Summaries and loss intervals: plain functions over arrays, no I/O."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    median: float
    stdev: float
    cv: float
    minimum: float
    maximum: float


def summarize(values: np.ndarray) -> Summary:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan)
    mean = float(v.mean())
    stdev = float(v.std(ddof=1)) if n > 1 else 0.0
    cv = stdev / abs(mean) if mean != 0 else float("nan")
    return Summary(n, mean, float(np.median(v)), stdev, cv, float(v.min()), float(v.max()))


def loss_from_ratio(ratio: float | np.ndarray, direction: str) -> float | np.ndarray:
    """Loss as a fraction from mean(variant)/mean(baseline): positive means the variant costs."""
    return ratio - 1.0 if direction == "lower" else 1.0 - ratio


@dataclass(frozen=True)
class LossEstimate:
    loss: float  # fraction; 0.12 = 12% loss
    low: float | None  # interval bounds (fractions); None when it cannot be computed
    high: float | None
    confidence: float
    method: str  # "bca", "percentile", "exact" (no spread), "none" (too few samples)

    @property
    def significant(self) -> bool | None:
        if self.low is None or self.high is None:
            return None
        return self.low > 0 or self.high < 0

    @property
    def half_width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2


def _ratio_of_means(variant: np.ndarray, baseline: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(variant, axis=axis) / np.mean(baseline, axis=axis)


def loss_interval(
    variant: np.ndarray,
    baseline: np.ndarray,
    direction: str,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
    method: str = "BCa",
) -> LossEstimate:
    """Loss of ``variant`` against ``baseline`` with a bootstrap interval on the ratio of means.

    The two samples are resampled independently (``paired=False``); the statistic is vectorised so scipy
    evaluates all resamples in one numpy call. BCa falls back to the percentile interval when the
    acceleration cannot be estimated (e.g. identical values in a sample)."""
    v = np.asarray(variant, dtype=float)
    b = np.asarray(baseline, dtype=float)
    v, b = v[np.isfinite(v)], b[np.isfinite(b)]
    if v.size == 0 or b.size == 0 or b.mean() == 0:
        return LossEstimate(float("nan"), None, None, confidence, "none")
    point = float(loss_from_ratio(v.mean() / b.mean(), direction))
    if v.size < 2 or b.size < 2:
        return LossEstimate(point, None, None, confidence, "none")
    if np.ptp(v) == 0 and np.ptp(b) == 0:
        return LossEstimate(point, point, point, confidence, "exact")
    rng = np.random.default_rng(seed)
    used = method.lower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = sps.bootstrap(
                (v, b),
                _ratio_of_means,
                vectorized=True,
                paired=False,
                confidence_level=confidence,
                n_resamples=resamples,
                method=method,
                random_state=rng,
            )
            low_r, high_r = res.confidence_interval
        except (ValueError, FloatingPointError):
            low_r = high_r = float("nan")
        if not (math.isfinite(low_r) and math.isfinite(high_r)):
            used = "percentile"
            res = sps.bootstrap(
                (v, b),
                _ratio_of_means,
                vectorized=True,
                paired=False,
                confidence_level=confidence,
                n_resamples=resamples,
                method="percentile",
                random_state=np.random.default_rng(seed),
            )
            low_r, high_r = res.confidence_interval
    bounds = sorted([float(loss_from_ratio(low_r, direction)), float(loss_from_ratio(high_r, direction))])
    return LossEstimate(point, bounds[0], bounds[1], confidence, used)


def describe_loss(est: LossEstimate) -> str:
    """Words for a loss: significant only when the interval excludes 0."""
    pct = est.loss * 100
    if est.significant is None:
        return f"{pct:+.1f}% (too few trials for an interval)"
    low, high = est.low * 100, est.high * 100  # type: ignore[operator]
    level = f"{est.confidence:.0%}"
    if not est.significant:
        return f"no significant difference ({level} interval [{low:+.1f}%, {high:+.1f}%] includes 0)"
    if pct > 0:
        return f"costs {pct:.1f}% ({level} interval [{low:+.1f}%, {high:+.1f}%])"
    return f"gains {-pct:.1f}% ({level} interval [{low:+.1f}%, {high:+.1f}%])"
