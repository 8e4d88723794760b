"""Intervals for a variant against its baseline from trials run side by side in the same blocks.

An interleaved run puts one trial of every cell in each block, in a shuffled order, so a variant's trial and
its baseline's trial of the same block saw the same machine (the same slow drift, the same noisy minute). The
per-block log ratio ``d_i = log v_i − log b_i`` cancels what the block shares, and since the order inside a
block is random, what is left is symmetric about the log of the true ratio even when the noise is skewed or
heavy-tailed (a difference of two draws of the same distribution is symmetric). Hence:

* **Six pairs or more: Wilcoxon's signed-rank interval** (the Walsh averages between the exact order statistics
  of the signed-rank distribution; the estimate is their median, Hodges–Lehmann). Its coverage is at least the
  nominal level for any continuous symmetric distribution — heavy tails and single outliers included — and it
  is as efficient as the t interval for normal data (95.5%). Below six pairs it cannot reach 95% at all (with
  five pairs the widest interval, [min, max], covers 93.75%).
* ``statistic: median`` asks for the median per-block ratio: the sign test's interval (order statistics of
  the log ratios; no symmetry assumed), from six pairs on.
* **Fewer pairs: Student's t on the log ratios** (exact for log-normal noise; conservative for symmetric heavy
  tails, Efron 1969).
* **Adaptive repeats** stop when the interval looks narrow enough, which selects runs whose variance was
  under-estimated (measured: 88–93% coverage at a nominal 95%). With ``first_stage = n0`` the reported
  interval is the hull of the above and Stein's two-stage interval, whose spread comes from the first ``n0``
  blocks only (``mean(d) ± t(n0−1)·s0/√n``): the stop rule can then no longer pick a lucky variance.
  ``benchmarks/validity.py`` measures all three.

Bounds are computed on the log scale and mapped back with ``exp``, so a ratio interval is always positive: a
time loss never below −100 %, a rate loss never above +100 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as sps

# from this many pairs on, the signed-rank interval (it cannot reach 95% with fewer)
SIGNED_RANK_FROM = 6
# exact signed-rank distribution up to this many pairs, normal approximation beyond
EXACT_SIGNED_RANK_UP_TO = 300
# Walsh averages grow as n²/2: beyond this many pairs the t interval is used (its coverage is fine at such n)
MAX_SIGNED_RANK_PAIRS = 2000
# the stop rule's first stage is never shorter than this (Stein's t with 1 degree of freedom is useless)
MIN_FIRST_STAGE = 3


@dataclass(frozen=True)
class PairedInterval:
    """An interval for the ratio variant/baseline from per-block log ratios."""

    estimate: float  # the ratio (exp of the centre of the log ratios)
    low: float | None
    high: float | None
    method: str  # "signed-rank" | "t" (+ "+stage-1" when hulled with Stein's interval) | "exact" | "none"
    pairs: int
    reason: str = ""


@lru_cache(maxsize=512)
def signed_rank_cdf(n: int) -> np.ndarray:
    """P(T⁺ ≤ k) for k = 0 … n(n+1)/2 under the null (exact, by counting subsets of ranks)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return np.cumsum(counts / counts.sum())


def signed_rank_depth(n: int, confidence: float) -> int:
    """k such that [W_(k), W_(M−k+1)] of the M sorted Walsh averages covers at least ``confidence``
    (0 when no interval of n pairs can)."""
    alpha = (1 - confidence) / 2
    if n <= EXACT_SIGNED_RANK_UP_TO:
        # the largest k with P(T⁺ ≤ k − 1) ≤ α/2
        return int(np.searchsorted(signed_rank_cdf(n), alpha * (1 + 1e-12), side="right"))
    mean = n * (n + 1) / 4
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return max(0, math.floor(mean + float(sps.norm.ppf(alpha)) * sd - 0.5) + 1)


@lru_cache(maxsize=4096)
def t_quantile(confidence: float, dof: int) -> float:
    """Two-sided Student t quantile (cached: the stop rule asks for the same few between every block)."""
    return float(sps.t.ppf(0.5 + confidence / 2, dof))


