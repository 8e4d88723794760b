"""The ``nearmetal`` command: a thin typer layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console

from nearmetal.errors import NearmetalError


class _Commands(typer.core.TyperGroup):
    """The command group: flags are shown as plain flags in help (``--quiet``, not ``--quiet <bool>``)."""

    @staticmethod
    def _plain(params: list[Any]) -> list[Any]:
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # typer shows a flag's type (<bool>) unless it has a metavar
        return params

    def get_params(self, ctx: Any) -> list[Any]:
        return self._plain(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            self._plain(command.get_params(ctx))  # with --help, which get_params adds (and keeps)
        return command


app = typer.Typer(
    name="nearmetal",
    cls=_Commands,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    help="How near to bare metal does my workload run here, and if not, why not?",
)
console = Console()
if not console.is_terminal:  # piped into a file or a CI log: do not squeeze tables into 80 columns
    console.width = 150
err_console = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="NEARMETAL_DB",
        help="result store: a SQLite path or SQLAlchemy URL [default: ./nearmetal.db]",
    ),
]
WorkdirOption = Annotated[Path, typer.Option("--workdir", help="where trial outputs are kept")]
BackendOption = Annotated[
    str, typer.Option("--backend", help="where trials run: local, slurm (batch jobs) or kubernetes (Jobs)")
]
PartitionOption = Annotated[str | None, typer.Option("--partition", help="slurm: partition")]
AccountOption = Annotated[str | None, typer.Option("--account", help="slurm: account to charge")]
TimeOption = Annotated[str | None, typer.Option("--time", help="slurm: time limit per job (sbatch --time)")]
ParallelOption = Annotated[
    int | None, typer.Option("--parallel", help="slurm: jobs in flight at once (default 1: no overlap)")
]
NamespaceOption = Annotated[str | None, typer.Option("--namespace", help="kubernetes: namespace")]
KubeconfigOption = Annotated[str | None, typer.Option("--kubeconfig", help="kubernetes: kubeconfig file")]
ImageOption = Annotated[
    str | None,
    typer.Option(
        "--image",
        envvar="NEARMETAL_KUBE_IMAGE",
        help="kubernetes: image with the workload programs (nearmetal image build makes one)",
    ),
]
ShieldOption = Annotated[
    bool,
    typer.Option(
        "--shield",
        help="every trial (baseline included) in a cgroup of the highest CPU and I/O weight, above the layers'"
        " cgroups (a quota still binds): conclusive on a busy host; recorded on the run (local backend, root)",
    ),
]
AllowLargeOption = Annotated[
    bool,
    typer.Option(
        "--allow-large",
        help="run even when the plan asks for more CPUs, memory, disk or trials than this machine has",
    ),
]
AllowPathOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--allow-path",
        metavar="DIR",
        help="a directory outside the run's directory the plan may write into (fio.directory …); repeatable",
    ),
]
OptionalWorkdirOption = Annotated[
    Path | None,
    typer.Option(
        "--workdir",
        help="where trial outputs are kept [default: ./nearmetal-runs; a resumed run: where it was]",
    ),
]


def _version(value: bool) -> None:
    if value:
        from nearmetal import __version__

        print(f"nearmetal {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """How near to bare metal does my workload run here, and if not, why not?"""


def fail(exc: NearmetalError) -> None:
    from rich.markup import escape

    # messages carry plan values and paths: escaped, so "[...]" in them is text, not rich markup; not
    # wrapped, so a log keeps each problem on one line
    separator = "\n" if "\n" in exc.message else " "
    err_console.print(
        f"[bold red]error:[/bold red]{separator}{escape(exc.message)}", highlight=False, soft_wrap=True
    )
    if exc.fix:
        err_console.print(f"  [bold]fix:[/bold] {escape(exc.fix)}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def plan_errors(exc: NearmetalError) -> None:
    # one line per problem, nothing else: file:line field.path: message
    for line in exc.message.splitlines():
        err_console.print(line, highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def run_plan_command(
    plan: Path | str | None,
    db: str | None,
    workdir: Path | None,
    seed: int | None,
    quiet: bool,
    as_json: bool,
    report: bool = True,
    html: bool = True,
    run_id: str | None = None,
    resume: str | None = None,
    backend: str = "local",
    backend_options: dict | None = None,
    allow_large: bool = False,
    allow_paths: list[Path] | None = None,
    shield: bool = False,
) -> None:
    """Run a plan, or (``resume``) continue a stored run, optionally checking ``plan`` is its plan.
    ``backend`` names where trials run; ``backend_options`` are its command-line options (None: not given).
    A resumed run uses the backend (and options) it was started with."""
    from nearmetal.backends.select import make_backend
    from nearmetal.errors import PlanError
    from nearmetal.plan import load_plan
    from nearmetal.report.progress import JsonProgress, RichProgress
    from nearmetal.runner import DEFAULT_WORKDIR, RunInterrupted, resume_run, run_plan

    loaded = None
    if plan is not None:
        try:
            loaded = load_plan(plan)
        except PlanError as exc:
            plan_errors(exc)
    progress = JsonProgress() if as_json else (None if quiet else RichProgress(err_console))
    try:
        if resume:
            if seed is not None or run_id is not None:
                raise NearmetalError(
                    "a resumed run keeps its run id and seed",
                    fix="drop --seed/--run-id when resuming",
                )
            result = resume_run(
                resume,
                db=db,
                plan=loaded,
                workdir=workdir,
                progress=progress,
                allow_paths=allow_paths or (),
                allow_large=allow_large,
                shield=shield,
            )
            if not result.records and result.status == "finished":
                err_console.print(f"run {result.run_id} had already finished; nothing to resume")
        else:
            assert loaded is not None
            result = run_plan(
                loaded,
                db=db,
                workdir=workdir or Path(DEFAULT_WORKDIR),
                progress=progress,
                seed=seed,
                run_id=run_id,
                backend=make_backend(backend, loaded.plan, **(backend_options or {})),
                allow_paths=allow_paths or (),
                allow_large=allow_large,
                shield=shield,
            )
    except RunInterrupted as exc:
        err_console.print(
            f"[yellow]{exc}[/yellow]; see them with: nearmetal report {exc.run_id}; "
            f"continue with: nearmetal resume {exc.run_id}",
            highlight=False,
        )
        if html:
            run_html_report(exc.run_id, db, stored_run_dir(exc.run_id, db), quiet=quiet or as_json)
        raise typer.Exit(130) from None
    except PlanError as exc:  # found at run time (paths the plan may not write): still one line each
        plan_errors(exc)
    except NearmetalError as exc:
        fail(exc)
    html_path = run_html_report(result.run_id, db, result.workdir, quiet=True) if html else None
    failure = run_failure(result)
    if as_json:
        from nearmetal.api import load_results
        from nearmetal.redact import redact_url

        results = load_results(result.run_id, db=db)
        print(
            json.dumps(
                {
                    "run_id": result.run_id,
                    "db": redact_url(result.db_url),
                    "status": result.status,
                    "html": str(html_path) if html_path else None,
                    "rows": results.table(),
                },
                default=str,
            )
        )
    else:
        console.print(f"run id: [bold cyan]{result.run_id}[/bold cyan]", highlight=False)
        if report:
            show_report(result.run_id, db, "terminal", None, None)
        if html_path and not quiet:
            err_console.print(f"HTML report: {html_path}", highlight=False)
    if failure:
        err_console.print(f"[bold red]error:[/bold red] {failure}", highlight=False)
        raise typer.Exit(1)


def run_failure(result: Any) -> str | None:
    """Why a run that went to its end still failed (exit 1): every trial it ran failed, or the filesystem
    of its directory filled up (then trials fail for that reason, whatever they say)."""
    from nearmetal.machine import free_disk_bytes

    ran = [r for r in result.records if not r.resumed and not r.trial.warmup]
    if not ran:
        return None
    failed = [r for r in ran if r.status != "ok"]
    if not failed:
        return None
    free = free_disk_bytes(Path(result.workdir)) if result.workdir else None
    if free is not None and free < 1024**2:
        return (
            f"the filesystem of {result.workdir} is full ({free:,} bytes free); {len(failed)} of {len(ran)} "
            f"trials failed; free space and continue: nearmetal resume {result.run_id}"
        )
    if len(failed) == len(ran):
        from nearmetal.redact import redact_text

        first = next((r.error for r in failed if r.error), None) or failed[0].status
        return (
            f"every trial of run {result.run_id} failed ({len(ran)}); the first: "
            f"{redact_text(first.splitlines()[0][:200])}"
            f"; see them with: nearmetal report {result.run_id}"
        )
    return None


def stored_run_dir(run_id: str, db: str | None) -> Path | None:
    try:
        from nearmetal.store import Store

        workdir = Store(db).get_run(run_id).workdir
    except Exception:
        return None
    return Path(workdir) if workdir else None


def run_html_report(run_id: str, db: str | None, run_dir: Path | None, quiet: bool) -> Path | None:
    """The self-contained HTML report in the run's directory; a failure here never fails the run."""
    if run_dir is None:
        return None
    try:
        from nearmetal.api import load_results
        from nearmetal.report.html import REPORT_NAME, write_html_report

        return write_html_report(load_results(run_id, db=db), Path(run_dir).resolve() / REPORT_NAME)
    except KeyboardInterrupt:  # a second Ctrl-C: skip the report, the run is stored
        return None
    except Exception as exc:  # the measurements are stored; a report can be made again later
        if not quiet:
            err_console.print(
                f"[yellow]HTML report not written[/yellow] ({type(exc).__name__}: {exc}); "
                f"make it later with: nearmetal report {run_id} --html report.html",
                highlight=False,
            )
        return None


