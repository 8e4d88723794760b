"""`nearmetal export`: tidy CSV/JSON/JSON lines/Parquet (one row per trial × metric) and OpenMetrics text
that a real OpenMetrics parser accepts."""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
from pathlib import Path

import pytest
from report_data import SyntheticCell, write_run

import nearmetal
from nearmetal.metrics import Metric
from nearmetal.report.export import (
    csv_cell,
    metric_family,
    metric_family_name,
    rows_for,
    tidy_rows,
    to_csv,
    to_json,
    to_openmetrics,
    to_textfile,
)
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


def test_csv_cells_that_start_like_a_formula_are_text(tmp_path: Path) -> None:
    # OWASP CSV injection: a plan's value or a variant name that starts with = + - @ (or tab/CR) must not run
    # as a formula in a spreadsheet; a negative number stays a number
    rows = [
        {"a": '=HYPERLINK("http://x","y")', "b": "+cmd|' /C calc'!A0", "c": "-1.5", "d": -2.0},
        {"a": "@SUM(A1)", "b": "\tx", "c": "\rx", "d": "-x"},
        {"a": "plain", "b": ["=1+1"], "c": None, "d": "1e-3"},
    ]
    text = to_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert parsed[0] == {
        "a": '\'=HYPERLINK("http://x","y")',
        "b": "'+cmd|' /C calc'!A0",
        "c": "-1.5",
        "d": "-2.0",
    }
    assert parsed[1] == {"a": "'@SUM(A1)", "b": "'\tx", "c": "'\rx", "d": "'-x"}
    assert parsed[2] == {"a": "plain", "b": '["=1+1"]', "c": "", "d": "1e-3"}
    assert csv_cell("-7") == "-7" and csv_cell(-7) == -7 and csv_cell("-inf") == "-inf"


def test_csv_and_json_have_utc_times_and_real_booleans(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    cells = [SyntheticCell("w", v, baseline=v == "a") for v in ("a", "b")]
    run_id = write_run(
        store,
        cells,
        lambda c, r, rng: [
            Metric("wall_s", (1.0 if c.variant == "a" else 1.5) + rng.normal(0, 0.01), "s", "lower")
        ],
        repeats=4,
    )
    results = nearmetal.load_results(run_id, store=store)
    trials = json.loads(to_json(rows_for([results])))
    started = datetime.datetime.fromisoformat(trials[0]["started_at"])
    assert started.utcoffset() == datetime.timedelta(0)
    assert started.timestamp() == pytest.approx(results.trials[0].started_at, abs=1e-5)
    losses = json.loads(to_json(rows_for([results], "losses")))
    compared = next(r for r in losses if r["variant"] == "b")
    assert compared["significant"] is True and isinstance(compared["hierarchical"], bool)
    assert isinstance(compared["loss_pct"], float) and compared["loss_pct"] == pytest.approx(50, abs=5)
    for key in ("check_low_pct", "check_high_pct"):
        assert compared.get(key) is None or isinstance(compared[key], float)
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows_for([results], "losses")))))
    assert next(r for r in parsed if r["variant"] == "b")["significant"] == "True"
    first = next(csv.DictReader(io.StringIO(to_csv(rows_for([results])))))
    assert first["started_at"].endswith("+00:00")


def test_every_pct_metric_becomes_a_ratio_in_openmetrics() -> None:
    # the README: % becomes a ratio; the contention metrics' units are "% of one CPU", "% of CPU time"
    outside = metric_family("outside_cpu_pct", "% of one CPU")
    assert (outside.name, outside.unit, outside.factor) == (
        "nearmetal_trial_outside_cpu_ratio",
        "ratio",
        0.01,
    )
    assert metric_family("steal_pct", "% of CPU time").name == "nearmetal_trial_steal_ratio"
    assert metric_family("throttled_pct", "%").name == "nearmetal_trial_throttled_ratio"


def test_openmetrics_has_one_series_per_cell_not_per_trial(tmp_path: Path) -> None:
    parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    cells = [SyntheticCell("w", v, baseline=v == "a") for v in ("a", "b")]
    run_id = write_run(store, cells, lambda c, r, rng: [Metric("wall_s", 1.0, "s", "lower")], repeats=5)
    results = nearmetal.load_results(run_id, store=store)
    families = {f.name: f for f in parser.text_string_to_metric_families(to_openmetrics([results]))}
    wall = families["nearmetal_trial_wall_seconds"].samples
    assert len(wall) == 10 and not any({"trial", "repeat"} & set(s.labels) for s in wall)
    series: dict[tuple, list[float]] = {}
    for s in wall:
        series.setdefault(tuple(sorted(s.labels.items())), []).append(float(s.timestamp))
    assert len(series) == 2
    for stamps in series.values():  # contiguous and strictly increasing: what a backfill needs
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # the textfile has no timestamps: there each trial keeps its own labels
    assert 'trial="' in to_textfile([results])
