"""Summaries, loss intervals, outliers, variance components: plain functions over arrays, no I/O."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats as sps

from nearmetal.analysis.bootstrap import Interval, Sample, ratio_intervals
from nearmetal.analysis.paired import (
    log_ratio_interval,
    p_value_of,
    ratio_of_means_interval,
    resolution_shifts,
    welch_log_interval,
)

# median ± k·MAD flags an outlier; MAD is scaled by 1.4826 so it estimates σ for normal data, and k = 3.5
# is Iglewicz & Hoaglin's cut-off for the modified z-score
DEFAULT_OUTLIER_K = 3.5
MAD_TO_SIGMA = 1.4826
# below this many trials on a side, the reported interval is the hull of the bootstrap's and the log-scale
# Welch interval
SMALL_SAMPLE_HULL_BELOW = 4


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    median: float
    stdev: float
    cv: float
    minimum: float
    maximum: float
    mad: float = float("nan")  # scaled median absolute deviation (estimates σ)
    outliers: int = 0  # values outside median ± k·MAD (flagged, never dropped)


def _nan_summary() -> Summary:
    nan = float("nan")
    return Summary(0, nan, nan, nan, nan, nan, nan, nan, 0)


def summarize(values: np.ndarray, outlier_k: float = DEFAULT_OUTLIER_K) -> Summary:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return _nan_summary()
    groups = np.zeros(v.size, dtype=np.int64)
    return summarize_groups(v, groups, 1, outlier_k)[0]


def group_bounds(groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Start offsets of each group in an array sorted by group (length n_groups + 1)."""
    return np.searchsorted(groups, np.arange(n_groups + 1))


def summarize_groups(
    values: np.ndarray, groups: np.ndarray, n_groups: int, outlier_k: float = DEFAULT_OUTLIER_K
) -> list[Summary]:
    """One summary per group (``groups[i]`` in 0..n_groups-1), all groups in a few sorts: no loop per value."""
    stats = grouped_statistics(values, groups, n_groups, outlier_k)
    out = []
    for g in range(n_groups):
        if stats["n"][g] == 0:
            out.append(_nan_summary())
            continue
        out.append(
            Summary(
                int(stats["n"][g]),
                float(stats["mean"][g]),
                float(stats["median"][g]),
                float(stats["stdev"][g]),
                float(stats["cv"][g]),
                float(stats["min"][g]),
                float(stats["max"][g]),
                float(stats["mad"][g]),
                int(stats["outliers"][g]),
            )
        )
    return out