def write_output(output: Path, text: str) -> None:
    """``report -o``: a missing directory or an unwritable place is one line, not a traceback."""
    if not output.parent.is_dir():
        raise NearmetalError(
            f"--output {output}: the directory {output.parent} does not exist",
            fix=f"create it first (mkdir -p {output.parent}) or write elsewhere",
        )
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise NearmetalError(f"--output {output}: cannot write: {exc.strerror or exc}") from None


def show_report(
    run_id: str | None,
    db: str | None,
    fmt: str | None,
    metric: str | None,
    output: Path | None,
    html: Path | None = None,
    png: Path | None = None,
) -> None:
    from nearmetal.api import load_results
    from nearmetal.report import markdown_report, print_report

    results = load_results(run_id, db=db)
    images: list[tuple[Any, Path]] = []
    if png is not None:
        from nearmetal.report.png import write_png_figures

        written, problems = write_png_figures(results, png)
        images = written
        err_console.print(f"wrote {len(written)} figures to {png}/", highlight=False)
        for problem in problems:
            err_console.print(f"[yellow]figure not drawn[/yellow]: {problem.builder}: {problem.error}")
    if html is not None:
        from nearmetal.report.html import write_html_report

        path = write_html_report(results, html)
        err_console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)
    if fmt is None:
        if html is not None or png is not None:
            return  # files were asked for; the terminal table only when a format is named too
        fmt = "terminal"
    if fmt in ("markdown", "html"):
        if fmt == "markdown":
            base = output.parent if output else Path.cwd()
            text = markdown_report(results, metric, images=images, relative_to=base)
        else:
            from nearmetal.report.html import html_report

            text = html_report(results)
        if output:
            write_output(output, text)
            err_console.print(f"wrote {output}")
        else:
            sys.stdout.write(text)
    elif fmt == "json":
        text = json.dumps({"run_id": results.run_id, "rows": results.table(metric)}, default=str, indent=2)
        if output:
            write_output(output, text + "\n")
            err_console.print(f"wrote {output}")
        else:
            print(text)
    else:
        print_report(results, console, metric)


def backend_options(
    partition: str | None,
    account: str | None,
    time_limit: str | None,
    parallel: int | None,
    namespace: str | None,
    kubeconfig: str | None,
    image: str | None,
) -> dict[str, Any]:
    """The backend options ``run``, ``study`` and ``check`` share, as the backends' option models take them."""
    return dict(
        partition=partition,
        account=account,
        time=time_limit,
        parallel=parallel,
        namespace=namespace,
        kubeconfig=kubeconfig,
        image=image,
    )
