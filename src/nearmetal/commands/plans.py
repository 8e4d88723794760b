"""``nearmetal parse`` and ``nearmetal schema``: a workload's parser on an output file, the plan format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nearmetal.commands.common import (
    app,
    console,
    err_console,
    fail,
)
from nearmetal.errors import NearmetalError


@app.command()
def parse(
    workload: Annotated[str, typer.Argument(help="workload kind: lammps, stress-ng, …")],
    files: Annotated[list[Path], typer.Argument(help="output files made by that program, here or elsewhere")],
    as_json: Annotated[bool, typer.Option("--json", help="metrics as JSON")] = False,
) -> None:
    """Turn outputs produced elsewhere into nearmetal's metrics, with the parser runs use."""
    from nearmetal.workloads import get_workload
    from nearmetal.workloads.base import ParseError

    try:
        wl = get_workload(workload)
    except NearmetalError as exc:
        fail(exc)
    results = {}
    failed = False
    for path in files:
        try:
            results[str(path)] = [m.to_dict() for m in wl.parse_file(path)]
        except (ParseError, OSError, UnicodeDecodeError) as exc:
            failed = True
            err_console.print(f"{path}: {exc}", highlight=False, markup=False)
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for shown, metrics in results.items():
            table = Table("metric", "value", "unit", "better", title=shown, title_justify="left")
            for m in metrics:
                table.add_row(m["name"], f"{m['value']:.6g}", m["unit"], m["direction"])
            console.print(table)
    if failed:
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the plan's JSON Schema."""
    from nearmetal.plan import plan_json_schema

    print(json.dumps(plan_json_schema(), indent=2))
