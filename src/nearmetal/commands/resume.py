"""``nearmetal resume RUN_ID``: continue a run that was killed, interrupted or failed."""

from __future__ import annotations

from typing import Annotated

import typer

from nearmetal.commands.common import DbOption, app, run_plan_command
from nearmetal.commands.options import (
    AllowLargeOption,
    AllowNetworkOption,
    AllowPathOption,
    AllowSharedWorkdirOption,
    BackendOptions,
    OptionalWorkdirOption,
    ShieldOption,
    with_backend_options,
)


@app.command()
@with_backend_options
def resume(
    run_id: Annotated[str, typer.Argument(help="the run to continue (a unique prefix is enough)")],
    db: DbOption = None,
    workdir: OptionalWorkdirOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="progress and results as JSON lines")] = False,
    allow_large: AllowLargeOption = False,
    allow_shared_workdir: AllowSharedWorkdirOption = False,
    allow_path: AllowPathOption = None,
    allow_network: AllowNetworkOption = False,
    shield: ShieldOption = False,
    backend_options: BackendOptions = None,
) -> None:
    """Continue a stored run with its stored plan and seed: finished trials are kept, the trial that was
    cut off and the rest of the schedule are run, what the dead process left on the host is removed. The
    run goes on with the backend and options it was started with; backend options given here replace
    those (another --kubeconfig, a --partition for the trials still to run)."""
    run_plan_command(
        None,
        db,
        workdir,
        None,
        quiet,
        as_json,
        resume=run_id,
        allow_large=allow_large,
        allow_shared_workdir=allow_shared_workdir,
        allow_paths=allow_path,
        allow_network=allow_network,
        shield=shield,
        backend_options=backend_options,
    )
