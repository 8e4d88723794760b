"""``nearmetal doctor`` and ``nearmetal cleanup``: the host's known causes of slowness, and what dead runs left on it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from nearmetal.commands.common import (
    DbOption,
    app,
    console,
    err_console,
    fail,
)
from nearmetal.errors import NearmetalError


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="findings as JSON")] = False,
    for_run: Annotated[str | None, typer.Option("--for", help="attach the findings to a stored run")] = None,
    only: Annotated[
        list[str] | None, typer.Option("--check", help="run only this check (repeatable); see --list")
    ] = None,
    list_checks: Annotated[
        bool, typer.Option("--list", help="list the checks and what each inspects")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also show what each check inspects and its seed lesson")
    ] = False,
    db: DbOption = None,
) -> None:
    """Check this machine for the known causes of slow or broken runs."""
    from nearmetal.doctor import CHECK_INFO, run_checks

    if list_checks:
        table = Table("check", "inspects", "explains losses of kind")
        for info in CHECK_INFO.values():
            table.add_row(info.check_id, info.inspects, ", ".join(info.explains))
        console.print(table)
        return
    unknown = [c for c in only or [] if c not in CHECK_INFO]
    if unknown:
        fail(NearmetalError(f"unknown check(s): {', '.join(unknown)}", fix="see nearmetal doctor --list"))
    findings = run_checks(only or None)
    if for_run:
        from nearmetal.store import Store

        try:
            store = Store(db)
            run_id = store.get_run(for_run).id
            store.add_findings(run_id, [f.to_dict() for f in findings])
        except NearmetalError as exc:
            fail(exc)
        err_console.print(f"{len(findings)} findings attached to run {run_id}", highlight=False)
    if as_json:
        print(json.dumps([f.to_dict() for f in findings], indent=2))
        return
    colors = {"critical": "bold red", "warning": "yellow", "info": "cyan", "ok": "green"}
    columns = ["check", "severity", "finding", "evidence", "fix"] + (
        ["inspects", "lesson"] if verbose else []
    )
    table = Table(*columns, show_lines=True)
    for f in findings:
        row = [f.check_id, f"[{colors[f.severity]}]{f.severity}[/]", f.title, f.evidence, f.fix]
        table.add_row(*row, *([f.inspects, f.lesson] if verbose else []))
    console.print(table)


@app.command()
def cleanup(
    run_id: Annotated[
        str | None, typer.Argument(help="only what this run left (default: every dead run's)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list, do not remove")] = False,
    include_live: Annotated[
        bool,
        typer.Option("--include-live", help="also remove the objects of runs that are still running"),
    ] = False,
) -> None:
    """Remove host objects (processes, cgroups, …) that a killed run left behind. Runs still alive on this
    host are left alone."""
    from nearmetal.host.cleanup import cleanup as do_cleanup
    from nearmetal.host.cleanup import find_leftovers, partition_live

    # one object a line, never wrapped: people grep and scripts read these lines
    if dry_run:
        leftovers = find_leftovers(run_id)
        dead, kept = (leftovers, []) if include_live else partition_live(leftovers, run_id)
        for leftover in dead:
            console.print(str(leftover), highlight=False, soft_wrap=True)
        for leftover, why in kept:
            console.print(f"{leftover} (kept: {why})", highlight=False, soft_wrap=True)
        return
    report = do_cleanup(run_id, include_live=include_live)
    for leftover in report.removed:
        console.print(f"removed {leftover}", highlight=False, soft_wrap=True)
    for leftover, why in report.skipped:
        console.print(f"kept {leftover}: {why}", highlight=False, soft_wrap=True)
    for leftover, error in report.failed:
        err_console.print(f"[red]could not remove {leftover}[/red]: {error}", highlight=False, soft_wrap=True)
    if not report.removed and not report.failed:
        console.print("nothing to clean up")
    if report.failed:
        raise typer.Exit(1)
