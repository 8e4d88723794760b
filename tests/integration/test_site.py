"""``nearmetal site DIR``: a static, offline history site over a store of many runs — every run linked to its
report, each cell's loss across runs with its interval — rendered in headless Chromium like the report.
A site of 100 runs shares one copy of plotly's JavaScript and stays small (issue 30: it was 4.6 MB a page)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from report_data import SyntheticCell, write_run

import nearmetal
from nearmetal.metrics import Metric
from nearmetal.store import Store

RUNS = 100
MAX_SITE_BYTES = 25 * 10**6


def test_site_of_a_hundred_runs_with_trends(tmp_path: Path, run_cli, artifacts_dir: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    cells = [
        SyntheticCell("lammps", v, {"ranks": 2}, baseline=v == "bare-metal")
        for v in ("bare-metal", "limit-1.2", "limit-0.8")
    ]
    run_ids = []
    for index in range(RUNS):
        # a platform that regresses: the quota's cost grows run after run
        cost = {"bare-metal": 1.0, "limit-1.2": 1.2 + 0.004 * index, "limit-0.8": 1.6}

        def metrics(cell: SyntheticCell, repeat: int, rng, cost=cost) -> list[Metric]:
            return [Metric("wall_s", 10.0 * cost[cell.variant] * rng.normal(1, 0.01), "s", "lower")]

        run_ids.append(write_run(store, cells, metrics, repeats=4, seed=index))
    site = tmp_path / "site"
    proc = run_cli("site", str(site), "--db", str(store.url), timeout=900, check=True)
    assert f"{RUNS} runs, {RUNS} reports, 1 trend figures" in proc.stderr
    index = (site / "index.html").read_text()
    # one copy of plotly.js for the whole site, every page loading it by a relative path
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    assert size <= MAX_SITE_BYTES, f"the site of {RUNS} runs is {size / 1e6:.1f} MB"
    plotly_js = site / "static" / "plotly.min.js"
    assert plotly_js.stat().st_size > 1e6
    assert '<script type="text/javascript" src="static/plotly.min.js">' in index
    one_report = (site / "runs" / run_ids[0] / "report.html").read_text()
    assert 'src="../../static/plotly.min.js"' in one_report and len(one_report) < 1e6
    for run_id in run_ids:  # every run, linked to its own report
        assert f'href="runs/{run_id}/report.html"' in index
        assert (site / "runs" / run_id / "report.html").is_file()
    figures = json.loads(
        re.search(r'id="nearmetal-figures">(.*?)</script>', index, re.S).group(1).replace("\\u003c", "<")
    )
    trend = {trace["name"]: trace for trace in figures[0]["data"]}
    assert set(trend) == {"limit-1.2 · ranks=2", "limit-0.8 · ranks=2"}
    quota = trend["limit-1.2 · ranks=2"]
    assert len(quota["y"]) == RUNS and quota["x"] == sorted(quota["x"])
    # the trend is the losses of each run's own table, with their intervals
    first = next(
        r for r in nearmetal.load_results(run_ids[0], store=store).table() if r["variant"] == "limit-1.2"
    )
    assert quota["y"][0] == pytest.approx(first["loss_pct"])
    assert quota["error_y"]["arrayminus"][0] == pytest.approx(first["loss_pct"] - first["ci_low_pct"])
    assert quota["y"][-1] > quota["y"][0] + 20  # the regression shows
    from browser import Chromium, chromium_path

    if chromium_path() is None:
        pytest.skip("no Chromium to render the site")
    with Chromium() as browser:
        page = browser.check_page(site / "index.html", screenshot=artifacts_dir / "history-site.png")
        report = browser.check_page(site / "runs" / run_ids[-1] / "report.html")
    assert page.console_errors == [] and page.remote_requests == []
    assert page.plots_rendered == page.svg_plots == 1 and page.plot_traces >= 2
    assert page.tables == 1 and page.page_height > 900
    assert report.console_errors == [] and report.remote_requests == []
    assert report.plots_rendered == report.plot_divs == report.svg_plots >= 1  # every plot drawn
