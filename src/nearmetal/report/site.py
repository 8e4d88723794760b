"""``nearmetal site DIR``: a static, offline history site over the store — every run with its report, and per
plan the trend of each cell's loss (with its interval) across runs: the regression history of a platform.

``DIR/index.html`` holds the runs table and the trend figures (plotly's JavaScript inside, as in a run's
report, so it opens offline); ``DIR/runs/<run>/report.html`` is each run's own report (``--no-reports``
leaves them out). Losses come from ``Results.table()`` rows, the same numbers as every report.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nearmetal.api import load_results
from nearmetal.report.html import (
    RENDER_SCRIPT,
    STYLE,
    _e,
    _json_for_script,
    _plotly_js,
    _template,
    write_html_report,
)
from nearmetal.store import Store


@dataclass
class SiteSummary:
    path: Path
    runs: int
    reports: int
    trends: int  # figures: one per plan × workload × metric
    problems: list[str] = field(default_factory=list)  # runs whose report could not be made


def _stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


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
            line["x"].append(  # milliseconds: runs started within one second stay apart
                datetime.datetime.fromtimestamp(run.started_at, datetime.UTC).strftime(
                    "%Y-%m-%d %H:%M:%S.%f"
                )[:-3]
            )
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
        layout = {
            "title": {"text": f"{plan}: {workload} — loss of {metric} vs the baseline, per run"},
            "xaxis": {"title": {"text": "run started (UTC)"}, "type": "date"},
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(db)
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
                write_html_report(results, report_path(out, run.id))
                written += 1
        except Exception as exc:  # one run that cannot be read costs its own row, not the site
            problems.append(f"{run.id}: {type(exc).__name__}: {exc}")
            history.append((run, []))
    figures = trend_figures(history)
    plans = list(dict.fromkeys(plan for plan, _ in figures))
    parts = ['<h2 id="runs">Runs</h2>', '<table class="loss-table runs"><thead><tr>']
    parts.append(
        "".join(f"<th>{h}</th>" for h in ("started (UTC)", "run", "plan", "status", "trials", "host"))
    )
    parts.append("</tr></thead><tbody>")
    for run in reversed(runs):  # newest first, as `nearmetal runs`
        link = (
            f'<a href="runs/{_e(run.id)}/report.html">{_e(run.id)}</a>'
            if reports and (out / "runs" / run.id / "report.html").exists()
            else _e(run.id)
        )
        parts.append(
            f"<tr><td>{_e(_stamp(run.started_at))}</td><td>{link}</td><td>{_e(run.name)}</td>"
            f'<td>{_e(run.status)}</td><td class="r">{run.trials}</td><td>{_e(run.host)}</td></tr>'
        )
    parts.append("</tbody></table>")
    plots: list[dict[str, Any]] = []
    for plan in plans:
        parts.append(f'<h2 id="plan-{_e(plan)}">Trends: {_e(plan)}</h2>')
        for fig_plan, figure in figures:
            if fig_plan == plan:
                parts.append(f'<figure><div class="plot" id="plot-{len(plots)}"></div></figure>')
                plots.append(figure)
    for problem in problems:
        parts.append(f'<p class="problem">{_e(problem)}</p>')
    from nearmetal import __version__

    nav = "".join(f'<li><a href="#plan-{_e(p)}">{_e(p)}</a></li>' for p in plans)
    text = "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>nearmetal · history of {len(runs)} runs</title><style>{STYLE}</style>",
            f'<script type="text/javascript">{_plotly_js()}</script></head><body>',
            f"<header><h1>nearmetal · {len(runs)} runs</h1>",
            f'<p class="description">store {_e(store.display_url)}; each plan\'s losses across runs below</p>',
            f'<nav><ul><li><a href="#runs">runs</a></li>{nav}</ul></nav></header>',
            *parts,
            f"<footer>nearmetal {_e(__version__)} · {len(plots)} trend figures</footer>",
            f'<script type="application/json" id="nearmetal-figures">{_json_for_script(plots)}</script>',
            f'<script type="application/json" id="nearmetal-template">{_json_for_script(_template())}</script>',
            f"<script>{RENDER_SCRIPT}</script></body></html>\n",
        ]
    )
    index = out / "index.html"
    tmp = out / f".index.html.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(index)
    store.engine.dispose()
    return SiteSummary(index, len(runs), written, len(plots), problems)
