"""``nearmetal aa PLAN`` (the noise floor: baseline against itself) and ``nearmetal compare RUN_A RUN_B``
(matching cells of two stored runs, e.g. before and after a kernel upgrade; ``--fail-above`` for CI)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from nearmetal.commands.common import DbOption, WorkdirOption, app, console, err_console, fail, plan_errors
from nearmetal.errors import NearmetalError
from nearmetal.textsafe import plain

# exit status of `compare --fail-above` when a loss lies wholly above the threshold (errors use 1 and 2)
REGRESSION_EXIT = 3


def parse_threshold(value: str) -> float:
    """``"5%"``, ``"0.05"``, ``"0"`` → a fraction in [0, 1)."""
    match = re.fullmatch(r"\s*\+?([0-9]*\.?[0-9]+)\s*(%?)\s*", value)
    if not match:
        raise NearmetalError(f"--fail-above {value!r} is not a percentage", fix="write it like 5% (or 0.05)")
    number = float(match.group(1))
    fraction = number / 100 if match.group(2) else number
    if not 0 <= fraction < 1:
        raise NearmetalError(f"--fail-above {value!r} is out of range", fix="give a loss between 0% and 100%")
    return fraction


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="the reference run (before)")],
    run_b: Annotated[str, typer.Argument(help="the run compared with it (after)")],
    db: DbOption = None,
    metric: Annotated[str | None, typer.Option(help="metric to compare (default: each workload's)")] = None,
    fail_above: Annotated[
        str | None,
        typer.Option(
            "--fail-above",
            help=f"exit {REGRESSION_EXIT} when a loss's whole interval lies above this, e.g. 5%",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="rows as JSON")] = False,
) -> None:
    """Compare matching cells (workload, variant, matrix point) of two stored runs: B's loss against A,
    with the same statistics and table shape as a run's own report."""
    from nearmetal.compare import compare_runs
    from nearmetal.report.tables import compare_tables, fmt_estimate, run_header
    from nearmetal.report.terminal import print_table

    try:
        threshold = parse_threshold(fail_above) if fail_above is not None else None
        comparison = compare_runs(run_a, run_b, db=db, metric=metric)
    except NearmetalError as exc:
        fail(exc)
    above = comparison.above(threshold) if threshold is not None else []
    if as_json:
        print(
            json.dumps(
                {
                    "run_a": comparison.a.run_id,
                    "run_b": comparison.b.run_id,
                    "rows": comparison.to_dicts(),
                    "only_in_a": [c.key for c in comparison.only_a],
                    "only_in_b": [c.key for c in comparison.only_b],
                    "not_comparable": {c.key: diffs for c, diffs in comparison.differing},
                    "fail_above": threshold,
                    "regressions": [r.cell.key for r in above],
                },
                default=str,
                indent=2,
            )
        )
    else:
        for label, results in (("A", comparison.a), ("B", comparison.b)):
            head = dict(run_header(results))
            console.print(
                f"[bold]run {label}[/bold]: {head['run']} — {head['plan']}, {head['status']}; {head['host']}",
                highlight=False,
            )
        for table in compare_tables(comparison):
            print_table(table, console)
        for label, cells in (("A", comparison.only_a), ("B", comparison.only_b)):
            if cells:
                shown = ", ".join(c.key for c in cells[:8]) + (" …" if len(cells) > 8 else "")
                console.print(
                    f"[yellow]only in run {label}[/yellow] ({len(cells)} cells): {shown}", highlight=False
                )
        for cell, diffs in comparison.differing:
            console.print(
                f"[yellow]not compared[/yellow]: {cell.key} measures something else in each run ("
                + "; ".join(diffs[:6])
                + (" …" if len(diffs) > 6 else "")
                + ")",
                highlight=False,
            )
        if comparison.missing_metric:
            shown = ", ".join(c.key for c in comparison.missing_metric[:8])
            console.print(f"[yellow]metric missing in one run[/yellow]: {plain(shown)}", highlight=False)
        if not comparison.rows:
            why = (
                "every cell in both runs has other parameters or layer options"
                if comparison.differing
                else "no cell is in both runs"
            )
            err_console.print(f"{why}: nothing to compare", highlight=False)
    if threshold is not None:
        if above:
            for row in above:
                err_console.print(
                    f"[bold red]regression[/bold red]: {row.cell.key} {row.metric} loses {fmt_estimate(row.loss)},"
                    f" wholly above {threshold:.1%}",
                    highlight=False,
                )
            raise typer.Exit(REGRESSION_EXIT)
        if not as_json:
            err_console.print(f"no loss lies wholly above {threshold:.1%}", highlight=False)


@app.command()
def aa(
    plan: Annotated[Path, typer.Argument(help="the plan whose baseline is run against itself")],
    copies: Annotated[
        int, typer.Option(help="copies of the baseline (comparisons per point = copies − 1)")
    ] = 4,
    db: DbOption = None,
    workdir: WorkdirOption = Path("nearmetal-runs"),
    seed: Annotated[int | None, typer.Option(help="seed for trial order and resampling")] = None,
    metric: Annotated[str | None, typer.Option(help="metric to judge (default: each workload's)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the summary as JSON")] = False,
) -> None:
    """A/A check: run the plan's baseline against copies of itself (same order, repeats and analysis) and
    report the observed false-positive rate: the noise floor of this machine."""
    from nearmetal.aa import aa_plan, false_positive_rate
    from nearmetal.api import load_results
    from nearmetal.errors import PlanError
    from nearmetal.plan import load_plan
    from nearmetal.report import print_report
    from nearmetal.report.progress import RichProgress
    from nearmetal.runner import RunInterrupted, run_plan

    try:
        loaded = aa_plan(load_plan(plan), copies)
    except PlanError as exc:
        plan_errors(exc)
    except NearmetalError as exc:
        fail(exc)
    progress = None if (quiet or as_json) else RichProgress(err_console)
    try:
        result = run_plan(loaded, db=db, workdir=workdir, progress=progress, seed=seed)
    except RunInterrupted as exc:
        err_console.print(
            f"[yellow]{exc}[/yellow]; see them with: nearmetal report {exc.run_id}", highlight=False
        )
        raise typer.Exit(130) from None
    except NearmetalError as exc:
        fail(exc)
    results = load_results(result.run_id, db=db)
    summary = false_positive_rate(results, metric)
    if as_json:
        print(json.dumps({"run_id": result.run_id, **summary.to_dict()}, default=str, indent=2))
        return
    console.print(f"run id: [bold cyan]{result.run_id}[/bold cyan]", highlight=False)
    print_report(results, console, metric)
    console.print()
    conf = f"{summary.confidence:.0%}"
    rate = "–" if not summary.comparisons else f"{summary.rate:.0%}"
    console.print(
        f"[bold]A/A false-positive rate[/bold]: {summary.false_positives} of {summary.comparisons} comparisons"
        f" of the baseline with itself excluded 0 → {rate} [{conf} CI {summary.rate_low:.0%}–"
        f"{summary.rate_high:.0%}], expected {summary.expected:.0%}"
        + (f"; {summary.no_interval} without an interval" if summary.no_interval else ""),
        highlight=False,
    )
    console.print(f"  {summary.verdict}", highlight=False)
