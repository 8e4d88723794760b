"""``nearmetal exec-trial``: execute one trial here and write its outcome (what a batch job runs on its node)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nearmetal.commands.common import app, err_console


@app.command("exec-trial", hidden=True)
def exec_trial(
    spec_path: Annotated[Path | None, typer.Argument(help="the trial's spec.json")] = None,
    out_path: Annotated[Path | None, typer.Argument(help="where the outcome JSON goes")] = None,
    task_list: Annotated[
        Path | None,
        typer.Option(
            help="job arrays: a file of trial directories, one per line; SLURM_ARRAY_TASK_ID picks one"
        ),
    ] = None,
) -> None:
    """(internal) Execute one trial here — layers, local backend, parser — and write its outcome as JSON."""
    from nearmetal.run import exec_trial as impl

    if task_list is not None:
        spec_path, out_path = impl.paths_from_task_list(task_list)
    if spec_path is None or out_path is None:
        err_console.print("exec-trial needs SPEC.json OUT.json (or --task-list FILE)")
        raise typer.Exit(2)
    raise typer.Exit(impl.exec_trial(spec_path, out_path))
