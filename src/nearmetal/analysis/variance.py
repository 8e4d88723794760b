"""Levels of variation: variance within a trial and between trials, and the cheapest design (trials × values
per trial) that reaches a target interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from nearmetal.analysis.bootstrap import Sample


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
