"""``nearmetal aa PLAN`` (the noise floor: baseline against itself) and ``nearmetal compare RUN_A RUN_B``
(matching cells of two stored runs, e.g. before and after a kernel upgrade; ``--fail-above`` for CI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nearmetal.commands.common import (
    REGRESSION_EXIT,
    DbOption,
    app,
    complete_run_id,
    console,
    err_console,
    fail,
    parse_threshold,
    plan_errors,
)
from nearmetal.commands.options import WorkdirOption
from nearmetal.errors import NearmetalError
from nearmetal.textsafe import plain


def geometric_means(comparisons: list[Any]) -> list[dict[str, Any]]:
    """Per run after the first and per metric: the geometric mean of the slowdowns (×, > 1 = slower) over
    the cells both runs have, as pyperf's compare_to summarises several benchmarks."""
    import math

    rows = []
    for comparison in comparisons:
        by_metric: dict[str, list[float]] = {}
        for row in comparison.rows:
            factor = row.loss.slowdown
            if math.isfinite(factor) and factor > 0:
                by_metric.setdefault(row.metric, []).append(factor)
        for metric, factors in by_metric.items():
            mean = math.exp(sum(math.log(f) for f in factors) / len(factors))
            rows.append(
                {
                    "run": comparison.b.run_id,
                    "against": comparison.a.run_id,
                    "metric": metric,
                    "cells": len(factors),
                    "geometric_mean_slowdown": mean,
                }
            )
    return rows


def _factor_words(factor: float) -> str:
    if abs(factor - 1) < 0.0005:
        return "×1.000 (same)"
    return f"×{factor:.3f} slower" if factor > 1 else f"×{1 / factor:.3f} faster"


@app.command()
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="the reference run, then one or more runs compared with it (each against the first)",
            autocompletion=complete_run_id,
        ),
    ],
    db: DbOption = None,
    metric: Annotated[str | None, typer.Option(help="metric to compare (default: each workload's)")] = None,
    fail_above: Annotated[
        str | None,
        typer.Option(
            "--fail-above",
            metavar="PCT",
            help=f"exit {REGRESSION_EXIT} when a loss's whole interval lies above this, e.g. 5%",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="rows as JSON")] = False,
) -> None:
    """Compare matching cells (workload, variant, matrix point) of stored runs: each run's loss against the
    first, with the same statistics and table shape as a run's own report, and per metric the geometric
    mean of the slowdowns over the cells (as pyperf compare_to)."""
    from nearmetal.results.compare import compare_runs

    if len(runs) < 2:
        fail(NearmetalError("compare needs at least two runs", fix="nearmetal compare RUN_A RUN_B [RUN_C …]"))
    try:
        threshold = parse_threshold(fail_above) if fail_above is not None else None
        comparisons = [compare_runs(runs[0], other, db=db, metric=metric) for other in runs[1:]]
    except NearmetalError as exc:
        fail(exc)
    above = [row for c in comparisons for row in (c.above(threshold) if threshold is not None else [])]
    summary = geometric_means(comparisons)
    if as_json:
        pairs = [_pair_json(c, threshold) for c in comparisons]
        document = (
            {**pairs[0], "geometric_means": summary}
            if len(pairs) == 1
            else {
                "reference": comparisons[0].a.run_id,
                "comparisons": pairs,
                "geometric_means": summary,
            }
        )
        print(json.dumps(document, default=str, indent=2))
    else:
        for comparison in comparisons:
            _show_pair(comparison, with_a=comparison is comparisons[0])
        if summary:
            from rich.table import Table

            table = Table(
                "run", "vs", "metric", "cells", "geometric mean", title="summary", title_justify="left"
            )
            for line in summary:
                table.add_row(
                    line["run"], line["against"], line["metric"], str(line["cells"]),
                    _factor_words(line["geometric_mean_slowdown"]),
                )  # fmt: skip
            console.print()
            console.print(table)
    if threshold is not None:
        from nearmetal.report.tables import fmt_estimate

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


def _pair_json(comparison: Any, threshold: float | None) -> dict[str, Any]:
    above = comparison.above(threshold) if threshold is not None else []
    return {
        "run_a": comparison.a.run_id,
        "run_b": comparison.b.run_id,
        "rows": comparison.to_dicts(),
        "only_in_a": [c.key for c in comparison.only_a],
        "only_in_b": [c.key for c in comparison.only_b],
        "not_comparable": {c.key: diffs for c, diffs in comparison.differing},
        "fail_above": threshold,
        "regressions": [r.cell.key for r in above],
    }


def _show_pair(comparison: Any, with_a: bool = True) -> None:
    from nearmetal.report.comparison import compare_tables
    from nearmetal.report.header import run_header
    from nearmetal.report.terminal import print_table

    for label, results in (("A", comparison.a), ("B", comparison.b)):
        if label == "A" and not with_a:
            continue
        head = dict(run_header(results))
        console.print(
            f"[bold]run {label}[/bold]: "
            + plain(f"{head['run']} — {head['plan']}, {head['status']}; {head['host']}"),
            highlight=False,
        )
    for table in compare_tables(comparison):
        print_table(table, console)
    for label, cells in (("A", comparison.only_a), ("B", comparison.only_b)):
        if cells:
            shown = ", ".join(c.key for c in cells[:8]) + (" …" if len(cells) > 8 else "")
            console.print(
                f"[yellow]only in run {label}[/yellow] ({len(cells)} cells): {plain(shown)}", highlight=False
            )
    for cell, diffs in comparison.differing:
        console.print(
            f"[yellow]not compared[/yellow]: {plain(cell.key)} measures something else in each run ("
            + plain("; ".join(diffs[:6]))
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
    from nearmetal.api import load_results
    from nearmetal.commands.common import terminal_progress
    from nearmetal.errors import PlanError
    from nearmetal.plan import load_plan
    from nearmetal.report import print_report
    from nearmetal.results.aa import aa_plan, false_positive_rate
    from nearmetal.run.runner import RunInterrupted, run_plan

    try:
        loaded = aa_plan(load_plan(plan), copies)
    except PlanError as exc:
        plan_errors(exc)
    except NearmetalError as exc:
        fail(exc)
    progress = None if (quiet or as_json) else terminal_progress()
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