def _t_bounds(d: np.ndarray, confidence: float) -> tuple[float, float, float]:
    n = d.size
    mean = float(d.mean())
    half = t_quantile(confidence, n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def _signed_rank_bounds(d: np.ndarray, confidence: float) -> tuple[float, float, float] | None:
    n = d.size
    k = signed_rank_depth(n, confidence)
    if k < 1:
        return None
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2)
    return float(np.median(walsh)), float(walsh[k - 1]), float(walsh[walsh.size - k])


def sign_test_depth(n: int, confidence: float) -> int:
    """k such that [d_(k), d_(n−k+1)] of n sorted values covers their median with at least ``confidence``
    (the sign test's interval; 0 when n values cannot)."""
    alpha = (1 - confidence) / 2
    return int(np.searchsorted(sps.binom.cdf(np.arange(n + 1), n, 0.5), alpha * (1 + 1e-12), side="right"))


def _sign_test_bounds(d: np.ndarray, confidence: float) -> tuple[float, float, float] | None:
    k = sign_test_depth(d.size, confidence)
    if k < 1:
        return None
    ordered = np.sort(d)
    return float(np.median(d)), float(ordered[k - 1]), float(ordered[d.size - k])


def stage_half_width(d: np.ndarray, first_stage: int, confidence: float) -> float | None:
    """Half-width (log scale) of Stein's interval: spread of the first ``first_stage`` log ratios, n of all."""
    n0 = first_stage
    if n0 < 2 or d.size < n0:
        return None
    s0 = float(d[:n0].std(ddof=1))
    return t_quantile(confidence, n0 - 1) * s0 / math.sqrt(d.size)


def log_ratio_interval(
    log_ratios: np.ndarray,
    confidence: float = 0.95,
    first_stage: int | None = None,
    statistic: str = "mean",
) -> PairedInterval:
    """Interval for the ratio from per-block log ratios given in block order (see the module's text).
    ``first_stage``: the blocks a run's adaptive repeats ran before their stop rule could act.
    ``statistic="median"``: the median per-block ratio with the sign test's interval (no symmetry assumed)."""
    d = np.asarray(log_ratios, dtype=float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n == 0:
        return PairedInterval(float("nan"), None, None, "none", 0, "no block has both trials")
    if n == 1:
        return PairedInterval(math.exp(d[0]), None, None, "none", 1, "one paired block")
    if np.ptp(d) == 0:
        r = math.exp(d[0])
        return PairedInterval(r, r, r, "exact", n)
    bounds = None
    method = "sign-test" if statistic == "median" else "signed-rank"
    if statistic == "median":
        bounds = _sign_test_bounds(d, confidence)
    elif SIGNED_RANK_FROM <= n <= MAX_SIGNED_RANK_PAIRS:
        bounds = _signed_rank_bounds(d, confidence)
    if bounds is None:
        bounds = _t_bounds(d, confidence)
        method = "t"
    centre, low, high = bounds
    if first_stage is not None:
        half = stage_half_width(d, max(first_stage, MIN_FIRST_STAGE), confidence)
        if half is not None:
            mean = float(d.mean())
            low, high = min(low, mean - half), max(high, mean + half)
            method += "+stage-1"
    return PairedInterval(math.exp(centre), math.exp(low), math.exp(high), method, n)


def welch_log_interval(
    variant: np.ndarray, baseline: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float] | None:
    """(ratio, low, high) of the geometric means of two independent positive samples: Welch's t on the logs.
    None when a side has fewer than 2 values or a value ≤ 0."""
    v, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    if v.size < 2 or b.size < 2 or (v <= 0).any() or (b <= 0).any():
        return None
    lv, lb = np.log(v), np.log(b)
    se_v, se_b = lv.var(ddof=1) / v.size, lb.var(ddof=1) / b.size
    diff = float(lv.mean() - lb.mean())
    se = math.sqrt(se_v + se_b)
    if se == 0:
        return math.exp(diff), math.exp(diff), math.exp(diff)
    dof = (se_v + se_b) ** 2 / (se_v**2 / (v.size - 1) + se_b**2 / (b.size - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, dof)) * se
    return math.exp(diff), math.exp(diff - half), math.exp(diff + half)
