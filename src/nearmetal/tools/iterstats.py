"""Robust statistics of one trial's iterations (round trips, ping-pongs): percentiles and bimodality.

Standard library only: the measuring programs (``nearmetal.tools.tcprr``, ``nearmetal.tools.osu``) import it.

Why: on a shared host a busy-polling MPI rank (or a TCP client) that loses its CPU for a scheduler time slice
turns a few-µs round trip into a few-ms one. A trial's iterations then fall into two groups three orders of
magnitude apart, and their mean says more about how many iterations were unlucky than about the path. The
median (and p99 for the tail) of the iterations is the latency; ``bimodality`` says when there were two
groups, how far apart and how large the slow one was.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Sequence

# two groups count as two modes when the slow one holds at least this fraction of the iterations...
MIN_MODE_FRACTION = 0.01
# ...nothing lies between them over at least this factor (an empty gap, in log space)...
MIN_GAP_RATIO = 2.0
# ...and their medians are at least this factor apart
MIN_MODE_RATIO = 4.0
# the widest gaps tried as the split (each costs a few percentiles)
CANDIDATE_GAPS = 16


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bimodality(
    sorted_values: Sequence[float],
    min_fraction: float = MIN_MODE_FRACTION,
    min_gap: float = MIN_GAP_RATIO,
    min_ratio: float = MIN_MODE_RATIO,
) -> dict[str, float]:
    """Whether sorted positive values form two groups far apart.

    A split counts when it leaves at least ``min_fraction`` of the values on each side, the empty gap there
    (the ratio of the two values either side of it) is at least ``min_gap`` and wider than the middle half
    of either group (its p75/p25: a continuous spread such as 1…100 has no gap that wide), and the two
    groups' medians are at least ``min_ratio`` apart. Of the widest gaps, the one that clears its groups'
    spread by the largest factor is taken. Returns ``bimodal`` (1.0 or 0.0), ``slow_pct`` (% of values in
    the slow group), ``mode_ratio`` (slow median / fast median) and the two medians ``fast`` and ``slow``
    (for one mode: the median both times, ``slow_pct`` 0 and ``mode_ratio`` 1).
    """
    n = len(sorted_values)
    median = percentile(sorted_values, 50)
    one = {"bimodal": 0.0, "slow_pct": 0.0, "mode_ratio": 1.0, "fast": median, "slow": median}
    k_min = max(1, math.ceil(min_fraction * n))
    if n < 2 * k_min or sorted_values[0] <= 0:
        return one
    gaps = ((sorted_values[k] / sorted_values[k - 1], k) for k in range(k_min, n - k_min + 1))
    best: tuple[float, int] | None = None
    for gap, k in heapq.nlargest(CANDIDATE_GAPS, gaps):
        if gap < min_gap:
            break
        fast, slow = sorted_values[:k], sorted_values[k:]
        spread = max(percentile(fast, 75) / percentile(fast, 25), percentile(slow, 75) / percentile(slow, 25))
        if gap > spread and percentile(slow, 50) / percentile(fast, 50) >= min_ratio:
            margin = gap / spread
            if best is None or margin > best[0]:
                best = (margin, k)
    if best is None:
        return one
    k = best[1]
    fast_median, slow_median = percentile(sorted_values[:k], 50), percentile(sorted_values[k:], 50)
    return {
        "bimodal": 1.0,
        "slow_pct": 100.0 * (n - k) / n,
        "mode_ratio": slow_median / fast_median,
        "fast": fast_median,
        "slow": slow_median,
    }


def summarize(values: Sequence[float]) -> dict[str, float]:
    """mean, stdev, min, max, p50, p90, p99, p99_9 and the bimodality fields of ``values`` (any order)."""
    v = sorted(values)
    if not v:
        return {}
    out = {
        "n": float(len(v)),
        "mean": statistics.fmean(v),
        "stdev": statistics.stdev(v) if len(v) > 1 else 0.0,
        "min": v[0],
        "max": v[-1],
        "p50": percentile(v, 50),
        "p90": percentile(v, 90),
        "p99": percentile(v, 99),
        "p99_9": percentile(v, 99.9),
    }
    modes = bimodality(v)
    out.update(bimodal=modes["bimodal"], slow_pct=modes["slow_pct"], mode_ratio=modes["mode_ratio"])
    return out
