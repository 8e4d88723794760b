"""``nearmetal site DIR``: a static, offline history site over the store — every run with its report, and per
plan the trend of each cell's loss (with its interval) across runs: the regression history of a platform.

``DIR/index.html`` holds the runs table and the trend figures; ``DIR/runs/<run>/report.html`` is each run's
own report (``--no-reports`` leaves them out); every page loads plotly's JavaScript from the site's one copy,
``DIR/static/plotly.min.js`` (a relative path: the site opens offline, from a file or ``nearmetal site
--serve``). Pages are rendered from the Jinja2 templates in ``report/templates``. Losses come from ``Results.table()`` rows, the same numbers as every report.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nearmetal.api import load_results
from nearmetal.report.html import PLOTLY_JS_NAME, render_page, write_html_report, write_plotly_js
from nearmetal.store import Store

STATIC = "static"


@dataclass
class SiteSummary:
    path: Path
    runs: int
    reports: int
    trends: int  # figures: one per plan × workload × metric
    problems: list[str] = field(default_factory=list)  # runs whose report could not be made


def _stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _format(moment: datetime.datetime) -> str:
    """A plotly date (UTC, milliseconds)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _parse(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f")


def trend_figures(history: list[tuple[Any, list[dict[str, Any]]]]) -> list[tuple[str, dict[str, Any]]]:
    """(plan, plotly figure) per plan × workload × metric: one line per variant and matrix point, the loss
    % of each run at the run's start time, its interval as error bars. ``history`` is (run row, its
    ``Results.table()`` rows), oldest first."""
    series: dict[tuple[str, str, str], dict[str, dict[str, list[Any]]]] = {}
    for run, rows in history:
        for row in rows:
            if row.get("loss_pct") is None:
                continue
            key = (run.name, row["workload"], row["metric"])
            label = row["variant"] + (f" · {row['point']}" if row.get("point") else "")
            line = series.setdefault(key, {}).setdefault(
                label, {"x": [], "y": [], "plus": [], "minus": [], "text": []}
            )
            low, high = row.get("ci_low_pct"), row.get("ci_high_pct")
            # milliseconds: runs started within one second stay apart
            line["x"].append(_format(datetime.datetime.fromtimestamp(run.started_at, datetime.UTC)))
            line["y"].append(row["loss_pct"])
            line["plus"].append(None if high is None else high - row["loss_pct"])
            line["minus"].append(None if low is None else row["loss_pct"] - low)
            interval = "" if low is None or high is None else f" [{low:+.1f}, {high:+.1f}]"
            line["text"].append(f"run {run.id}: {row['loss_pct']:+.1f}%{interval} ({row.get('verdict', '')})")
    figures = []
    for (plan, workload, metric), lines in series.items():
        data = [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": label,
                "x": line["x"],
                "y": line["y"],
                "text": line["text"],
                "hovertemplate": "%{text}<extra></extra>",
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": line["plus"],
                    "arrayminus": line["minus"],
                },
            }
            for label, line in lines.items()
        ]
        xaxis: dict[str, Any] = {"title": {"text": "run started (UTC)"}, "type": "date"}
        starts = sorted({x for line in lines.values() for x in line["x"]})
        if len(starts) == 1:
            # one run: plotly would zoom the date axis to sub-milliseconds around it; a day either side
            # shows the point on a readable axis
            middle = _parse(starts[0])
            xaxis["range"] = [
                _format(middle - datetime.timedelta(days=1)),
                _format(middle + datetime.timedelta(days=1)),
            ]
        layout = {
            "title": {"text": f"{plan}: {workload} — loss of {metric} vs the baseline, per run"},
            "xaxis": xaxis,
            "yaxis": {"title": {"text": "loss % (interval)"}, "zeroline": True},
            "height": 420,
            "margin": {"t": 50},
        }
        figures.append((plan, {"data": data, "layout": layout}))
    return figures


