"""``nearmetal export``: stored runs as tidy tables (CSV, JSON, JSON lines, Parquet) or OpenMetrics text."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from nearmetal.commands.common import DbOption, app, err_console, fail
from nearmetal.errors import NearmetalError
from nearmetal.textsafe import plain


@app.command()
def export(
    run_ids: Annotated[
        list[str] | None, typer.Argument(help="run ids or unique prefixes (default: the latest run)")
    ] = None,
    db: DbOption = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="csv, json, jsonl, parquet, openmetrics (a Prometheus backfill: promtool tsdb "
            "create-blocks-from openmetrics) or textfile (node_exporter's textfile collector)",
        ),
    ] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write to this file")] = None,
    what: Annotated[
        str,
        typer.Option(
            "--what",
            help="trials: one row per trial × metric (raw values); losses: the analysed table, one row per "
            "cell with its loss, interval and verdict (tabular formats only)",
        ),
    ] = "trials",
    metric: Annotated[
        str | None,
        typer.Option(help="--what losses: the metric of the table (default: each workload's primary one)"),
    ] = None,
) -> None:
    """Export runs for other tools: one row per trial × metric with cell, variant and parameters as
    columns (csv/json/jsonl/parquet), or Prometheus text for Grafana: OpenMetrics for a backfill, or a
    textfile-collector file for node_exporter."""
    from nearmetal.report import export as exporter

    if fmt not in exporter.FORMATS:
        fail(
            NearmetalError(f"unknown export format {fmt!r}", fix=f"use one of {', '.join(exporter.FORMATS)}")
        )
    if what not in exporter.WHATS:
        fail(NearmetalError(f"unknown --what {what!r}", fix=f"use one of {', '.join(exporter.WHATS)}"))
    if what != "trials" and fmt not in exporter.TABULAR_FORMATS:
        fail(
            NearmetalError(
                f"--what {what} is a table; {fmt} carries the losses already",
                fix=f"use --format {' or '.join(exporter.TABULAR_FORMATS)}",
            )
        )
    if fmt == "parquet" and output is None:
        fail(NearmetalError("Parquet is a binary format: give a file", fix="add -o results.parquet"))
    try:
        from nearmetal.api import load_results
        from nearmetal.store import Store

        store = Store(db)
        results_list = (
            [load_results(r, store=store) for r in run_ids] if run_ids else [load_results(store=store)]
        )
        if fmt == "openmetrics":
            text = exporter.to_openmetrics(results_list)
        elif fmt == "textfile":
            text = exporter.to_textfile(results_list)
        else:
            rows = exporter.rows_for(results_list, what, metric)
            if fmt == "parquet":
                assert output is not None
                exporter.write_parquet(
                    rows,
                    output,
                    metadata={
                        "nearmetal.runs": ",".join(r.run_id for r in results_list),
                        "nearmetal.what": what,
                    },
                )
                err_console.print(f"wrote {len(rows)} rows to {output}", highlight=False)
                return
            text = {"csv": exporter.to_csv, "json": exporter.to_json, "jsonl": exporter.to_jsonl}[fmt](rows)
    except NearmetalError as exc:
        fail(exc)
    except ImportError as exc:
        fail(
            NearmetalError(
                f"{fmt} export needs {exc.name or exc}, which is not installed",
                fix="bash scripts/install.sh --with parquet (in a nearmetal checkout), or "
                "pip install 'nearmetal[parquet]'",
            )
        )
    if output is not None:
        # written beside and renamed: a textfile collector (or a tail -f) never reads half a file
        partial = output.with_name(f"{output.name}.{os.getpid()}.partial")
        try:
            partial.write_text(text, encoding="utf-8")
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
        err_console.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)


@app.command()
def site(
    directory: Annotated[
        Path, typer.Argument(help="where to write the site (index.html, runs/RUN/report.html)")
    ],
    db: DbOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="the newest this many runs")] = 1000,
    reports: Annotated[
        bool, typer.Option("--reports/--no-reports", help="also write each run's own HTML report")
    ] = True,
) -> None:
    """Write a static, offline history site over the store: every run with its report, and each plan's
    per-cell loss (with its interval) across runs."""
    from nearmetal.report.site import write_site

    try:
        summary = write_site(directory, db=db, limit=limit, reports=reports)
    except NearmetalError as exc:
        fail(exc)
    for problem in summary.problems:
        err_console.print(f"[yellow]run left out[/yellow]: {plain(problem)}", highlight=False)
    err_console.print(
        f"wrote {summary.path}: {summary.runs} runs, {summary.reports} reports, {summary.trends} trend figures",
        highlight=False,
    )
