"""The noise floor: a ratio of low quantiles of the cells' trials, beside the ratio of means (no I/O).

Interference on a shared host mostly *adds* time to a trial (a neighbour's burst, a migration, a page-cache
miss): it raises a cell's mean by about the same seconds whatever the cell's own work, which pulls a ratio of
means toward 1 (issue 28, item 7). The fastest trials of each cell are the least disturbed, so the ratio of
low quantiles — the ratio of the *best-case times*, not of the means — sits closer to the ratio of the work
itself. That is a different quantity from the table's default loss, and the table says which one it shows
(``analysis.statistic: floor``).

The floor of a cell is its ``FLOOR_QUANTILE`` quantile (linear interpolation between order statistics,
numpy's default), the loss is floor(variant)/floor(baseline) read as a time or a rate, and the interval is a
bootstrap over blocks: a paired run resamples whole blocks (both cells' trials of a block together, so what a
block shares stays shared), an unpaired one each cell's trials on their own; percentile interval on the log
scale, its bounds moved out from the estimate by Hesterberg's small-sample expansion (``expansion``; without
it about 92% coverage at 10 blocks in a check of 300 experiments), reproducible from the run's seed. A
bootstrap of an extreme order statistic is not to be trusted with few values (it can never go below the
sample's minimum), so below ``FLOOR_MIN_BLOCKS`` blocks there is no interval, and the row says why.
``benchmarks/validity.py --statistic floor`` measures its coverage of the
true ratio of the quantiles (docs/validity.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

from nearmetal.analysis.bootstrap import Interval, Sample
from nearmetal.analysis.loss import LossEstimate
from nearmetal.analysis.paired import PairedInterval, p_value_of, t_quantile

# the cell's floor: this quantile of its trials (the 10th percentile; the minimum itself has no population
# value a bootstrap can reach)
FLOOR_QUANTILE = 0.10
# fewer blocks (or trials a side, unpaired) give no interval: the bootstrap of a low quantile under-covers
# (measured: 86% at 10 blocks when the variant is 3× noisier than the baseline; docs/validity.md)
FLOOR_MIN_BLOCKS = 20
# replicates of the floor bootstrap (unpaired and own intervals: the plan's bootstrap_resamples when smaller)
FLOOR_RESAMPLES = 4000
# at most this many (replicate × value) entries in memory at once
MAX_ENTRIES = 4_000_000


def floor_of(values: np.ndarray) -> float:
    """A cell's floor: its ``FLOOR_QUANTILE`` quantile."""
    v = np.asarray(values, dtype=float)
    return float(np.quantile(v, FLOOR_QUANTILE)) if v.size else float("nan")


