"""Loss and its interval: direction-aware, honest about significance (textbook cases)."""

from __future__ import annotations

import numpy as np
import pytest

from nearmetal.analysis import describe_loss, loss_interval, summarize


def test_direction_aware_loss() -> None:
    base = np.array([10.0, 10.0, 10.0])
    slower = np.array([12.0, 12.0, 12.0])
    assert loss_interval(slower, base, "lower").loss == pytest.approx(0.2)  # time: 20% longer
    assert loss_interval(slower, base, "higher").loss == pytest.approx(-0.2)  # throughput: 20% more
    half = np.array([5.0, 5.0, 5.0])
    assert loss_interval(half, base, "higher").loss == pytest.approx(0.5)


def test_interval_contains_true_ratio_and_is_significant() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(100, 2, 20)
    var = rng.normal(80, 2, 20)
    est = loss_interval(var, base, "higher", seed=1)
    assert est.method == "bca"
    assert est.low < 0.2 < est.high
    assert est.significant
    assert describe_loss(est).startswith("costs ") and "95% interval" in describe_loss(est)


def test_overlapping_samples_are_not_significant() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(100, 5, 6)
    var = rng.normal(100, 5, 6)
    est = loss_interval(var, base, "lower", seed=2)
    assert est.low < 0 < est.high
    assert est.significant is False
    assert describe_loss(est).startswith("no significant difference")


def test_interval_agrees_with_scipy() -> None:
    """Same BCa as scipy (exact equality given scipy's draws is in test_stats.py); here: the same interval
    within Monte-Carlo error, without the small-sample expansion."""
    from scipy import stats

    from nearmetal.analysis import Sample, ratio_intervals

    rng = np.random.default_rng(8)
    base, var = rng.normal(50, 3, 12), rng.normal(60, 3, 12)
    ours = ratio_intervals([Sample.of(var)], [Sample.of(base)], resamples=40_000, seed=4, expand=False)[0]
    ref = stats.bootstrap(
        (var, base),
        lambda a, b, axis=-1: a.mean(axis=axis) / b.mean(axis=axis),
        vectorized=True,
        paired=False,
        n_resamples=40_000,
        method="BCa",
        rng=np.random.default_rng(4),
    )
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.003)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.003)
    # the reported interval is wider for 12 trials (t quantiles, unbiased variance), never narrower
    est = loss_interval(var, base, "lower", seed=4)
    assert est.low < ours.low - 1 and est.high > ours.high - 1


def test_too_few_samples_has_no_interval() -> None:
    est = loss_interval(np.array([1.0]), np.array([2.0, 2.1]), "lower")
    assert est.low is None and est.significant is None
    assert "too few" in describe_loss(est)


def test_identical_values_give_an_exact_interval() -> None:
    est = loss_interval(np.array([2.0, 2.0]), np.array([1.0, 1.0]), "lower")
    assert est.method == "exact" and est.low == est.high == pytest.approx(1.0)


def test_summary() -> None:
    s = summarize(np.array([1.0, 2.0, 3.0, 4.0]))
    assert s.n == 4 and s.mean == 2.5 and s.median == 2.5
    assert s.stdev == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s.cv == pytest.approx(s.stdev / 2.5)
