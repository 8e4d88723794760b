"""``nearmetal report`` and ``nearmetal runs``: what the store holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nearmetal.commands.common import (
    DbOption,
    FailAboveOption,
    JunitOption,
    app,
    complete_from,
    complete_run_id,
    console,
    err_console,
    fail,
    parse_threshold,
    show_report,
    verdicts,
)
from nearmetal.errors import NearmetalError
from nearmetal.textsafe import plain


@app.command()
def report(
    run_id: Annotated[
        str | None, typer.Argument(help="run id (default: the latest run)", autocompletion=complete_run_id)
    ] = None,
    db: DbOption = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="terminal (default), markdown, json or html",
            autocompletion=complete_from("terminal", "markdown", "json", "html"),
        ),
    ] = None,
    metric: Annotated[str | None, typer.Option(help="metric to lead with (default: the workload's)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write to a file")] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="write a self-contained HTML report (tables, plots) here")
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option("--png", help="write every figure as PNG into this directory (Markdown links them)"),
    ] = None,
    junit: JunitOption = None,
    fail_above: FailAboveOption = None,
) -> None:
    """Show a stored run's tables again, or write them as Markdown, JSON, HTML with plots, or PNG figures."""
    if fmt is not None and fmt not in ("terminal", "markdown", "json", "html"):
        fail(NearmetalError(f"unknown format {fmt!r}", fix="use terminal, markdown, json or html"))
    try:
        threshold = parse_threshold(fail_above) if fail_above is not None else None
        if junit is not None and fmt is None and html is None and png is None:
            fmt = "none"  # --junit alone writes the file; the terminal table only when a format is named
        if fmt != "none":
            show_report(run_id, db, fmt, metric, output, html=html, png=png)
        if junit is not None or threshold is not None:
            from nearmetal.api import load_results

            verdicts(load_results(run_id, db=db).run_id, db, junit, threshold)
    except NearmetalError as exc:
        fail(exc)
    except ImportError as exc:
        fail(
            NearmetalError(
                f"this report needs a library that is not installed: {exc.name or exc}",
                fix="pip install 'nearmetal[png]'",
            )
        )


@app.command()
def runs(
    db: DbOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="show at most this many runs")] = 20,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="the runs as a JSON list (id, plan, status, resumable, times, trials, host)"
        ),
    ] = False,
) -> None:
    """List stored runs, newest first."""
    import datetime

    from nearmetal.store import Store

    try:
        store = Store(db, create=False)
    except NearmetalError as exc:
        fail(exc)
    import socket

    from nearmetal.host.runlock import is_live

    def iso(stamp: float | None) -> str | None:
        if stamp is None:
            return None
        return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat(timespec="seconds")

    here = socket.gethostname()
    listed = []
    stored = store.list_runs(limit)
    for line in store.skipped:  # rows a crafted or damaged store holds: one line each, never a traceback
        err_console.print(f"[yellow]skipped[/yellow]: {plain(line)}", highlight=False)
    for r in stored:
        status, resumable = r.status, False
        if status == "running" and r.host == here and not is_live(r.id):
            status, resumable = "died", True  # its process is gone: killed, or the machine rebooted
        elif status in ("interrupted", "failed"):
            resumable = True
        listed.append((r, status, resumable))
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "run_id": r.id,
                        "plan": r.name,
                        "status": status,
                        "resumable": resumable,
                        "started_at": iso(r.started_at),
                        "ended_at": iso(r.ended_at),
                        "trials": r.trials,
                        "host": r.host,
                    }
                    for r, status, resumable in listed
                ],
                indent=1,
            )
        )
        return
    table = Table("run", "plan", "status", "started", "trials", "host")
    for r, status, resumable in listed:
        started = datetime.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M:%S")
        if status == "died":
            status = "died (nearmetal resume)"
        elif resumable:
            status = f"{status} (nearmetal resume)"
        table.add_row(*(plain(v) for v in (r.id, r.name, status, started, str(r.trials), r.host)))
    console.print(table)
