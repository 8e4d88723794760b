"""HTML report, PNG figures and Markdown: built from real runs and real stores, and the HTML opened in a
real headless Chromium (no console errors, every plot drawn, a screenshot kept in test-artifacts/)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from browser import Chromium, chromium_path
from conftest import needs_tool
from helpers import write_plan
from report_data import SyntheticCell, write_run

import nearmetal
from nearmetal.metrics import Metric
from nearmetal.report.figures import FIGURES, FigureSpec, Series, build_figures, figure
from nearmetal.report.figures.core import nines, percentile_of
from nearmetal.report.html import html_report, write_html_report
from nearmetal.store import Store

PY = sys.executable
needs_chromium = pytest.mark.skipif(
    chromium_path() is None, reason="needs chromium (apt-get install chromium)"
)

LATENCY_PROBE = """
import sys, time
n = int(sys.argv[1])
lat = []
for _ in range(n):
    t = time.perf_counter_ns(); time.sleep(0); lat.append((time.perf_counter_ns() - t) / 1000)
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q / 100 * len(lat)))]
print(f"p50={p(50):.3f} p90={p(90):.3f} p99={p(99):.3f} p99_9={p(99.9):.3f}")
"""


def _fio_like(store: Store) -> str:
    """Time vs size per variant (1, 8, 64 MiB), clat percentiles, and one outlier repeat."""
    cells = [
        SyntheticCell("copy", variant, {"size_MiB": size}, baseline=variant == "native")
        for size in (1, 8, 64)
        for variant in ("native", "overlay", "fuse")
    ]
    slowdown = {"native": 1.0, "overlay": 1.05, "fuse": 1.6}

    def metrics(cell: SyntheticCell, repeat: int, rng) -> list[Metric]:
        t = 0.02 * cell.point["size_MiB"] * slowdown[cell.variant] * rng.normal(1, 0.02)
        if cell.variant == "fuse" and cell.point["size_MiB"] == 8 and repeat == 2:
            t *= 3  # the outlier the box plot must show
        base = 80 * slowdown[cell.variant]
        return [
            Metric("wall_s", t, "s", "lower"),
            Metric("clat_p50_us", base * rng.normal(1, 0.03), "us", "lower"),
            Metric("clat_p99_us", 4 * base * rng.normal(1, 0.03), "us", "lower"),
            Metric("clat_p99_9_us", 15 * base * rng.normal(1, 0.05), "us", "lower"),
        ]

    return write_run(store, cells, metrics, repeats=5)


def test_percentile_names_and_axis() -> None:
    assert percentile_of("clat_p99_9_us") == ("clat", 99.9)
    assert percentile_of("lat_p50_us") == ("lat", 50.0)
    assert percentile_of("commit_lat_p99_99_us") == ("commit_lat", 99.99)
    assert percentile_of("clat_p100_us") is None and percentile_of("bw_MiBps") is None
    # p90, p99, p99.9 are evenly spaced on the log axis
    assert (
        nines(90) == pytest.approx(10)
        and nines(99) == pytest.approx(100)
        and nines(99.9) == pytest.approx(1000)
    )


def test_figures_follow_the_shape_of_the_data(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    results = nearmetal.load_results(_fio_like(store), store=store)
    figures, problems = build_figures(results)
    assert not problems
    by_key = {f.key: f for f in figures}
    # time vs size: one line per variant, log x because sizes span 1..64
    lines = by_key["lines-copy-size_MiB"]
    assert lines.x_type == "log" and [s.name for s in lines.series] == ["native", "overlay", "fuse"]
    assert lines.series[2].x == [1, 8, 64]
    assert lines.series[2].y[2] == pytest.approx(0.02 * 64 * 1.6, rel=0.1)
    # every repeat is in the box plot, the outlier included; sizes 1..64 differ 64x: one figure per size
    assert {"repeats-copy-size_MiB=1", "repeats-copy-size_MiB=64"} <= set(by_key)
    fuse = next(s for s in by_key["repeats-copy-size_MiB=8"].series if s.name == "fuse")
    assert fuse.x == ["fuse"] * 5
    assert max(fuse.y) == pytest.approx(0.02 * 8 * 1.6 * 3, rel=0.1)
    # loss whiskers are the analysis' bootstrap interval
    loss = by_key["loss-copy"]
    fuse_loss = next(s for s in loss.series if s.name == "fuse")
    cell = next(c for c in results.cells if c.variant == "fuse" and c.point == {"size_MiB": 64})
    comp = results.analysis.comparison(cell.cell_id, "wall_s")
    i = fuse_loss.x.index("size_MiB=64")
    assert fuse_loss.y[i] == pytest.approx(comp.loss.loss * 100)
    assert fuse_loss.low[i] == pytest.approx(comp.loss.low * 100)
    assert fuse_loss.high[i] == pytest.approx(comp.loss.high * 100)
    assert fuse_loss.y[i] > 50
    # latency percentiles: one figure per matrix point, p50 < p99 < p99.9 on the "nines" axis
    pct = by_key["percentiles-copy-clat-size_MiB=8"]
    assert [label for _, label in pct.x_ticks] == ["p50", "p99", "p99.9"]
    native = next(s for s in pct.series if s.name == "native")
    assert native.y == sorted(native.y)
    # no workload here reports CPU use, so there is no context figure
    assert not any(f.builder == "context" for f in figures)
    # the same variant has the same colour in every figure
    colors = {
        s.color
        for f in figures
        if f.builder in ("values", "loss", "repeats")
        for s in f.series
        if s.name == "fuse"
    }
    assert len(colors) == 1


def test_a_registered_builder_joins_the_report_and_a_broken_one_costs_only_itself(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    results = nearmetal.load_results(_fio_like(store), store=store)

    @figure("test-timeline")
    def timeline(results) -> list[FigureSpec]:
        from nearmetal.report.figures import Band

        return [
            FigureSpec(
                "timeline",
                "requests over time",
                "s",
                "requests/s",
                [Series("ok", "line", [0, 1, 2, 3], [10, 11, 2, 10])],
                bands=[Band(1.5, 2.5, "fault injected")],
                x_type="linear",
            )
        ]

    @figure("test-broken")
    def broken(results) -> list[FigureSpec]:
        raise RuntimeError("no events table here")

    try:
        text = html_report(results)
    finally:
        FIGURES.remove("test-timeline")
        FIGURES.remove("test-broken")
    assert 'id="timeline"' in text and 'data-builder="test-timeline"' in text
    assert "Figures not drawn" in text and "test-broken: RuntimeError: no events table here" in text
    assert 'id="repeats-copy-size_MiB-8"' in text  # the others are still there
    data = json.loads(re.search(r'id="nearmetal-figures">(.*?)</script>', text, re.S).group(1))
    timeline_fig = next(f for f in data if f["layout"]["title"]["text"] == "requests over time")
    assert timeline_fig["layout"]["shapes"][0]["type"] == "rect"


@needs_chromium
@needs_tool("stress-ng")
def test_run_writes_an_html_report_that_chromium_renders(
    tmp_path: Path, run_cli, artifacts_dir: Path
) -> None:
    """A real run through the CLI: report.html lands in the run's directory, opens offline in Chromium with no
    console errors, and every plot is drawn (bars, lines vs a matrix parameter, boxes, percentiles)."""
    probe = tmp_path / "probe.py"
    probe.write_text(LATENCY_PROBE)
    metrics = ",".join(
        f"{{name: sleep0_{p}_us, regex: '{p}=([0-9.]+)', unit: us, direction: lower}}"
        for p in ("p50", "p90", "p99", "p99_9")
    )
    plan = write_plan(
        tmp_path,
        f"""
        name: html-check
        description: stress-ng bogo-ops vs workers, and a latency probe </script><b>not bold</b>
        workloads:
          stress:
            kind: stress-ng
            params: {{stressor: cpu, workers: 1, ops: 40}}
          probe:
            kind: command
            params: {{argv: ["{PY}", "{probe}", "300"], metrics: [{metrics}]}}
        variants:
          bare: []
          more-work: {{params: {{stress.ops: 80, probe.argv: ["{PY}", "{probe}", "600"]}}}}
        baseline: bare
        matrix:
          stress.workers: [1, 2]
        repeats: 3
        warmup: 0
        """,
    )
    proc = run_cli("run", str(plan), "--workdir", "runs", "-q", check=True, timeout=300)
    run_id = re.search(r"run id: (\S+)", proc.stdout).group(1)
    report = tmp_path / "runs" / run_id / "report.html"
    assert report.is_file(), proc.stderr
    text = report.read_text()
    # self-contained: no script, stylesheet or image fetched from anywhere
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text)
    assert "<b>not bold</b>" not in text  # the description is escaped
    expected = {
        "values-stress",
        "loss-stress",
        "lines-stress-workers",
        "repeats-stress",
        "percentiles-probe-sleep0",
    }
    ids = set(re.findall(r'<figure id="([^"]+)"', text))
    assert expected <= ids, ids
    shot = artifacts_dir / "report-html-run.png"
    with Chromium() as browser:
        page = browser.check_page(report, screenshot=shot)
    assert page.console_errors == []
    assert page.remote_requests == []  # opens offline: nothing fetched from a network
    assert page.plots_rendered == len(ids) == page.plot_divs
    assert page.svg_plots == len(ids)  # plotly drew every one
    figures_json = json.loads(re.search(r'id="nearmetal-figures">(.*?)</script>', text, re.S).group(1))
    assert page.plot_traces == sum(len(f["data"]) for f in figures_json)  # every trace drawn
    assert page.tables == 4  # stress ×2 matrix points, probe, energy and carbon
    assert run_id in page.title
    assert shot.stat().st_size > 50_000


@needs_chromium
def test_report_cli_html_png_markdown(tmp_path: Path, run_cli, db_url: str, artifacts_dir: Path) -> None:
    store = Store(db_url)
    run_id = _fio_like(store)
    out = tmp_path / "out"
    proc = run_cli(
        "report",
        run_id,
        "--html",
        str(out / "r.html"),
        "--png",
        str(out / "figs"),
        "--format",
        "markdown",
        "-o",
        str(out / "post.md"),
        check=True,
    )
    assert "wrote" in proc.stderr
    html_path = out / "r.html"
    pngs = sorted((out / "figs").glob("*.png"))
    figure_ids = re.findall(r'<figure id="([^"]+)"', html_path.read_text())
    # the PNGs are the same figures as the HTML's
    assert sorted(p.stem for p in pngs) == sorted(figure_ids)
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    md = (out / "post.md").read_text()
    assert "| variant | n | wall_s (s) | ± sd | CV % | loss % [95% CI] | factor | stop | verdict |" in md
    assert "![copy: wall_s vs size_MiB](figs/lines-copy-size_MiB.png)" in md
    assert "**significant loss**" in md
    with Chromium() as browser:
        page = browser.check_page(html_path, screenshot=artifacts_dir / "report-html-synthetic.png")
    assert page.console_errors == []
    assert page.plots_rendered == len(figure_ids) == page.svg_plots


def test_html_report_of_a_failed_and_empty_run(tmp_path: Path) -> None:
    """A run whose every trial failed still gets a report: tables say so, no figure breaks."""
    plan = write_plan(
        tmp_path,
        f"""
        name: broken
        workloads:
          crash: {{kind: command, params: {{argv: ["{PY}", "-c", "import sys; sys.exit(4)"]}}}}
        variants: {{a: [], b: []}}
        repeats: 2
        """,
    )
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = nearmetal.run_plan(plan, db=db, workdir=tmp_path / "runs")
    path = write_html_report(nearmetal.load_results(result.run_id, db=db), tmp_path / "r.html")
    text = path.read_text()
    assert "Failed trials" in text and "exited with code 4" in text
    assert "Figures not drawn" not in text