def report_path(out: Path, run_id: str) -> Path:
    """``out/runs/<run>/report.html``, refused unless the run id is one nearmetal creates and the path,
    links resolved, stays beneath ``out`` (the store that names the run may come from someone else)."""
    from nearmetal.errors import NearmetalError
    from nearmetal.store.validate import check_stored_run_id

    check_stored_run_id(run_id, "the store")
    path = out / "runs" / run_id / "report.html"
    root = out.resolve()
    if not path.resolve().is_relative_to(root / "runs"):
        raise NearmetalError(
            f"{path} leads outside {root / 'runs'} (a symbolic link?); the run's report is not written",
            fix=f"remove the link from {out / 'runs'}",
        )
    return path


def write_site(
    out_dir: str | Path, db: str | None = None, limit: int = 1000, reports: bool = True
) -> SiteSummary:
    """Write the site for the store's newest ``limit`` runs; files are replaced, nothing else is removed."""
    store = Store(db, create=False)  # before anything is written: a mistyped --db writes nothing
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_plotly_js(out / STATIC)  # one copy for every page of the site
    runs = sorted(store.list_runs(limit), key=lambda r: (r.started_at, r.id))
    # rows whose id nearmetal never creates (``../../x``) are left out by list_runs, with their reason
    problems: list[str] = list(store.skipped)
    history: list[tuple[Any, list[dict[str, Any]]]] = []
    written = 0
    for run in runs:
        try:
            results = load_results(run.id, store=store)
            history.append((run, results.table()))
            if reports:
                write_html_report(
                    results,
                    report_path(out, run.id),
                    plotly_src=f"../../{STATIC}/{PLOTLY_JS_NAME}",
                )
                written += 1
        except Exception as exc:  # one run that cannot be read costs its own row, not the site
            problems.append(f"{run.id}: {type(exc).__name__}: {exc}")
            history.append((run, []))
    figures = trend_figures(history)
    plan_names = list(dict.fromkeys(plan for plan, _ in figures))
    plots: list[dict[str, Any]] = []
    plans = []
    for plan in plan_names:
        indices = []
        for fig_plan, figure in figures:
            if fig_plan == plan:
                indices.append(len(plots))
                plots.append(figure)
        plans.append({"name": plan, "plots": indices})
    listed = [
        {
            "started": _stamp(run.started_at),
            "id": run.id,
            "report": f"runs/{run.id}/report.html"
            if reports and (out / "runs" / run.id / "report.html").exists()
            else None,
            "plan": run.name,
            "status": run.status,
            "trials": run.trials,
            "host": run.host,
        }
        for run in reversed(runs)  # newest first, as `nearmetal runs`
    ]
    text = render_page(
        "site.html.j2",
        title=f"nearmetal · history of {len(runs)} runs",
        plots=plots,
        plotly_src=f"{STATIC}/{PLOTLY_JS_NAME}",
        runs=listed,
        plans=plans,
        problems=problems,
        store=store.display_url,
    )
    index = out / "index.html"
    tmp = out / f".index.html.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(index)
    store.engine.dispose()
    return SiteSummary(index, len(runs), written, len(plots), problems)


def serve_site(
    directory: str | Path,
    port: int = 8000,
    seconds: float | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve a written site on 127.0.0.1 only (a local preview, never on the network), files of
    ``directory`` and nothing above it, until Ctrl-C or ``seconds``; no request is logged to stderr."""
    import functools
    import http.server
    import threading

    from nearmetal.errors import NearmetalError

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # the base's name
            pass

    handler = functools.partial(Quiet, directory=str(Path(directory).resolve()))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise NearmetalError(
            f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}",
            fix="choose another --port (0: any free one)",
        ) from None
    server.daemon_threads = True
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    if announce:
        announce(url)
    timer = threading.Timer(seconds, server.shutdown) if seconds is not None else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if timer:
            timer.cancel()
        server.server_close()
