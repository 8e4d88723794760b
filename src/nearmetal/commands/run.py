"""``nearmetal run`` and ``nearmetal study``: running a plan, or a shipped study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nearmetal.commands.common import (
    DbOption,
    FailAboveOption,
    JunitOption,
    app,
    console,
    err_console,
    fail,
    run_plan_command,
)
from nearmetal.commands.options import (
    AllowLargeOption,
    AllowNetworkOption,
    AllowPathOption,
    AllowSharedWorkdirOption,
    BackendOption,
    BackendOptions,
    OptionalWorkdirOption,
    ShieldOption,
    with_backend_options,
)
from nearmetal.errors import NearmetalError


@app.command()
@with_backend_options
def run(
    plan: Annotated[Path, typer.Argument(help="the plan (YAML)")],
    db: DbOption = None,
    workdir: OptionalWorkdirOption = None,
    seed: Annotated[
        int | None, typer.Option(help="seed for trial order and resampling", min=0, max=2**31 - 1)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="progress and results as JSON lines")] = False,
    html: Annotated[
        bool, typer.Option("--html/--no-html", help="write report.html into the run's directory")
    ] = True,
    resume: Annotated[
        str | None,
        typer.Option("--resume", metavar="RUN_ID", help="continue this stored run of the same plan"),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="name the run (default: date-time-random)")
    ] = None,
    backend: BackendOption = "local",
    allow_large: AllowLargeOption = False,
    allow_shared_workdir: AllowSharedWorkdirOption = False,
    allow_path: AllowPathOption = None,
    junit: JunitOption = None,
    fail_above: FailAboveOption = None,
    allow_network: AllowNetworkOption = False,
    shield: ShieldOption = False,
    backend_options: BackendOptions = None,
) -> None:
    """Run a plan: every trial is stored as it ends; prints the run id and the loss table, and writes a
    self-contained HTML report into the run's directory."""
    if not plan.exists() and plan.suffix == "" and "/" not in str(plan):
        from nearmetal.studies import study_names

        if str(plan) in study_names():
            err_console.print(
                f"error: {plan}: no such plan file; {plan} is a shipped study: nearmetal study {plan}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)
    run_plan_command(
        plan,
        db,
        workdir,
        seed,
        quiet,
        as_json,
        html=html,
        run_id=run_id,
        resume=resume,
        backend=backend,
        backend_options=backend_options,
        allow_large=allow_large,
        allow_shared_workdir=allow_shared_workdir,
        allow_paths=allow_path,
        junit=junit,
        fail_above=fail_above,
        allow_network=allow_network,
        shield=shield,
    )


def torch_need(name: str) -> str:
    """Whether a shipped study needs PyTorch (which the default install leaves out): "yes", "GPU form"
    (only its GPU form does) or "no"."""
    from nearmetal.plan import load_plan
    from nearmetal.run.preflight import _cell_requirements
    from nearmetal.studies import has_gpu_form, study_path

    def needs(path: Path) -> bool:
        try:
            loaded = load_plan(path)
        except NearmetalError:
            return False
        return any(req.tool == "torch" for cell in loaded.cells for req in _cell_requirements(cell))

    if needs(study_path(name)):
        return "yes"
    if has_gpu_form(name) and needs(study_path(name, form="gpu")):
        return "GPU form"
    return "no"


def _complete_study(incomplete: str) -> list[str]:
    from nearmetal.studies import study_names

    return [n for n in ["list", *study_names()] if n.startswith(incomplete)]


@app.command()
@with_backend_options
def study(
    name: Annotated[str, typer.Argument(help="a shipped study, or 'list'", autocompletion=_complete_study)],
    db: DbOption = None,
    workdir: OptionalWorkdirOption = None,
    seed: Annotated[
        int | None, typer.Option(help="seed for trial order and resampling", min=0, max=2**31 - 1)
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="the study's small form (for CI)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="progress and results as JSON lines")] = False,
    html: Annotated[
        bool, typer.Option("--html/--no-html", help="write report.html into the run's directory")
    ] = True,
    form: Annotated[
        str, typer.Option("--form", help="auto (GPU form when a CUDA GPU is here), cpu or gpu")
    ] = "auto",
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="name the run (default: date-time-random)")
    ] = None,
    backend: BackendOption = "local",
    allow_large: AllowLargeOption = False,
    allow_shared_workdir: AllowSharedWorkdirOption = False,
    allow_path: AllowPathOption = None,
    junit: JunitOption = None,
    fail_above: FailAboveOption = None,
    allow_network: AllowNetworkOption = False,
    shield: ShieldOption = False,
    backend_options: BackendOptions = None,
) -> None:
    """Run a shipped study (nearmetal study list shows them)."""
    from nearmetal.studies import choose_form, study_description, study_names, study_path

    if name == "list":
        table = Table("study", "needs PyTorch", "what it reproduces")
        for n in study_names():
            table.add_row(n, torch_need(n), study_description(n))
        console.print(table)
        return
    try:
        chosen, why = choose_form(name, form, quick)
        path = study_path(name, quick=quick, form=chosen)
    except NearmetalError as exc:
        fail(exc)
    if form == "auto" and why != "the study has one form" and not as_json:
        err_console.print(f"{name}: {chosen.upper()} form ({why})", highlight=False)
    run_plan_command(
        path,
        db,
        workdir,
        seed,
        quiet,
        as_json,
        html=html,
        run_id=run_id,
        backend=backend,
        backend_options=backend_options,
        allow_large=allow_large,
        allow_shared_workdir=allow_shared_workdir,
        allow_paths=allow_path,
        junit=junit,
        fail_above=fail_above,
        allow_network=allow_network,
        shield=shield,
    )
