"""``nearmetal export``: stored runs as tidy tables (CSV, JSON, JSON lines, Parquet) or OpenMetrics text."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from nearmetal.commands.common import DbOption, app, complete_from, complete_run_id, err_console, fail
from nearmetal.errors import NearmetalError
from nearmetal.textsafe import plain


@app.command()
def export(
    run_ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="run ids or unique prefixes (default: the latest run)", autocompletion=complete_run_id
        ),
    ] = None,
    db: DbOption = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="csv, json, jsonl, parquet, openmetrics (a Prometheus backfill: promtool tsdb "
            "create-blocks-from openmetrics) or textfile (node_exporter's textfile collector)",
            autocompletion=complete_from("csv", "json", "jsonl", "parquet", "openmetrics", "textfile"),
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
    if output is not None:
        make_parent(output)
    try:
        from nearmetal.api import load_results
        from nearmetal.store import Store

        store = Store(db, create=False)
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
        except OSError as exc:
            fail(NearmetalError(f"--output {output}: cannot write: {exc.strerror or exc}"))
        finally:
            partial.unlink(missing_ok=True)
        err_console.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)


def make_parent(output: Path) -> None:
    """``export -o DIR/FILE`` into a directory that does not exist yet (a fresh host's textfile-collector
    directory): it is created; where it cannot be, one line says why (never a traceback)."""
    if output.is_dir():
        fail(
            NearmetalError(f"--output {output} is a directory", fix=f"name a file in it: {output}/export.csv")
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(
            NearmetalError(
                f"--output {output}: cannot create the directory {output.parent}: {exc.strerror or exc}",
                fix="write elsewhere, or create the directory with the right owner first",
            )
        )


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
    serve: Annotated[
        bool, typer.Option("--serve", help="then serve it on 127.0.0.1 for a local preview (Ctrl-C stops)")
    ] = False,
    port: Annotated[
        int, typer.Option("--port", help="--serve: the port (0: any free one)", min=0, max=65535)
    ] = 8000,
    serve_for: Annotated[
        float | None,
        typer.Option(
            "--serve-for", metavar="SECONDS", help="--serve: stop after this long (default: until Ctrl-C)"
        ),
    ] = None,
) -> None:
    """Write a static, offline history site over the store: every run with its report, and each plan's
    per-cell loss (with its interval) across runs; --serve previews it in a browser (like asv preview)."""
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
    if serve:
        from nearmetal.report.site import serve_site

        try:
            serve_site(
                directory,
                port,
                serve_for,
                announce=lambda url: err_console.print(
                    f"serving {directory} at {url} (Ctrl-C stops)",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                ),
            )
        except NearmetalError as exc:
            fail(exc)