def _group_medians(sorted_values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    n = np.diff(bounds)
    has = n > 0
    lo = bounds[:-1] + np.maximum(n - 1, 0) // 2
    hi = bounds[:-1] + n // 2
    out = np.full(n.size, np.nan)
    out[has] = (sorted_values[lo[has]] + sorted_values[np.minimum(hi[has], sorted_values.size - 1)]) / 2
    return out


def grouped_statistics(
    values: np.ndarray, groups: np.ndarray, n_groups: int, outlier_k: float = DEFAULT_OUTLIER_K
) -> dict[str, np.ndarray]:
    """Column arrays (n, mean, median, stdev, cv, min, max, mad, outliers) per group, plus ``outlier``: a
    boolean per value (in the input order) flagging values outside median ± k·MAD."""
    values = np.asarray(values, dtype=float)
    groups = np.asarray(groups, dtype=np.int64)
    order = np.lexsort((values, groups))
    v, g = values[order], groups[order]
    bounds = group_bounds(g, n_groups)
    n = np.diff(bounds)
    has = n > 0
    starts = np.minimum(bounds[:-1], max(v.size - 1, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = np.bincount(g, weights=v, minlength=n_groups)
        mean = np.where(has, sums / np.maximum(n, 1), np.nan)
        dev = v - mean[g]
        ss = np.bincount(g, weights=dev * dev, minlength=n_groups)
        stdev = np.where(n > 1, np.sqrt(ss / np.maximum(n - 1, 1)), np.where(has, 0.0, np.nan))
        cv = np.where(mean != 0, stdev / np.abs(mean), np.nan)
    median = _group_medians(v, bounds)
    minimum = np.where(has, v[starts], np.nan) if v.size else np.full(n_groups, np.nan)
    maximum = np.where(has, v[np.maximum(bounds[1:] - 1, 0)], np.nan) if v.size else np.full(n_groups, np.nan)
    with np.errstate(invalid="ignore"):  # ±inf values (a rate over zero time) have no deviation
        absdev = np.abs(v - median[g])
    mad_order = np.lexsort((absdev, g))
    mad = _group_medians(absdev[mad_order], bounds) * MAD_TO_SIGMA
    with np.errstate(invalid="ignore"):
        flagged_sorted = (mad[g] > 0) & (absdev > outlier_k * mad[g])
    flagged = np.empty(values.size, dtype=bool)
    flagged[order] = flagged_sorted
    outliers = np.bincount(g[flagged_sorted], minlength=n_groups) if v.size else np.zeros(n_groups, int)
    return {
        "n": n,
        "mean": mean,
        "median": median,
        "stdev": stdev,
        "cv": cv,
        "min": minimum,
        "max": maximum,
        "mad": mad,
        "outliers": outliers,
        "outlier": flagged,
    }


def outlier_mask(values: np.ndarray, k: float = DEFAULT_OUTLIER_K) -> np.ndarray:
    """True for values outside median ± k·MAD (scaled MAD); nothing is flagged when MAD is 0."""
    v = np.asarray(values, dtype=float)
    return grouped_statistics(v, np.zeros(v.size, dtype=np.int64), 1, k)["outlier"]


# --- loss ----------------------------------------------------------------------------------------------


def loss_from_ratio(ratio: float | np.ndarray, direction: str) -> float | np.ndarray:
    """Loss as a fraction from statistic(variant)/statistic(baseline): positive means the variant costs."""
    return ratio - 1.0 if direction == "lower" else 1.0 - ratio


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


def fieller_ratio(
    mean_v: np.ndarray,
    var_v: np.ndarray,
    n_v: np.ndarray,
    mean_b: np.ndarray,
    var_b: np.ndarray,
    n_b: np.ndarray,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Fieller's interval for mean_v / mean_b of two independent samples (sample variances ``var_*``).

    Solves (m_v − ρ·m_b)² ≤ t²·(s_v²/n_v + ρ²·s_b²/n_b) for ρ, with Welch–Satterthwaite degrees of freedom
    at the point estimate. NaN bounds where the interval is unbounded (the baseline mean is not clearly
    away from 0: g ≥ 1) or the samples are too small. Its bounds can be negative for positive data (a loss
    below −100%), so reports use the log-scale Welch interval instead (``paired.welch_log_interval``); this
    is kept for notebooks and for metrics that can be ≤ 0."""
    mean_v, var_v, n_v = (np.asarray(a, dtype=float) for a in (mean_v, var_v, n_v))
    mean_b, var_b, n_b = (np.asarray(a, dtype=float) for a in (mean_b, var_b, n_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        se_v, se_b = var_v / n_v, var_b / n_b
        rho = mean_v / mean_b
        w1, w2 = se_v, rho**2 * se_b
        df = (w1 + w2) ** 2 / (w1**2 / (n_v - 1) + w2**2 / (n_b - 1))
        df = np.where(np.isfinite(df), df, np.minimum(n_v, n_b) - 1)
        t = sps.t.ppf(0.5 + confidence / 2, np.maximum(df, 1))
        a = mean_b**2 - t**2 * se_b
        half = np.sqrt(t**2 * (mean_v**2 * se_b + mean_b**2 * se_v) - t**4 * se_v * se_b)
        low = (mean_v * mean_b - half) / a
        high = (mean_v * mean_b + half) / a
    ok = (a > 0) & (n_v >= 2) & (n_b >= 2) & np.isfinite(low) & np.isfinite(high)
    return np.where(ok, low, np.nan), np.where(ok, high, np.nan)


def _loss_bounds(low: float, high: float, direction: str) -> tuple[float, float]:
    a, b = float(loss_from_ratio(low, direction)), float(loss_from_ratio(high, direction))
    return (a, b) if a <= b else (b, a)


def estimate_from_interval(
    interval: Interval,
    direction: str,
    confidence: float,
    statistic: str = "mean",
    check: tuple[float, float] | None = None,
    hierarchical: bool = False,
    note: str = "",
) -> LossEstimate:
    """A ratio interval turned into a direction-aware loss (bounds swap for higher-is-better metrics)."""
    point = float(loss_from_ratio(interval.estimate, direction))
    c_low = c_high = None
    if check is not None and all(math.isfinite(x) for x in check):
        c_low, c_high = _loss_bounds(check[0], check[1], direction)
    if interval.low is None or interval.high is None:
        return LossEstimate(
            point, None, None, confidence, "none", statistic, c_low, c_high, interval.reason, hierarchical,
            direction=direction, note=note,
        )  # fmt: skip
    low, high = _loss_bounds(interval.low, interval.high, direction)
    return LossEstimate(
        point, low, high, confidence, interval.method, statistic, c_low, c_high, "", hierarchical,
        direction=direction, note=note,
    )  # fmt: skip


def paired_loss_intervals(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    directions: Sequence[str],
    confidence: float = 0.95,
    first_stage: int | None = None,
    hierarchical: Sequence[bool] | None = None,
    notes: Sequence[str] | None = None,
    statistic: str = "mean",
    resolutions: Sequence[float] | None = None,
) -> list[LossEstimate]:
    """Losses from one (variant, baseline) value per block in block order, one pair of arrays per
    comparison: the ratio of means by the paired delta method (``statistic="mean"``), or the median
    per-block ratio by the sign test (``"median"``); see ``paired.py``. ``resolutions``: the quantum each
    comparison's values were printed at (0: none), which widens the interval by what rounding can do."""
    label = "median" if statistic == "median" else "mean"
    out = []
    for i, ((v, b), direction) in enumerate(zip(pairs, directions, strict=True)):
        v, b = np.asarray(v, dtype=float), np.asarray(b, dtype=float)
        q = float(resolutions[i]) if resolutions is not None else 0.0
        if statistic == "median":
            shifts = resolution_shifts(v, b, q, confidence) if q > 0 else (0.0, 0.0)
            iv = log_ratio_interval(np.log(v) - np.log(b), confidence, first_stage, "median", shifts)
        else:
            iv = ratio_of_means_interval(v, b, confidence, first_stage, q)
        point = float(loss_from_ratio(iv.estimate, direction))
        nested = bool(hierarchical[i]) if hierarchical is not None else False
        note = notes[i] if notes is not None else ""
        if iv.low is None or iv.high is None:
            est = LossEstimate(
                point, None, None, confidence, "none", label, reason=iv.reason,
                hierarchical=nested, design="paired", pairs=iv.pairs, direction=direction, note=note,
                resolution=q,
            )  # fmt: skip
        else:
            low, high = _loss_bounds(iv.low, iv.high, direction)
            p = iv.p_value
            if p is None and iv.at is not None:
                p = p_value_of(iv.at, confidence)
            est = LossEstimate(
                point, low, high, confidence, iv.method, label, hierarchical=nested,
                design="paired", pairs=iv.pairs, direction=direction, note=note, resolution=q, p_value=p,
                at=iv.at,
            )  # fmt: skip
        out.append(est)
    return out


def _log_bounds_at(est: LossEstimate, level: float) -> tuple[float, float] | None:
    """The estimate's interval on the log ratio scale at another confidence: the paired row's own method,
    else (bootstrap rows) a normal approximation on the log scale fitted to its interval."""
    if est.at is not None:
        return est.at(level)
    bounds = est.ratio_bounds
    if bounds is None or bounds[0] <= 0:
        return None
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    z = float(sps.norm.ppf(0.5 + est.confidence / 2))
    centre, se = (lo + hi) / 2, (hi - lo) / (2 * z)
    half = float(sps.norm.ppf(0.5 + level / 2)) * se
    return centre - half, centre + half


def _p_of(est: LossEstimate) -> float | None:
    if est.low is None or est.high is None:
        return None
    if est.p_value is not None:
        return est.p_value
    return p_value_of(lambda level: _log_bounds_at(est, level), est.confidence)


def family_adjust(estimates: Sequence[LossEstimate]) -> list[LossEstimate]:
    """Holm's step-down verdicts over a family of rows (one metric's rows a reader reads together), each
    with its simultaneous interval at confidence 1 − α/k (Bonferroni: its rows exclude 0 only where Holm
    also finds the row significant; Holm may find more). Rows without an interval are not counted."""
    counted = [i for i, e in enumerate(estimates) if e.low is not None and e.high is not None]
    k = len(counted)
    out = list(estimates)
    if k <= 1:
        return out
    alpha = 1 - estimates[counted[0]].confidence
    ps: dict[int, float] = {}
    for i in counted:
        p = _p_of(estimates[i])
        ps[i] = 1.0 if p is None else p
    order = sorted(counted, key=lambda i: ps[i])
    rejecting = True
    for rank, i in enumerate(order):
        p = ps[i]
        rejecting = rejecting and p <= alpha / (k - rank)
        est = estimates[i]
        level = 1 - alpha / k
        log_bounds = _log_bounds_at(est, level)
        f_low = f_high = None
        if log_bounds is not None:
            f_low, f_high = _loss_bounds(math.exp(log_bounds[0]), math.exp(log_bounds[1]), est.direction)
        out[i] = replace(
            est, p_value=p, family=k, family_significant=rejecting, family_low=f_low, family_high=f_high
        )
    return out


def _positive(values: np.ndarray) -> bool:
    return bool(values.size) and bool((values > 0).all())


def loss_intervals(
    variants: Sequence[Sample],
    baselines: Sequence[Sample],
    directions: Sequence[str],
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
    statistic: str = "mean",
    method: str = "bca",
    expand: bool = True,
    notes: Sequence[str] | None = None,
    resolutions: Sequence[float] | None = None,
) -> list[LossEstimate]:
    """Losses of many (variant, baseline) pairs of independent samples at once: a bootstrap interval on the
    ratio (BCa, widened for small samples) over trial means, and Welch's t on the logs as a cross-check.

    A trial with several values counts as one value, its mean: resampling values within trials as well
    counts their variance twice (measured: 98–100% coverage at a nominal 95%). With fewer than 4 trials a
    side the bootstrap has too few distinct resamples to reach its tails, so the reported interval is the
    hull with the log-scale Welch interval. Both stay within what a ratio of positive values allows."""
    flat_v = [Sample.of(s.trial_means()) for s in variants]
    flat_b = [Sample.of(s.trial_means()) for s in baselines]
    intervals = ratio_intervals(flat_v, flat_b, statistic, confidence, resamples, seed, method, expand)
    out = []
    for i, (iv, d, v, b) in enumerate(zip(intervals, directions, flat_v, flat_b, strict=True)):
        check = None
        if _positive(v.values) and _positive(b.values):
            welch = welch_log_interval(v.values, b.values, confidence)
            if welch is not None:
                check = (welch[1], welch[2])
        if (
            check is not None
            and iv.method in ("bca", "percentile")
            and iv.low is not None
            and iv.high is not None
            and min(v.n_trials, b.n_trials) < SMALL_SAMPLE_HULL_BELOW
        ):
            iv = Interval(
                iv.estimate, min(iv.low, check[0]), max(iv.high, check[1]), f"{iv.method}+welch-log"
            )
        q = float(resolutions[i]) if resolutions is not None else 0.0
        if q > 0 and iv.low is not None and iv.high is not None and iv.low > 0:
            # tied or coarse values: bounds move out by what rounding can do to each mean (``paired.py``)
            down, up = resolution_shifts(v.values, b.values, q, confidence)
            if down + up > 1e-9:
                iv = Interval(
                    iv.estimate, iv.low * math.exp(-down), iv.high * math.exp(up), f"{iv.method}+resolution"
                )
        nested = variants[i].hierarchical or baselines[i].hierarchical
        note = notes[i] if notes is not None else ""
        est = estimate_from_interval(iv, d, confidence, statistic, check, nested, note)
        out.append(replace(est, resolution=q))
    return out


def loss_interval(
    variant: np.ndarray | Sample,
    baseline: np.ndarray | Sample,
    direction: str,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
    method: str = "BCa",
    statistic: str = "mean",
) -> LossEstimate:
    """Loss of ``variant`` against ``baseline`` (independent samples) with a BCa bootstrap interval on the
    ratio of means (or of medians) and Welch's t on the logs as a cross-check (see ``loss_intervals``)."""
    v = variant if isinstance(variant, Sample) else Sample.of(variant)
    b = baseline if isinstance(baseline, Sample) else Sample.of(baseline)
    return loss_intervals([v], [b], [direction], confidence, resamples, seed, statistic, method)[0]


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


# --- levels of variation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VarianceComponents:
    """Variance within a trial (between its values) and between trials, from a one-way random-effects
    ANOVA on the values of each trial (unequal numbers of values allowed)."""

    trials: int
    values_per_trial: float  # mean number of values per trial
    mean: float  # mean of the trial means
    within: float  # σ²_w: pooled variance of values around their trial's mean
    between: float  # σ²_b: variance of the trials' true means (S²_B − σ²_w·mean(1/m), clipped at 0)
    between_observed: float  # S²_B: sample variance of the trial means

    @property
    def share_between(self) -> float:
        total = self.within + self.between
        return self.between / total if total > 0 else float("nan")

    def to_dict(self) -> dict[str, float]:
        return {
            "trials": self.trials,
            "values_per_trial": self.values_per_trial,
            "mean": self.mean,
            "var_within": self.within,
            "var_between": self.between,
            "share_between": self.share_between,
        }


def variance_components(sample: Sample) -> VarianceComponents | None:
    """Within- and between-trial variance of a sample with several values per trial (None otherwise)."""
    if sample.sizes is None or sample.n_trials < 2:
        return None
    sizes = sample.sizes
    means = sample.trial_means()
    n, total = sizes.size, int(sizes.sum())
    if total <= n:
        return None
    deviations = sample.values - np.repeat(means, sizes)
    within = float((deviations**2).sum() / (total - n))
    between_observed = float(means.var(ddof=1))
    between = max(0.0, between_observed - within * float(np.mean(1.0 / sizes)))
    return VarianceComponents(n, float(sizes.mean()), float(means.mean()), within, between, between_observed)


@dataclass(frozen=True)
class Design:
    """How many trials, and values per trial, reach a target interval half-width at least cost."""

    trials: int
    values_per_trial: int
    cost_s: float  # estimated time: trials × (start-up + values × time per value)
    half_width: float  # expected relative half-width of the loss interval with this design
    assumption: str  # how the costs were estimated


def cheapest_design(
    variant: VarianceComponents,
    baseline: VarianceComponents,
    target: float,
    confidence: float,
    trial_cost_s: float,
    value_cost_s: float,
    assumption: str = "",
    max_values_per_trial: int = 100_000,
) -> Design | None:
    """Cheapest (n trials, m values per trial), the same for both cells, whose loss interval is expected to
    be at most ± ``target`` (relative, e.g. 0.01).

    Each cell's mean of trial means has relative variance (σ²_b + σ²_w/m)/(n·μ²); the ratio's half-width is
    about z·sqrt(r_v + r_b). Total cost is n·(c_trial + m·c_value). For two levels the cost-optimal m is
    sqrt(c_trial·σ²_w / (c_value·σ²_b)) (Kalibera & Jones 2013; Cochran's two-stage sampling), checked here
    at the integers around it."""
    if variant.mean == 0 or baseline.mean == 0 or target <= 0:
        return None
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    within = variant.within / variant.mean**2 + baseline.within / baseline.mean**2
    between = variant.between / variant.mean**2 + baseline.between / baseline.mean**2
    trial_cost_s = max(trial_cost_s, 1e-9)
    value_cost_s = max(value_cost_s, 1e-9)
    if between > 0:
        m_star = math.sqrt(trial_cost_s * within / (value_cost_s * between))
    else:
        m_star = float(max_values_per_trial)
    # the integer optimum lies near the continuous one, but n is rounded up too: search around it
    low_m = max(1, math.floor(m_star / 4))
    high_m = min(max_values_per_trial, math.ceil(m_star * 4) + 1)
    candidates = {1, max_values_per_trial, *range(low_m, high_m + 1)}
    best: Design | None = None
    for m in sorted(candidates):
        rel_var = between + within / m
        n = max(2, math.ceil(z * z * rel_var / target**2))
        cost = n * (trial_cost_s + m * value_cost_s)
        half = z * math.sqrt(rel_var / n)
        if best is None or cost < best.cost_s:
            best = Design(n, m, cost, half, assumption)
    return best
