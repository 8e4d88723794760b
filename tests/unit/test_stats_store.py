"""The columnar read of a run (SQL into numpy) gives the same analysis on SQLite and PostgreSQL, including
metrics with several values per trial, and the same as the row-by-row reader it replaces."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from report_data import SyntheticCell, write_run

import nearmetal
from nearmetal.analysis import analyse
from nearmetal.metrics import Metric
from nearmetal.store import Store

CELLS = [SyntheticCell("w", v, {"n": n}, baseline=v == "base") for n in (1, 2) for v in ("base", "slow")]


def epochs(cell: SyntheticCell, repeat: int, rng: np.random.Generator) -> list[Metric]:
    level = (1.2 if cell.variant == "slow" else 1.0) * cell.point["n"] * rng.normal(1, 0.05)
    count = 4 + repeat % 2  # unequal numbers of values per trial take the general two-level path
    return [
        Metric.series("epoch_s", list(level * rng.normal(1, 0.01, count)), "s", "lower"),
        Metric("wall_s", level * count + 0.3, "s", "lower", "telemetry"),
        Metric("rss_MiB", float(rng.normal(100, 5)), "MiB", "lower", "telemetry"),
    ]


PLAN = {
    "name": "epochs",
    "workloads": {"w": {"kind": "command"}},
    "variants": {"base": [], "slow": []},
    "baseline": "base",
    "analysis": {"primary_metric": {"w": "epoch_s"}, "bootstrap_resamples": 999},
}


def test_same_numbers_on_sqlite_and_postgresql(tmp_path: Path, fresh_postgres_url: str) -> None:
    tables, variances = [], []
    for url in (f"sqlite:///{tmp_path / 's.db'}", fresh_postgres_url):
        store = Store(url)
        run_id = write_run(store, CELLS, epochs, repeats=6, run_id="epochs-run", plan=PLAN, seed=2)
        results = nearmetal.load_results(run_id, store=store)
        tables.append(results.table())
        variances.append([(r.cell.cell_id, r.var_within, r.var_between) for r in results.variance_rows()])
        store.dispose()
    assert tables[0] == tables[1]
    assert [v[0] for v in variances[0]] == [v[0] for v in variances[1]]
    assert [v[1:] for v in variances[0]] == [pytest.approx(v[1:]) for v in variances[1]]
    slow = [r for r in tables[0] if r["variant"] == "slow"]
    assert all(r["hierarchical"] and r["ci_low_pct"] < 20 < r["ci_high_pct"] for r in slow)


def test_columnar_read_matches_the_row_reader(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    run_id = write_run(store, CELLS, epochs, repeats=5, plan=PLAN, seed=4)
    results = nearmetal.load_results(run_id, store=store)
    columnar = analyse(store.measured_table(run_id), results.cells, resamples=999, seed=1)
    rows = analyse(store.metric_table(run_id), results.cells, resamples=999, seed=1)
    assert set(columnar.metrics) == set(rows.metrics)
    for key, cm in columnar.metrics.items():
        other = rows.metrics[key]
        assert cm.summary.n == other.summary.n and math.isclose(cm.summary.mean, other.summary.mean)
        assert cm.unit == other.unit and cm.direction == other.direction
    # the columnar reader also brings the values within trials: two levels and variance components
    cell = next(c for c in results.cells if c.variant == "slow")
    assert columnar.metric(cell.cell_id, "epoch_s").sample.hierarchical
    assert columnar.metric(cell.cell_id, "epoch_s").variance.trials == 5
    assert rows.metric(cell.cell_id, "epoch_s").variance is None
    # a metric that got no interval up front gets one when asked for
    assert columnar.comparison(cell.cell_id, "rss_MiB") is not None
    store.dispose()


def test_a_metric_missing_from_the_first_trials_is_still_read(tmp_path: Path) -> None:
    """Names are coded from each cell's first trial; a metric (or a series) first seen later is found too."""

    def late(cell: SyntheticCell, repeat: int, rng: np.random.Generator) -> list[Metric]:
        out = [Metric("wall_s", float(rng.normal(10, 1)), "s", "lower")]
        if repeat >= 2:
            out.append(Metric("late_MiB", float(rng.normal(5, 1)), "MiB", "lower"))
            out.append(Metric.series("iter_s", [1.0, 1.1, 0.9], "s", "lower"))
        return out

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    run_id = write_run(store, CELLS, late, repeats=4, seed=1)
    table = store.measured_table(run_id)
    assert set(table.names) == {"wall_s", "late_MiB", "iter_s"}
    assert (table.metric_code >= 0).all() and table.series_value.size == 4 * 2 * 3
    results = nearmetal.load_results(run_id, store=store)
    cell = results.cells[0]
    assert results.analysis.metric(cell.cell_id, "late_MiB").summary.n == 2
    assert results.analysis.metric(cell.cell_id, "late_MiB").unit == "MiB"
    store.dispose()
