"""Robust statistics of one trial's iterations (round trips, ping-pongs): percentiles and bimodality.

Standard library only: the measuring programs (``nearmetal.tools.tcprr``, ``nearmetal.tools.osu``) import it.

Why: on a shared host a busy-polling MPI rank (or a TCP client) that loses its CPU for a scheduler time slice
turns a few-µs round trip into a few-ms one. A trial's iterations then fall into two groups three orders of
magnitude apart, and their mean says more about how many iterations were unlucky than about the path. The
median (and p99 for the tail) of the iterations is the latency; ``bimodality`` says when there were two
groups, how far apart and how large the slow one was.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# two groups count as two modes when the slow one holds at least this fraction of the iterations...
MIN_MODE_FRACTION = 0.01
# ...nothing lies between them over at least this factor (an empty gap, in log space)...
MIN_GAP_RATIO = 2.0
# ...and their medians are at least this factor apart
MIN_MODE_RATIO = 4.0


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

    The split is the widest empty gap (as a ratio of consecutive sorted values) that leaves at least
    ``min_fraction`` of the values on each side. It counts as two modes when the gap is at least ``min_gap``
    wide and the two groups' medians are at least ``min_ratio`` apart. Returns ``bimodal`` (1.0 or 0.0),
    ``slow_pct`` (% of values in the slow group), ``mode_ratio`` (slow median / fast median) and the two
    medians ``fast`` and ``slow`` (for one mode: the median both times, ``slow_pct`` 0 and ``mode_ratio`` 1).
    """
    n = len(sorted_values)
    median = percentile(sorted_values, 50)
    one = {"bimodal": 0.0, "slow_pct": 0.0, "mode_ratio": 1.0, "fast": median, "slow": median}
    k_min = max(1, math.ceil(min_fraction * n))
    if n < 2 * k_min or sorted_values[0] <= 0:
        return one
    best_k, best_gap = 0, 1.0
    for k in range(k_min, n - k_min + 1):
        gap = sorted_values[k] / sorted_values[k - 1]
        if gap > best_gap:
            best_k, best_gap = k, gap
    if best_gap < min_gap:
        return one
    fast = percentile(sorted_values[:best_k], 50)
    slow = percentile(sorted_values[best_k:], 50)
    if slow / fast < min_ratio:
        return one
    return {
        "bimodal": 1.0,
        "slow_pct": 100.0 * (n - best_k) / n,
        "mode_ratio": slow / fast,
        "fast": fast,
        "slow": slow,
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
