"""The loss figure says which interval it draws (issue 30): a paired run's whiskers are named as the paired
interval, not "BCa bootstrap"; a contended cell's bar is grey and hatched with the reason."""

from __future__ import annotations

from pathlib import Path

from report_data import SyntheticCell, write_run

import nearmetal
from nearmetal.metrics import Metric
from nearmetal.report.figures.core import loss_bars
from nearmetal.report.html import plotly_trace
from nearmetal.store import Store

COST = {"bare-metal": 1.0, "limit-1.2": 1.2, "limit-0.8": 1.6}


def _results(tmp_path: Path, contended: str | None = None) -> nearmetal.Results:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    cells = [SyntheticCell("lammps", v, baseline=v == "bare-metal") for v in COST]

    def fields(cell: SyntheticCell) -> dict:
        busy = 150.0 if cell.variant == contended else 1.0
        return {"placement": {"outside": {"outside_cpu_pct": busy, "top": [{"name": "make", "cpu_s": 9.0}]}}}

    run_id = write_run(
        store,
        cells,
        lambda c, r, rng: [Metric("wall_s", 10 * COST[c.variant] * rng.normal(1, 0.01), "s", "lower")],
        repeats=6,
        trial_fields=fields,
    )
    return nearmetal.load_results(run_id, store=store)


def test_a_paired_run_names_the_paired_interval(tmp_path: Path) -> None:
    [spec] = loss_bars(_results(tmp_path))
    assert "paired interval on the ratio of means (delta method" in spec.caption
    assert "BCa" not in spec.caption and "contended" not in spec.caption
    assert all(s.hatched is None for s in spec.series)


def test_a_contended_cell_is_drawn_grey_and_hatched_with_the_reason(tmp_path: Path) -> None:
    [spec] = loss_bars(_results(tmp_path, contended="limit-0.8"))
    by_name = {s.name: s for s in spec.series}
    assert by_name["limit-0.8"].hatched == [True] and by_name["limit-1.2"].hatched is None
    assert "outside processes used 150% of one CPU" in by_name["limit-0.8"].text[0]
    assert "grey hatched bars: contended cells" in spec.caption
    trace = plotly_trace(by_name["limit-0.8"])
    assert trace["marker"]["pattern"]["shape"] == ["/"] and trace["marker"]["color"] == ["#bdbdbd"]
