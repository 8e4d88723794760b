"""Intervals for a variant against its baseline from trials run side by side in the same blocks.

An interleaved run puts one trial of every cell in each block (mirrored pairs of blocks, ``run.schedule``), so a
variant's trial and its baseline's trial of the same block saw the same machine (the same slow drift, the same
noisy minute). What the tables print is the ratio of the cells' means (loss t/t₀ − 1 for a time, 1 − v/v₀ for a
rate), and the interval is on that same quantity (issue 28: an interval on another quantity — the
Hodges–Lehmann centre of the log ratios — missed the table's loss when the variant was noisier than the
baseline):

* **Ratio of means, paired delta method** (``ratio_of_means_interval``): log(v̄/b̄) ± t(n−1)·sd(u)/√n with
  u_i = v_i/v̄ − b_i/b̄, the first-order term of the log ratio of means, paired so what a block shares cancels.
  Under the multiplicative model u is a difference of two draws of one shape, hence symmetric even for skewed
  or heavy-tailed noise; heavy tails make it wide (the mean is then an uncertain quantity), not wrong.
* ``statistic: median`` asks for the median per-block ratio: the sign test's interval on the log ratios
  (``log_ratio_interval``; no symmetry assumed), from six pairs on (t below).
* **Adaptive repeats** stop when the interval looks narrow enough, which selects runs whose variance was
  under-estimated. With ``first_stage = n0`` the reported interval is the hull with Stein's two-stage interval,
  whose spread comes from the first ``n0`` blocks only: the stop rule cannot pick a lucky variance.
* **Resolution**: values printed at a quantum q (a 1 ms timer, 2 decimals) tie; each mean can then be off by up
  to q/2 (less when the values spread over several quanta), and the bounds move out by that
  (``resolution_shifts``), the spread never taken below the rounding's own. No interval is zero-wide unless the
  values are resolution-free and the per-block terms all agree.
* Every interval can be recomputed at another confidence (``PairedInterval.at``) and carries the p-value of
  "ratio = 1" that agrees with it: Holm's family-wise verdicts and simultaneous intervals use them.

``benchmarks/validity.py`` measures coverage and A/A rates (docs/validity.md). Bounds are computed on the log
scale and mapped back with ``exp``, so a ratio interval is always positive: a time loss never below −100 %, a
rate loss never above +100 %.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import special
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
    method: str  # "delta-t" | "signed-rank" | "sign-test" | "t" (+ "+stage-1", "+resolution") | "none"
    pairs: int
    reason: str = ""
    p_value: float | None = None  # of "ratio = 1", consistent with the interval (inverts ``at``)
    # the interval's log bounds at another confidence (simultaneous intervals of a family of rows)
    at: Callable[[float], tuple[float, float] | None] | None = field(default=None, compare=False, repr=False)


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
    return float(special.stdtrit(dof, 0.5 + confidence / 2))


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
    statistic: str = "signed-rank",
    shifts: tuple[float, float] = (0.0, 0.0),
) -> PairedInterval:
    """Interval for the centre of per-block log ratios given in block order: the median per-block ratio
    (``statistic="median"``: the sign test's interval, no symmetry assumed) or their Hodges–Lehmann centre
    (the signed-rank interval from six pairs, Student's t below). Tied log ratios get no exact shortcut: they
    give the interval their spread gives, moved out by ``shifts`` (down, up; see ``resolution_shifts``).
    ``first_stage``: the blocks a run's adaptive repeats ran before their stop rule could act."""
    d = np.asarray(log_ratios, dtype=float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n == 0:
        return PairedInterval(float("nan"), None, None, "none", 0, "no block has both trials")
    if n == 1:
        return PairedInterval(math.exp(d[0]), None, None, "none", 1, "one paired block")
    down, up = shifts

    def bounds_at(level: float) -> tuple[tuple[float, float, float], str]:
        found = None
        method = "sign-test" if statistic == "median" else "signed-rank"
        if statistic == "median":
            found = _sign_test_bounds(d, level)
        elif SIGNED_RANK_FROM <= n <= MAX_SIGNED_RANK_PAIRS:
            found = _signed_rank_bounds(d, level)
        if found is None:
            found = _t_bounds(d, level)
            method = "t"
        centre, low, high = found
        if first_stage is not None:
            half = stage_half_width(d, max(first_stage, MIN_FIRST_STAGE), level)
            if half is not None:
                mean = float(d.mean())
                low, high = min(low, mean - half), max(high, mean + half)
                method += "+stage-1"
        return (centre, low - down, high + up), method

    (centre, low, high), method = bounds_at(confidence)
    if down + up > 1e-9:
        method += "+resolution"

    def at(level: float) -> tuple[float, float]:
        _, lo, hi = bounds_at(level)[0]
        return lo, hi

    return PairedInterval(math.exp(centre), math.exp(low), math.exp(high), method, n, at=at)


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


# --- resolution: tied and coarse values -------------------------------------------------------------------

# values are read as multiples of 10^-p for the smallest such p while the scaled values stay below this
# (beyond it a float cannot tell an integer from a near one: the metric is taken as resolution-free)
MAX_SCALED = 1e9
INTEGER_TOLERANCE = 1e-6


def infer_resolution(values: np.ndarray) -> float:
    """The quantum the values were printed at: the largest q = g·10^-p (g 1, 2 or 5) such that every value
    is a multiple of q, with p the fewest decimals that write them all; 0 when none (resolution-free).

    ``10, 10, 11`` → 1; ``0.010, 0.011`` → 0.001; ``2.5, 5.0, 7.5`` → 0.5 (three distinct values are needed
    before a step of 2 or 5 is believed); a 10 ms metric on a 1 ms timer therefore reads as ±0.5 ms."""
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    top = float(v.max())
    if top == 0:
        return 0.0
    p = 0
    while top * 10.0**p <= MAX_SCALED:
        scaled = v * 10.0**p
        ints = np.round(scaled)
        if np.all(np.abs(scaled - ints) <= INTEGER_TOLERANCE):
            q = 10.0**-p
            distinct = np.unique(ints)
            if distinct.size >= 3:
                g = int(np.gcd.reduce(distinct.astype(np.int64)))
                for step in (5, 2):
                    if g % step == 0 and g % 10 != 0:
                        return q * step
            return q
        p += 1
    return 0.0


def rounding_bias_bound(values: np.ndarray, resolution: float, confidence: float = 0.95) -> float:
    """How far the mean of values rounded to ``resolution`` can sit from the mean of the unrounded ones.

    At most q/2 (every value rounded the same way: tied data); when the values spread over several quanta
    the rounding errors average out (Sheppard): for normal noise of sd σ the bias is at most
    (q/π)·Σₖ exp(−2π²k²σ²/q²). σ is taken low — the lower confidence bound of the sample's sd, less the
    rounding's own variance q²/12 — so a few values that happen to agree do not buy a narrow interval."""
    q = float(resolution)
    v = np.asarray(values, dtype=float)
    if q <= 0:
        return 0.0
    n = v.size
    if n < 2:
        return q / 2
    s2 = float(v.var(ddof=1))
    s2_low = s2 * (n - 1) / float(special.chdtri(n - 1, 0.5 - confidence / 2))  # chi2 ppf at 0.5 + c/2
    sigma2 = max(0.0, s2_low - q * q / 12)
    terms = sum(math.exp(-2 * math.pi**2 * k * k * sigma2 / (q * q)) for k in (1, 2, 3))
    return min(q / 2, q / math.pi * terms)


def resolution_shifts(
    variant: np.ndarray, baseline: np.ndarray, resolution: float, confidence: float = 0.95
) -> tuple[float, float]:
    """(down, up): how far the log ratio of the means can move when each side's mean is off by its rounding
    bound — the interval's low bound goes down by ``down``, its high bound up by ``up`` (both ≥ 0)."""
    if resolution <= 0:
        return 0.0, 0.0
    mv, mb = float(np.mean(variant)), float(np.mean(baseline))
    bv = min(rounding_bias_bound(variant, resolution, confidence), 0.999 * mv)
    bb = min(rounding_bias_bound(baseline, resolution, confidence), 0.999 * mb)
    down = -math.log1p(-bv / mv) + math.log1p(bb / mb)
    up = math.log1p(bv / mv) - math.log1p(-bb / mb)
    return down, up


def p_value_of(at: Callable[[float], tuple[float, float] | None], confidence: float) -> float:
    """The smallest α whose (1 − α) interval from ``at`` excludes 0 (log scale): the p-value of "ratio = 1"
    that agrees with the intervals (bisection; intervals nest as the confidence grows)."""

    def excludes(alpha: float) -> bool:
        b = at(1 - alpha)
        return b is not None and (b[0] > 0 or b[1] < 0)

    if not excludes(0.999999):
        return 1.0
    if excludes(1e-12):
        return 1e-12
    lo, hi = math.log(1e-12), math.log(0.999999)  # excludes at exp(hi), not at exp(lo)
    for _ in range(40):
        mid = (lo + hi) / 2
        if excludes(math.exp(mid)):
            hi = mid
        else:
            lo = mid
    return math.exp(hi)


def ratio_of_means_interval(
    variant: np.ndarray,
    baseline: np.ndarray,
    confidence: float = 0.95,
    first_stage: int | None = None,
    resolution: float = 0.0,
) -> PairedInterval:
    """Interval for mean(variant)/mean(baseline) from one value of each per block (block order): the paired
    delta method on the log of the ratio of means.

    log(m_v/m_b) has, to first order, the variance of the per-block u_i = v_i/m_v − b_i/m_b over n — a
    paired quantity, so what a block shares cancels — and its interval is log(m_v/m_b) ± t(n−1)·sd(u)/√n.
    Under the multiplicative model (a block scales both trials) u is a difference of two draws of one shape,
    hence symmetric even for skewed or heavy-tailed noise; when the variant is noisier than the baseline
    it estimates the ratio of means all the same (the Hodges–Lehmann centre of the log ratios does not).
    ``first_stage``: hull with Stein's interval (spread of the first n0 blocks' u). ``resolution``: the
    quantum the values were printed at; the bounds move out by what rounding can do to each mean."""
    v = np.asarray(variant, dtype=float)
    b = np.asarray(baseline, dtype=float)
    keep = np.isfinite(v) & np.isfinite(b) & (v > 0) & (b > 0)
    v, b = v[keep], b[keep]
    n = int(v.size)
    if n == 0:
        return PairedInterval(float("nan"), None, None, "none", 0, "no block has both trials")
    mv, mb = float(v.mean()), float(b.mean())
    centre = math.log(mv / mb)
    if n == 1:
        return PairedInterval(mv / mb, None, None, "none", 1, "one paired block")
    u = v / mv - b / mb
    # rounding hides spread: tied values could have come from values anywhere in their quantum, so the
    # spread of u is never taken below the rounding's own (uniform: q²/12 per value)
    floor = resolution * math.sqrt((1 / mv**2 + 1 / mb**2) / 12) if resolution > 0 else 0.0
    se = max(float(u.std(ddof=1)), floor) / math.sqrt(n)
    n0 = max(first_stage, MIN_FIRST_STAGE) if first_stage is not None else None
    stage_se = max(float(u[:n0].std(ddof=1)), floor) / math.sqrt(n) if n0 is not None and n >= n0 else None
    down, up = resolution_shifts(v, b, resolution, confidence)

    def at(level: float) -> tuple[float, float]:
        tq = t_quantile if level == confidence else _t_ppf
        half = tq(level, n - 1) * se
        if stage_se is not None and n0 is not None:
            half = max(half, tq(level, n0 - 1) * stage_se)
        return centre - half - down, centre + half + up

    low, high = at(confidence)
    method = "delta-t" + ("+stage-1" if stage_se is not None else "")
    if down + up > 1e-9:
        method += "+resolution"
    # p-value in closed form: the (1 − α) interval excludes 0 once every half-width is below the gap
    gap = centre - down if centre - down > 0 else -(centre + up)
    p = 1.0
    if gap > 0:
        p = 2 * float(special.stdtr(n - 1, -gap / se)) if se > 0 else 0.0
        if stage_se is not None and n0 is not None:
            p = max(p, 2 * float(special.stdtr(n0 - 1, -gap / stage_se)) if stage_se > 0 else 0.0)
    return PairedInterval(mv / mb, math.exp(low), math.exp(high), method, n, p_value=min(1.0, p), at=at)


def _t_ppf(level: float, dof: int) -> float:
    return float(special.stdtrit(dof, 0.5 + level / 2))  # sps.t.ppf, without its per-call overhead
