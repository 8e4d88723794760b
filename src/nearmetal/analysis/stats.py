"""Summaries, loss intervals, outliers, variance components: plain functions over arrays, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from nearmetal.analysis.bootstrap import Interval, Sample, ratio_intervals

# median ± k·MAD flags an outlier; MAD is scaled by 1.4826 so it estimates σ for normal data, and k = 3.5
# is Iglewicz & Hoaglin's cut-off for the modified z-score
DEFAULT_OUTLIER_K = 3.5
MAD_TO_SIGMA = 1.4826
# below this many trials on a side, the reported interval is the hull of the bootstrap's and Fieller's
FIELLER_HULL_BELOW = 4


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
    method: str  # "bca", "percentile", "exact" (no spread), "none" (too few samples)
    statistic: str = "mean"  # ratio of means, or of medians
    fieller_low: float | None = None  # Fieller's interval (ratio of means, t-based): a cross-check
    fieller_high: float | None = None
    reason: str = ""  # why there is no interval
    hierarchical: bool = False  # two-level bootstrap (trials, then values within trials)

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

    @property
    def fieller_agrees(self) -> bool | None:
        """Whether Fieller's interval reaches the same verdict (excludes 0 or not) as the bootstrap."""
        if self.fieller_low is None or self.fieller_high is None or self.significant is None:
            return None
        return (self.fieller_low > 0 or self.fieller_high < 0) == self.significant

    def to_dict(self) -> dict[str, object]:
        return {
            "loss": self.loss,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "method": self.method,
            "statistic": self.statistic,
            "significant": self.significant,
            "half_width": self.half_width,
            "fieller_low": self.fieller_low,
            "fieller_high": self.fieller_high,
            "hierarchical": self.hierarchical,
            "reason": self.reason,
        }


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
    away from 0: g ≥ 1) or the samples are too small."""
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


def estimate_from_interval(
    interval: Interval,
    direction: str,
    confidence: float,
    statistic: str = "mean",
    fieller: tuple[float, float] | None = None,
    hierarchical: bool = False,
) -> LossEstimate:
    """A ratio interval turned into a direction-aware loss (bounds swap for higher-is-better metrics)."""
    point = float(loss_from_ratio(interval.estimate, direction))
    f_low = f_high = None
    if fieller is not None and all(math.isfinite(x) for x in fieller):
        fb = sorted(float(loss_from_ratio(x, direction)) for x in fieller)
        f_low, f_high = fb[0], fb[1]
    if interval.low is None or interval.high is None:
        return LossEstimate(
            point, None, None, confidence, "none", statistic, f_low, f_high, interval.reason, hierarchical
        )
    bounds = sorted(
        [float(loss_from_ratio(interval.low, direction)), float(loss_from_ratio(interval.high, direction))]
    )
    return LossEstimate(
        point, bounds[0], bounds[1], confidence, interval.method, statistic, f_low, f_high, "", hierarchical
    )


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
) -> list[LossEstimate]:
    """Losses of many (variant, baseline) pairs at once: bootstrap interval plus Fieller's cross-check."""
    intervals = ratio_intervals(variants, baselines, statistic, confidence, resamples, seed, method, expand)
    fieller: list[tuple[float, float] | None] = [None] * len(intervals)
    if statistic == "mean" and intervals:
        # Fieller works on trial means, the independent units
        units_v = [s.trial_means() for s in variants]
        units_b = [s.trial_means() for s in baselines]

        def col(units: list[np.ndarray], fn) -> np.ndarray:  # type: ignore[no-untyped-def]
            return np.array([fn(u) if u.size > 1 else np.nan for u in units])

        low, high = fieller_ratio(
            col(units_v, np.mean),
            col(units_v, lambda u: u.var(ddof=1)),
            np.array([u.size for u in units_v]),
            col(units_b, np.mean),
            col(units_b, lambda u: u.var(ddof=1)),
            np.array([u.size for u in units_b]),
            confidence,
        )
        fieller = [
            (float(lo), float(hi)) if math.isfinite(lo) and math.isfinite(hi) else None
            for lo, hi in zip(low, high, strict=True)
        ]
    out = []
    for iv, d, f, v, b in zip(intervals, directions, fieller, variants, baselines, strict=True):
        if (
            f is not None
            and iv.method in ("bca", "percentile")
            and iv.low is not None
            and iv.high is not None
            and min(v.n_trials, b.n_trials) < FIELLER_HULL_BELOW
        ):
            # with 2–3 trials a side the bootstrap has too few distinct resamples to reach its tails
            # (coverage ≈ 90% at a nominal 95%): report the hull of it and Fieller's t-based interval
            iv = Interval(iv.estimate, min(iv.low, f[0]), max(iv.high, f[1]), f"{iv.method}+fieller")
        out.append(estimate_from_interval(iv, d, confidence, statistic, f, v.hierarchical or b.hierarchical))
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
    """Loss of ``variant`` against ``baseline`` with a BCa bootstrap interval on the ratio of means (or of
    medians), and Fieller's interval as a cross-check. The samples are resampled independently; a
    ``Sample`` with trial sizes is resampled at two levels (trials, then values within trials)."""
    v = variant if isinstance(variant, Sample) else Sample.of(variant)
    b = baseline if isinstance(baseline, Sample) else Sample.of(baseline)
    return loss_intervals([v], [b], [direction], confidence, resamples, seed, statistic, method)[0]


def describe_loss(est: LossEstimate) -> str:
    """Words for a loss: significant only when the interval excludes 0."""
    pct = est.loss * 100
    if est.significant is None:
        why = est.reason or "too few trials"
        return f"{pct:+.1f}% (no interval: {why})" if math.isfinite(pct) else f"no estimate ({why})"
    low, high = est.low * 100, est.high * 100  # type: ignore[operator]
    level = f"{est.confidence:.0%}"
    of = "" if est.statistic == "mean" else f" ({est.statistic}s)"
    if not est.significant:
        return f"no significant difference{of} ({level} interval [{low:+.1f}%, {high:+.1f}%] includes 0)"
    if pct > 0:
        return f"costs {pct:.1f}%{of} ({level} interval [{low:+.1f}%, {high:+.1f}%] excludes 0)"
    return f"gains {-pct:.1f}%{of} ({level} interval [{low:+.1f}%, {high:+.1f}%] excludes 0)"


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

    def relative_variance(self, values_per_trial: float) -> float:
        """Relative variance of one trial's mean with m values: (σ²_b + σ²_w/m) / mean²."""
        return (self.between + self.within / values_per_trial) / self.mean**2

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