def _quantiles(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The floor of each resample (rows of ``index`` into ``values``), from counts: a resample's k-th
    smallest value is the sorted sample's value where the counts, in sorted order, first add up to k (no
    sort per resample). Linear interpolation between order statistics, as ``np.quantile``."""
    n = values.size
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    h = (n - 1) * FLOOR_QUANTILE
    k = math.floor(h)
    frac = h - k
    out = np.empty(index.shape[0])
    rows = max(1, MAX_ENTRIES // max(1, n))
    for start in range(0, index.shape[0], rows):
        chunk = index[start : start + rows]
        r = chunk.shape[0]
        flat = (chunk + (np.arange(r, dtype=np.int64) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=r * n).reshape(r, n)[:, order]
        cum = np.cumsum(counts, axis=1)
        lo = np.argmax(cum >= k + 1, axis=1)
        hi = np.argmax(cum >= min(k + 2, n), axis=1)
        out[start : start + r] = ordered[lo] + frac * (ordered[hi] - ordered[lo])
    return out


def _sorted_quantile(ordered: np.ndarray, level: float) -> float:
    """``np.quantile`` of an already sorted array (no partition: the p-value's bisection asks often)."""
    h = (ordered.size - 1) * level
    k = min(math.floor(h), ordered.size - 1)
    k1 = min(k + 1, ordered.size - 1)
    return float(ordered[k] + (h - k) * (ordered[k1] - ordered[k]))


def _resolution_shifts(fv: float, fb: float, resolution: float) -> tuple[float, float]:
    """(down, up) on the log scale: each floor can be off by half a quantum when the values are rounded."""
    if resolution <= 0:
        return 0.0, 0.0
    h = resolution / 2
    bv, bb = min(h, 0.999 * fv), min(h, 0.999 * fb)
    down = -math.log1p(-bv / fv) + math.log1p(bb / fb)
    up = math.log1p(bv / fv) - math.log1p(-bb / fb)
    return down, up


def expansion(n: int, confidence: float) -> float:
    """How far the percentile bounds move out from the estimate with n units (Hesterberg's small-sample
    expansion, as ``bootstrap.expansion_factors``: a bootstrap spreads like a plug-in variance with normal
    tails): sqrt(n / (n − 1)) · t(n−1) / z. 1.22 at 10 blocks, 1.10 at 20, 1.01 at 100."""
    if n < 2:
        return math.inf
    z = float(special.ndtri(0.5 + confidence / 2))
    return math.sqrt(n / (n - 1)) * t_quantile(confidence, n - 1) / z


def _interval_from_replicates(
    estimate: float,
    log_reps: np.ndarray,
    confidence: float,
    method: str,
    n: int,
    shifts: tuple[float, float],
) -> PairedInterval:
    reps = np.sort(log_reps[np.isfinite(log_reps)])
    if reps.size < 100:
        return PairedInterval(estimate, None, None, "none", n, "the floor bootstrap was degenerate")
    down, up = shifts
    centre = math.log(estimate)

    def at(level: float) -> tuple[float, float]:
        a = (1 - level) / 2
        lo, hi = _sorted_quantile(reps, a), _sorted_quantile(reps, 1 - a)
        f = expansion(n, level)
        return centre - f * max(0.0, centre - float(lo)) - down, centre + f * max(
            0.0, float(hi) - centre
        ) + up

    low, high = at(confidence)
    if down + up > 1e-9:
        method += "+resolution"
    p = p_value_of(at, confidence)
    return PairedInterval(estimate, math.exp(low), math.exp(high), method, n, p_value=p, at=at)


def paired_floor_interval(
    variant: np.ndarray,
    baseline: np.ndarray,
    confidence: float = 0.95,
    resolution: float = 0.0,
    seed: int = 0,
    resamples: int = FLOOR_RESAMPLES,
) -> PairedInterval:
    """Interval for floor(variant)/floor(baseline) from one value of each per block: a bootstrap over blocks
    (a block's two values stay together), percentile on the log scale."""
    v = np.asarray(variant, dtype=float)
    b = np.asarray(baseline, dtype=float)
    keep = np.isfinite(v) & np.isfinite(b) & (v > 0) & (b > 0)
    v, b = v[keep], b[keep]
    n = int(v.size)
    if n == 0:
        return PairedInterval(float("nan"), None, None, "none", 0, "no block has both trials")
    fv, fb = floor_of(v), floor_of(b)
    estimate = fv / fb
    if n < FLOOR_MIN_BLOCKS:
        why = f"a floor interval needs ≥ {FLOOR_MIN_BLOCKS} blocks ({n} so far)"
        return PairedInterval(estimate, None, None, "none", n, why)
    rng = np.random.default_rng([seed, n, 7])
    index = rng.integers(0, n, (min(resamples, FLOOR_RESAMPLES), n))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_reps = np.log(_quantiles(v, index)) - np.log(_quantiles(b, index))
    shifts = _resolution_shifts(fv, fb, resolution)
    return _interval_from_replicates(estimate, log_reps, confidence, "floor-bootstrap", n, shifts)


def unpaired_floor_interval(
    variant: np.ndarray,
    baseline: np.ndarray,
    confidence: float = 0.95,
    resolution: float = 0.0,
    seed: int = 0,
    resamples: int = FLOOR_RESAMPLES,
) -> Interval:
    """Interval for floor(variant)/floor(baseline) of two independent samples: each resampled on its own."""
    v = np.asarray(variant, dtype=float)
    b = np.asarray(baseline, dtype=float)
    v, b = v[np.isfinite(v) & (v > 0)], b[np.isfinite(b) & (b > 0)]
    if v.size == 0 or b.size == 0:
        return Interval(float("nan"), None, None, "none", "no positive values")
    fv, fb = floor_of(v), floor_of(b)
    smaller = min(v.size, b.size)
    if smaller < FLOOR_MIN_BLOCKS:
        why = f"a floor interval needs ≥ {FLOOR_MIN_BLOCKS} trials a side ({smaller} so far)"
        return Interval(fv / fb, None, None, "none", why)
    count = min(resamples, FLOOR_RESAMPLES)
    rng_v = np.random.default_rng([seed, v.size, 8])
    rng_b = np.random.default_rng([seed, b.size, 9])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_reps = np.log(_quantiles(v, rng_v.integers(0, v.size, (count, v.size)))) - np.log(
            _quantiles(b, rng_b.integers(0, b.size, (count, b.size)))
        )
    shifts = _resolution_shifts(fv, fb, resolution)
    iv = _interval_from_replicates(fv / fb, log_reps, confidence, "floor-bootstrap", smaller, shifts)
    return Interval(iv.estimate, iv.low, iv.high, iv.method, iv.reason)


def own_floor_interval(
    values: np.ndarray, confidence: float = 0.95, seed: int = 0, resamples: int = FLOOR_RESAMPLES
) -> Interval:
    """Interval of one cell's floor (a cell nothing is compared with): bootstrap percentile."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    est = floor_of(v)
    if v.size < FLOOR_MIN_BLOCKS:
        return Interval(est, None, None, "none", f"a floor interval needs ≥ {FLOOR_MIN_BLOCKS} trials")
    rng = np.random.default_rng([seed, v.size, 10])
    reps = _quantiles(v, rng.integers(0, v.size, (min(resamples, FLOOR_RESAMPLES), v.size)))
    a = (1 - confidence) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    return Interval(est, float(lo), float(hi), "floor-bootstrap")


def shown_value(mean: float, median: float, values: np.ndarray, statistic: str) -> float:
    """The value a table shows for a cell beside its loss: its mean, median or floor."""
    if statistic == "median":
        return median
    if statistic == "floor":
        return floor_of(values)
    return mean


def statistic_label(statistic: str) -> str:
    """What a table's value column holds when it is not the mean: ' (median)', ' (floor: 10th pct)'."""
    if statistic == "median":
        return " (median)"
    if statistic == "floor":
        return f" (floor: {FLOOR_QUANTILE * 100:.0f}th pct)"
    return ""


# --- as the table's losses --------------------------------------------------------------------------------


def _estimate(
    iv: PairedInterval | Interval,
    direction: str,
    confidence: float,
    design: str,
    hierarchical: bool,
    note: str,
    resolution: float,
) -> LossEstimate:
    """A floor interval as the table's loss (bounds swap for a higher-is-better metric)."""
    point = iv.estimate - 1.0 if direction == "lower" else 1.0 - iv.estimate
    pairs = iv.pairs if isinstance(iv, PairedInterval) and design == "paired" else 0
    if iv.low is None or iv.high is None:
        return LossEstimate(
            point, None, None, confidence, "none", "floor", reason=iv.reason, hierarchical=hierarchical,
            design=design, pairs=pairs, direction=direction, note=note, resolution=resolution,
        )  # fmt: skip
    low, high = (iv.low - 1.0, iv.high - 1.0) if direction == "lower" else (1.0 - iv.high, 1.0 - iv.low)
    p_value = iv.p_value if isinstance(iv, PairedInterval) else None
    at = iv.at if isinstance(iv, PairedInterval) else None
    return LossEstimate(
        point, low, high, confidence, iv.method, "floor", hierarchical=hierarchical, design=design,
        pairs=pairs, direction=direction, note=note, resolution=resolution, p_value=p_value, at=at,
    )  # fmt: skip


def paired_floor_losses(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    directions: Sequence[str],
    confidence: float = 0.95,
    hierarchical: Sequence[bool] | None = None,
    notes: Sequence[str] | None = None,
    resolutions: Sequence[float] | None = None,
    seed: int = 0,
) -> list[LossEstimate]:
    """``stats.paired_loss_intervals`` with ``statistic="floor"``: losses from the ratio of floors."""
    out = []
    for i, ((v, b), direction) in enumerate(zip(pairs, directions, strict=True)):
        q = float(resolutions[i]) if resolutions is not None else 0.0
        iv = paired_floor_interval(
            np.asarray(v, dtype=float), np.asarray(b, dtype=float), confidence, q, seed
        )
        nested = bool(hierarchical[i]) if hierarchical is not None else False
        out.append(_estimate(iv, direction, confidence, "paired", nested, notes[i] if notes else "", q))
    return out


def unpaired_floor_losses(
    variants: Sequence[Sample],
    baselines: Sequence[Sample],
    directions: Sequence[str],
    confidence: float = 0.95,
    resamples: int = FLOOR_RESAMPLES,
    seed: int = 0,
    notes: Sequence[str] | None = None,
    resolutions: Sequence[float] | None = None,
) -> list[LossEstimate]:
    """``stats.loss_intervals`` with ``statistic="floor"``: every trial of each side (a trial with several
    values counts as its mean), resampled independently."""
    out = []
    for i, (vs, bs, direction) in enumerate(zip(variants, baselines, directions, strict=True)):
        q = float(resolutions[i]) if resolutions is not None else 0.0
        iv = unpaired_floor_interval(vs.trial_means(), bs.trial_means(), confidence, q, seed, resamples)
        nested = vs.hierarchical or bs.hierarchical
        out.append(_estimate(iv, direction, confidence, "unpaired", nested, notes[i] if notes else "", q))
    return out
