"""The history site's trend axes (issue 30): a plan with one run gets a readable date axis (a day either
side), not plotly's zoom to sub-milliseconds; several runs keep plotly's own range."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

from nearmetal.report.site import trend_figures


def _history(starts: list[float]) -> list[tuple[object, list[dict[str, object]]]]:
    row = {"workload": "lammps", "metric": "wall_s", "variant": "limit-0.8", "point": "", "loss_pct": 20.0}
    return [
        (
            SimpleNamespace(name="cpu-quota", id=f"r{i}", started_at=start),
            [{**row, "ci_low_pct": 18.0, "ci_high_pct": 22.0}],
        )
        for i, start in enumerate(starts)
    ]


def test_one_run_gets_a_day_either_side() -> None:
    start = datetime.datetime(2026, 12, 7, 6, 0, tzinfo=datetime.UTC).timestamp()
    [(plan, figure)] = trend_figures(_history([start]))
    assert plan == "cpu-quota"
    low, high = (datetime.datetime.fromisoformat(x) for x in figure["layout"]["xaxis"]["range"])
    assert high - low == datetime.timedelta(days=2)
    assert low < datetime.datetime(2026, 12, 7, 6, 0) < high
    assert figure["data"][0]["y"] == [20.0]


def test_several_runs_keep_plotlys_range() -> None:
    [(_, figure)] = trend_figures(_history([1.8e9, 1.8e9 + 3600]))
    assert "range" not in figure["layout"]["xaxis"]
    assert len(figure["data"][0]["x"]) == 2
