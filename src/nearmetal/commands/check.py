"""``nearmetal check PLAN``: every problem a run would refuse, at once, and what the run would be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nearmetal.commands.common import DbOption, app, console, err_console
from nearmetal.commands.options import (
    AllowLargeOption,
    AllowNetworkOption,
    AllowPathOption,
    BackendOption,
    BackendOptions,
    OptionalWorkdirOption,
    with_backend_options,
)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _plan_path(plan: str) -> Path:
    """A plan file, or the name of a shipped study (``nearmetal check cpu-quota``)."""
    path = Path(plan)
    if path.exists() or path.suffix in (".yaml", ".yml") or "/" in plan:
        return path
    from nearmetal.errors import NearmetalError
    from nearmetal.studies import study_path

    try:
        return study_path(plan.removesuffix(".quick"), quick=plan.endswith(".quick"))
    except NearmetalError:
        return path


@app.command()
@with_backend_options
def check(
    plan: Annotated[str, typer.Argument(help="the plan (YAML), or the name of a shipped study")],
    as_json: Annotated[
        bool, typer.Option("--json", help="the problems, cells, tools and estimate as one JSON document")
    ] = False,
    db: DbOption = None,
    workdir: OptionalWorkdirOption = None,
    backend: BackendOption = "local",
    allow_large: AllowLargeOption = False,
    allow_path: AllowPathOption = None,
    allow_network: AllowNetworkOption = False,
    backend_options: BackendOptions = None,
) -> None:
    """Check a plan without running it: every problem `run` would refuse (plan, paths, backend, tools,
    privileges, sizes, what the store cannot keep), the cells and trials, the tools each cell needs and an
    estimate of the run's duration; field errors and cross-references in one pass, a mistyped name with
    the closest known one. Exit codes: 0 the plan would run, 2 a problem (each on its own line), 1 the check
    itself failed."""
    from nearmetal.run.check import check_plan

    report = check_plan(
        _plan_path(plan),
        backend=backend,
        backend_options=backend_options,
        allow_paths=allow_path or (),
        allow_large=allow_large,
        workdir=workdir,
        db=db,
        allow_network=allow_network,
    )
    if as_json:
        print(json.dumps(report.to_dict(), indent=1, default=str))
        raise typer.Exit(0 if report.ok else 2)
    if report.cells:
        table = Table("cell", "layers", "trials", "timeout", "per trial", "tools")
        for cell in report.cells:
            tools = ", ".join(
                t.tool + ("" if t.available else (" (optional, missing)" if t.optional else " (MISSING)"))
                for t in cell.tools
            )
            trials = (
                str(cell.trials_min)
                if cell.trials_min == cell.trials_max
                else f"{cell.trials_min}–{cell.trials_max}"
            )
            per_trial = "?" if cell.trial_s is None else f"{cell.trial_s:.3g} s ({cell.trial_s_from})"
            table.add_row(
                escape(cell.key) + (" [yellow](skipped)[/yellow]" if cell.skipped else ""),
                escape(" + ".join(cell.layers) or "–"),
                trials,
                _duration(cell.timeout_s),
                per_trial,
                escape(tools or "–"),
            )
        console.print(table)
        d = report.duration()
        trials = (
            f"{report.trials_min}"
            if report.trials_min == report.trials_max
            else f"{report.trials_min}–{report.trials_max}"
        )
        if d["unknown_trials"] == report.trials_max:
            estimate = "duration unknown (no earlier trials of these cells in the store, no time parameters)"
        else:
            estimate = "estimated duration " + (
                _duration(d["low_s"])
                if d["low_s"] == d["high_s"]
                else f"{_duration(d['low_s'])}–{_duration(d['high_s'])}"
            )
            if d["unknown_trials"]:
                estimate += f" + {d['unknown_trials']} trials of unknown length"
        console.print(
            f"{len(report.cells)} cells, {trials} trials (warm-ups included); "
            f"{estimate}; at most {_duration(d['at_most_s'])} (every trial at its timeout"
            + (", the plan's budget" if d["budget_s"] else "")
            + ")",
            highlight=False,
        )
        console.print(f"[dim]estimate: {escape(d['heuristic'])}[/dim]", highlight=False)
    if report.powers:  # what the plan may do beyond running its workloads as you (SECURITY.md)
        console.print("[bold]this plan asks for:[/bold]", highlight=False)
        for power in report.powers:
            console.print(f"  - {escape(power)}", highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    if report.ok:
        console.print(f"[green]{escape(report.plan)}: no problems[/green]", highlight=False)
        return
    err_console.print(
        f"[bold red]{escape(report.plan)}: {len(report.problems)} problem(s)[/bold red]", highlight=False
    )
    for problem in report.problems:
        err_console.print(
            f"[bold]{problem.kind}[/bold]: {escape(problem.message)}", highlight=False, soft_wrap=True
        )
        if problem.fix:
            err_console.print(f"  fix: {escape(problem.fix)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)
