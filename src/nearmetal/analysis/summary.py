"""Summaries of a cell's values: mean, median, spread, and outliers flagged by the median ± k·MAD rule (never
dropped); every group of a table at once, in a few sorts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# median ± k·MAD flags an outlier; MAD is scaled by 1.4826 so it estimates σ for normal data, and k = 3.5
# is Iglewicz & Hoaglin's cut-off for the modified z-score
DEFAULT_OUTLIER_K = 3.5
MAD_TO_SIGMA = 1.4826
# below this many trials on a side, the reported interval is the hull of the bootstrap's and the log-scale


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
