"""``nearmetal net-paths [RUN]``: the network-path study's summary table and which slowdown comes from the
network path and which from a CPU limit."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table as RichTable

from nearmetal.commands.common import DbOption, app, console, fail
from nearmetal.errors import NearmetalError


@app.command("net-paths")
def net_paths(
    run_id: Annotated[str | None, typer.Argument(help="run id (default: the latest run)")] = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="rows and findings as JSON")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="the table as Markdown")] = False,
) -> None:
    """Bandwidth, round trip and MPI loss per network path, and path-vs-CPU-limit attribution."""
    from nearmetal.api import load_results
    from nearmetal.doctor.netpath import attribute_run
    from nearmetal.report.markdown import markdown_table
    from nearmetal.report.studies.net_paths import path_rows, path_table

    try:
        results = load_results(run_id, db=db)
    except NearmetalError as exc:
        fail(exc)
    table = path_table(results)
    findings = attribute_run(results)
    if as_json:
        _, rows = path_rows(results)
        print(
            json.dumps(
                {"run_id": results.run_id, "rows": rows, "findings": [f.to_dict() for f in findings]},
                default=str,
                indent=2,
            )
        )
        return
    if markdown:
        print("\n".join(markdown_table(table)))
        for note in table.notes:
            print(f"\n{note}")
    else:
        rich_table = RichTable(
            *table.headers, title=f"{table.title} — run {results.run_id}", title_justify="left"
        )
        for row in table.rows:
            rich_table.add_row(*row)
        console.print(rich_table)
        for note in table.notes:
            console.print(f"[dim]{note}[/dim]")
    colors = {"critical": "bold red", "warning": "yellow", "info": "cyan", "ok": "green"}
    for f in findings:
        if f.severity == "ok":
            continue
        line = f"[{colors[f.severity]}]{f.severity}[/]: {f.title}"
        if f.evidence:
            line += f" [dim]({f.evidence})[/dim]"
        console.print(line, highlight=False)
