"""``analysis.statistic: floor`` (issue 28, item 7): the ratio of the cells' 10th percentiles — the best-case
times — with a bootstrap interval over blocks, beside the ratio of means. benchmarks/validity.py
``--statistic floor`` measures its coverage at scale (docs/validity.md); here: what it estimates, that it
says so, and that it reads through additive interference where the mean ratio is pulled toward 1."""

from __future__ import annotations

import numpy as np
import pytest
from measured import cell_infos as _cells
from measured import measured_table as _table

from nearmetal.analysis import analyse
from nearmetal.analysis.floor import (
    FLOOR_MIN_BLOCKS,
    FLOOR_QUANTILE,
    _quantiles,
    paired_floor_interval,
)
from nearmetal.analysis.loss import LossEstimate, describe_loss
from nearmetal.plan import parse_plan_text


def test_the_resampled_floors_are_numpys_quantiles() -> None:
    rng = np.random.default_rng(1)
    for n in (10, 11, 37, 100):
        values = rng.lognormal(size=n)
        index = rng.integers(0, n, (200, n))
        expected = np.quantile(values[index], FLOOR_QUANTILE, axis=1)
        assert np.allclose(_quantiles(values, index), expected)


def test_the_floor_is_the_ratio_of_10th_percentiles_and_the_table_says_so() -> None:
    rng = np.random.default_rng(2)
    base = (1 + 0.1 * rng.standard_normal(24)).tolist()
    var = (1.3 * (1 + 0.1 * rng.standard_normal(24))).tolist()
    est = analyse(_table({"base": base, "v": var}), _cells("base", "v"), statistic="floor")
    loss = est.comparison("v", "m").loss
    assert loss.statistic == "floor" and loss.method == "floor-bootstrap" and loss.design == "paired"
    assert loss.loss == pytest.approx(np.quantile(var, 0.1) / np.quantile(base, 0.1) - 1)
    assert loss.low < loss.loss < loss.high
    assert "(floors)" in describe_loss(loss)
    # reproducible: the bootstrap is seeded by the run's seed
    again = analyse(_table({"base": base, "v": var}), _cells("base", "v"), statistic="floor")
    assert again.comparison("v", "m").loss.low == loss.low
    # few blocks: no interval, and why
    few = analyse(_table({"base": base[:6], "v": var[:6]}), _cells("base", "v"), statistic="floor")
    short = few.comparison("v", "m").loss
    assert short.low is None and f"≥ {FLOOR_MIN_BLOCKS} blocks" in short.reason
    # unpaired (sequential order): each side's trials resampled on their own
    apart = analyse(_table({"base": base, "v": var}), _cells("base", "v"), statistic="floor", paired=False)
    assert apart.comparison("v", "m").loss.design == "unpaired"
    assert apart.comparison("v", "m").loss.statistic == "floor"


def test_the_floor_reads_through_additive_interference_that_pulls_the_mean_ratio_toward_1() -> None:
    """1.0 s against 1.5 s of work, CV 2%; in 40% of trials a neighbour adds 0.5–1.5 s. The ratio of means
    sits near (1.5 + 0.4)/(1 + 0.4) = 1.36, with an interval as wide as the interference is variable; the
    floor sits near the work's 1.5, covers it, and is narrower."""
    rng = np.random.default_rng(3)
    n = 30

    def trials(work: float) -> list[float]:
        hit = rng.random(n) < 0.4
        return (work * (1 + 0.02 * rng.standard_normal(n)) + hit * rng.uniform(0.5, 1.5, n)).tolist()

    values = {"base": trials(1.0), "v": trials(1.5)}
    mean = analyse(_table(values), _cells("base", "v")).comparison("v", "m").loss
    floor = analyse(_table(values), _cells("base", "v"), statistic="floor").comparison("v", "m").loss
    assert floor.low is not None and floor.high is not None and floor.low <= 0.5 <= floor.high
    assert abs(floor.loss - 0.5) < 0.05 < abs(mean.loss - 0.5)
    assert floor.half_width < mean.half_width, (floor, mean)


def test_the_floor_interval_keeps_its_level_at_the_fewest_blocks_it_is_given() -> None:
    rng = np.random.default_rng(4)
    covered, runs = 0, 200
    for _ in range(runs):
        drift = 1 + 0.05 * rng.standard_normal(FLOOR_MIN_BLOCKS)  # what a block shares
        base = drift * np.exp(0.15 * rng.standard_normal(FLOOR_MIN_BLOCKS))
        var = 1.1 * drift * np.exp(0.15 * rng.standard_normal(FLOOR_MIN_BLOCKS))
        iv = paired_floor_interval(var, base)
        assert iv.low is not None and iv.high is not None
        covered += iv.low <= 1.1 <= iv.high
    assert covered / runs >= 0.92, covered


def test_a_plan_may_ask_for_the_floor() -> None:
    plan = parse_plan_text(
        "name: f\nworkloads:\n  w: {kind: command, params: {argv: [/bin/true]}}\n"
        "variants:\n  base: []\n  v: {params: {w.argv: [/bin/true, x]}}\nbaseline: base\n"
        "analysis: {statistic: floor}\n"
    )
    assert plan.plan.analysis.statistic == "floor"


def test_the_method_note_names_the_floor() -> None:
    from nearmetal.report.tables import method_note

    class _Res:
        confidence = 0.95
        statistic = "floor"
        resamples = 999

        class config:
            seed = 0

    rows = [LossEstimate(0.1, 0.05, 0.2, 0.95, "floor-bootstrap", "floor", design="paired", pairs=12)]
    note = method_note(_Res(), "lower", rows)  # type: ignore[arg-type]
    assert "floors" in note and "best-case" in note and "not the means" in note


def test_a_stored_run_with_the_floor_reads_as_floors_in_its_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from report_data import SyntheticCell, write_run

    import nearmetal
    from nearmetal.metrics import Metric
    from nearmetal.report.tables import loss_tables
    from nearmetal.store import Store

    cells = [SyntheticCell("w", v, {}, baseline=v == "base") for v in ("base", "slow")]

    def wall(cell: SyntheticCell, repeat: int, rng: np.random.Generator) -> list[Metric]:
        work = 1.5 if cell.variant == "slow" else 1.0
        return [Metric("wall_s", work * float(rng.normal(1, 0.02)) + 0.5 * (repeat % 3 == 0), "s", "lower")]

    plan = {
        "name": "floor",
        "workloads": {"w": {"kind": "command"}},
        "variants": {"base": [], "slow": []},
        "baseline": "base",
        "analysis": {"statistic": "floor"},
    }
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    run_id = write_run(store, cells, wall, repeats=24, plan=plan, seed=3)
    results = nearmetal.load_results(run_id, store=store)
    (table,) = loss_tables(results)
    assert any("(floor: 10th pct)" in h for h in table.headers)
    assert any("floors" in note and "not the means" in note for note in table.notes)
    slow = next(c for c in results.analysis.comparisons if c.cell.variant == "slow")
    assert slow.loss.statistic == "floor" and slow.loss.low is not None
    assert slow.loss.low <= 0.5 <= slow.loss.high  # the work's ratio, through the added 0.5 s
    store.dispose()
