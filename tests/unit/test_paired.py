"""Paired intervals by block (analysis/paired.py), physical bounds, and the drift reproduction of issue 16."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from measured import cell_infos as _cells
from measured import measured_table as _table

from nearmetal.analysis import Sample, analyse, loss_interval, loss_intervals
from nearmetal.analysis.paired import (
    log_ratio_interval,
    sign_test_depth,
    signed_rank_cdf,
    signed_rank_depth,
    stage_half_width,
    welch_log_interval,
)
from nearmetal.analysis.sharing import ratio_interval


@pytest.mark.parametrize("n", [1, 2, 5, 6, 9, 12])
def test_signed_rank_distribution_counts_every_sign_pattern(n: int) -> None:
    sums = [sum(r for r, sign in zip(range(1, n + 1), signs, strict=True) if sign) for signs in
            itertools.product((0, 1), repeat=n)]  # fmt: skip
    brute = np.cumsum(np.bincount(sums, minlength=n * (n + 1) // 2 + 1)) / 2**n
    np.testing.assert_allclose(signed_rank_cdf(n), brute)


@pytest.mark.parametrize("n", [5, 6, 7, 10, 20, 40])
def test_signed_rank_depth_is_the_deepest_that_keeps_the_level(n: int) -> None:
    k = signed_rank_depth(n, 0.95)
    cdf = signed_rank_cdf(n)
    if n < 6:
        assert k == 0  # five pairs cannot reach 95%: [min, max] covers 93.75%
        return
    assert cdf[k - 1] <= 0.025 < cdf[k]
    # beyond the exact table the normal approximation gives the same depth where both exist
    assert abs(signed_rank_depth(n, 0.95) - k) == 0
    assert sign_test_depth(n, 0.95) >= 1


def test_small_blocks_use_t_and_six_or_more_the_signed_rank_interval() -> None:
    d = np.log([1.10, 1.12, 1.08, 1.11, 1.09])
    five = log_ratio_interval(d)
    assert five.method == "t" and five.pairs == 5 and five.low < 1.10 < five.high
    six = log_ratio_interval(np.append(d, math.log(1.10)))
    assert six.method == "signed-rank" and six.low < six.estimate < six.high
    # the Hodges–Lehmann estimate shrugs off one wild block; the mean of the logs does not
    wild = log_ratio_interval(np.append(np.log([1.10, 1.12, 1.08, 1.11, 1.09, 1.10]), math.log(9.0)))
    assert 1.08 < wild.estimate < 1.13 and wild.low > 1.0
    assert log_ratio_interval(np.log([1.2])).low is None
    # tied log ratios get no exact shortcut (issue 28): the interval their spread gives, moved out by what
    # rounding can do
    tied = log_ratio_interval(np.log([1.2, 1.2, 1.2]), shifts=(0.05, 0.05))
    assert tied.method == "t+resolution" and tied.low < 1.2 < tied.high
    median = log_ratio_interval(np.log([1.10, 1.12, 1.08, 1.11, 1.09, 1.10]), statistic="median")
    assert median.method == "sign-test" and median.low == pytest.approx(1.08)


def test_the_first_stage_widens_an_interval_whose_later_blocks_look_calm() -> None:
    """Stein's interval uses the spread of the first blocks only: a run that stopped once its later blocks
    happened to agree keeps the uncertainty its first stage showed."""
    d = np.log([1.30, 0.90, 1.20, 1.10, 1.10, 1.10, 1.10, 1.10, 1.10, 1.10])
    plain = log_ratio_interval(d)
    staged = log_ratio_interval(d, first_stage=3)
    assert staged.method == "signed-rank+stage-1"
    assert staged.low < plain.low and staged.high > plain.high
    half = stage_half_width(d, 3, 0.95)
    assert half is not None and math.log(staged.high) >= d.mean() + half - 1e-12
    assert stage_half_width(d[:2], 3, 0.95) is None


def test_a_variant_that_stopped_early_is_compared_with_its_own_blocks_only() -> None:
    """The drift case of issue 16: the baseline's later trials ran on a slower machine; an identical
    variant that stopped after 3 blocks must not look faster than them."""
    jitter = [1.004, 0.995, 1.002, 0.997, 1.001] * 4
    drift = [1.01**b * j for b, j in enumerate(jitter)]
    table = _table(
        {"base": drift, "v1": [1.01**b * j for b, j in enumerate([0.998, 1.003, 0.999])]},
        {"base": list(range(20)), "v1": [0, 1, 2]},
        "lower",
    )
    for paired in (True, False):
        comp = analyse(table, _cells("base", "v1"), paired=paired, resamples=2000).comparison("v1", "m")
        assert comp is not None
        assert comp.loss.design == ("paired" if paired else "unpaired")
        assert not comp.loss.significant, comp.loss
        if not paired:
            assert "blocks 0–2" in comp.loss.note
    # what the old analysis did: every baseline trial, a "significant gain"
    old = loss_interval(np.array(drift[:3]), np.array(drift), "lower", resamples=2000)
    assert old.significant and old.loss < 0


def test_incomplete_blocks_fall_back_to_every_trial_and_say_why() -> None:
    table = _table(
        {"base": [1.0, 1.1, 0.9, 1.0, 1.05], "v": [1.2, 1.3, 1.25, 1.2]},
        {"base": [0, 1, 2, 3, 4], "v": [5, 6, 7, 8]},
        "lower",
    )
    comp = analyse(table, _cells("base", "v"), resamples=2000).comparison("v", "m")
    assert comp is not None and comp.loss.design == "unpaired"
    assert "of 4 blocks have a trial of both cells" in comp.loss.note


positive = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(positive, positive), min_size=2, max_size=12),
    st.sampled_from(["lower", "higher"]),
    st.booleans(),
)
def test_no_interval_crosses_what_a_ratio_of_positive_values_allows(
    pairs: list[tuple[float, float]], direction: str, paired: bool
) -> None:
    """A time cannot lose less than −100% (t ≥ 0), a rate cannot lose more than +100% (v ≥ 0): in every
    path — paired, unpaired, small samples, the sharing tables' ratios."""
    base = [b for b, _ in pairs]
    var = [v for _, v in pairs]
    n = len(pairs)
    table = _table({"base": base, "v": var}, {"base": list(range(n)), "v": list(range(n))}, direction)
    estimates = [analyse(table, _cells("base", "v"), paired=paired, resamples=500).comparison("v", "m").loss]
    estimates += loss_intervals([Sample.of(var)], [Sample.of(base)], [direction], resamples=500)
    ratio = ratio_interval(np.array(var), np.array(base), 0.95, 500, 0)
    assert ratio.low is None or ratio.low >= 0
    for est in estimates:
        for bound in (est.low, est.high, est.loss, est.check_low, est.check_high):
            if bound is None or not math.isfinite(bound):
                continue
            if est.direction == "lower":
                assert bound >= -1.0 - 1e-9, est
            else:
                assert bound <= 1.0 + 1e-9, est
    w = welch_log_interval(np.array(var), np.array(base))
    assert w is None or 0 <= w[1] <= w[2]
