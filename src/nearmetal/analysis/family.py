"""Family-wise control over the rows of a metric a reader reads together: Holm's step-down verdicts and
Bonferroni's simultaneous intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from scipy import stats as sps

from nearmetal.analysis.loss import LossEstimate, loss_bounds
from nearmetal.analysis.paired import p_value_of


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
            f_low, f_high = loss_bounds(math.exp(log_bounds[0]), math.exp(log_bounds[1]), est.direction)
        out[i] = replace(
            est, p_value=p, family=k, family_significant=rejecting, family_low=f_low, family_high=f_high
        )
    return out
