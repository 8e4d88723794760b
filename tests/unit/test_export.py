"""`nearmetal export`: tidy CSV/JSON/JSON lines/Parquet (one row per trial × metric) and OpenMetrics text
that a real OpenMetrics parser accepts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from report_data import SyntheticCell, write_run

import nearmetal
from nearmetal.metrics import Metric
from nearmetal.report.export import metric_family_name, tidy_rows, to_openmetrics
from nearmetal.store import Store


def test_openmetrics_parses_with_a_real_parser(tmp_path: Path) -> None:
    parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    cells = [
        SyntheticCell("io", v, {"path": 'dir "x"\\y\nz', "clients": 8}, baseline=v == "native")
        for v in ("native", "fuse")
    ]

    def metrics(cell: SyntheticCell, repeat: int, rng) -> list[Metric]:
        bw = (1000 if cell.variant == "native" else 600) * rng.normal(1, 0.02)
        return [
            Metric("bw_MiBps", bw, "MiB/s", "higher"),
            Metric("ops_total", 5.0, "", "higher"),  # a name OpenMetrics reserves for counters
            Metric("odd metric-name", float("inf"), "", "lower"),
        ]

    run_id = write_run(store, cells, metrics, repeats=4)
    # intervals for bw_MiBps too (by default only the workload's primary metric, wall_s here, gets them)
    results = nearmetal.load_results(run_id, store=store).with_intervals("bw_MiBps")
    text = to_openmetrics([results])
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    bw = families["nearmetal_trial_bw_bytes_per_second"]  # MiB/s in base units, nearmetal's name a label
    assert bw.type == "gauge" and bw.unit == "bytes_per_second" and len(bw.samples) == 8
    sample = bw.samples[0]
    assert sample.labels["point"] == 'clients=8,path=dir "x"\\y\nz'  # escaped and parsed back intact
    assert sample.labels["metric"] == "bw_MiBps"
    assert 600 * 2**20 * 0.8 < sample.value < 1000 * 2**20 * 1.2
    # every sample has a timestamp: a backfill refuses one without
    assert all(s.timestamp is not None for f in families.values() for s in f.samples)
    assert metric_family_name("ops_total") == "nearmetal_trial_ops_total_value" in families
    odd = families["nearmetal_trial_odd_metric_name"]
    assert all(math.isinf(s.value) for s in odd.samples)
    loss = {
        s.labels["bound"]: s.value
        for s in families["nearmetal_loss_ratio"].samples
        if s.labels["metric"] == "bw_MiBps"
    }
    assert loss["low"] <= loss["estimate"] <= loss["high"]
    assert loss["estimate"] == pytest.approx(0.4, abs=0.05)
    assert families["nearmetal_loss_ratio"].unit == "ratio"
    info = families["nearmetal_run"]
    assert info.type == "info" and info.samples[0].labels["run"] == run_id


def test_a_trial_without_metrics_still_has_a_row(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    cells = [SyntheticCell("w", "a", baseline=True)]
    run_id = write_run(
        store, cells, lambda c, r, rng: [] if r == 1 else [Metric("wall_s", 1.0, "s", "lower")], repeats=3
    )
    rows = tidy_rows(nearmetal.load_results(run_id, store=store))
    assert [r["metric"] for r in rows] == ["wall_s", None, "wall_s"]
