"""The ``nearmetal`` command: a thin typer layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.table import Table

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
    str | None, typer.Option("--image", help="kubernetes: image with the workload programs")
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


def _fail(exc: NearmetalError) -> None:
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


def _plan_errors(exc: NearmetalError) -> None:
    # one line per problem, nothing else: file:line field.path: message
    for line in exc.message.splitlines():
        err_console.print(line, highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _run(
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
            _plan_errors(exc)
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
            )
    except RunInterrupted as exc:
        err_console.print(
            f"[yellow]{exc}[/yellow]; see them with: nearmetal report {exc.run_id}; "
            f"continue with: nearmetal resume {exc.run_id}",
            highlight=False,
        )
        if html:
            _run_html_report(exc.run_id, db, _stored_run_dir(exc.run_id, db), quiet=quiet or as_json)
        raise typer.Exit(130) from None
    except PlanError as exc:  # found at run time (paths the plan may not write): still one line each
        _plan_errors(exc)
    except NearmetalError as exc:
        _fail(exc)
    html_path = _run_html_report(result.run_id, db, result.workdir, quiet=True) if html else None
    failure = _run_failure(result)
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
            _report(result.run_id, db, "terminal", None, None)
        if html_path and not quiet:
            err_console.print(f"HTML report: {html_path}", highlight=False)
    if failure:
        err_console.print(f"[bold red]error:[/bold red] {failure}", highlight=False)
        raise typer.Exit(1)


def _run_failure(result: Any) -> str | None:
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


def _stored_run_dir(run_id: str, db: str | None) -> Path | None:
    try:
        from nearmetal.store import Store

        workdir = Store(db).get_run(run_id).workdir
    except Exception:
        return None
    return Path(workdir) if workdir else None


def _run_html_report(run_id: str, db: str | None, run_dir: Path | None, quiet: bool) -> Path | None:
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


def _write_output(output: Path, text: str) -> None:
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


def _report(
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
            _write_output(output, text)
            err_console.print(f"wrote {output}")
        else:
            sys.stdout.write(text)
    elif fmt == "json":
        text = json.dumps({"run_id": results.run_id, "rows": results.table(metric)}, default=str, indent=2)
        if output:
            _write_output(output, text + "\n")
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


@app.command()
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
    partition: PartitionOption = None,
    account: AccountOption = None,
    time_limit: TimeOption = None,
    parallel: ParallelOption = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    image: ImageOption = None,
    allow_large: AllowLargeOption = False,
    allow_path: AllowPathOption = None,
) -> None:
    """Run a plan: every trial is stored as it ends; prints the run id and the loss table, and writes a
    self-contained HTML report into the run's directory."""
    options = backend_options(partition, account, time_limit, parallel, namespace, kubeconfig, image)
    _run(
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
        backend_options=options,
        allow_large=allow_large,
        allow_paths=allow_path,
    )


@app.command()
def report(
    run_id: Annotated[str | None, typer.Argument(help="run id (default: the latest run)")] = None,
    db: DbOption = None,
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="terminal (default), markdown, json or html")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="metric to lead with (default: the workload's)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write to a file")] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="write a self-contained HTML report (tables, plots) here")
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option("--png", help="write every figure as PNG into this directory (Markdown links them)"),
    ] = None,
) -> None:
    """Show a stored run's tables again, or write them as Markdown, JSON, HTML with plots, or PNG figures."""
    if fmt is not None and fmt not in ("terminal", "markdown", "json", "html"):
        _fail(NearmetalError(f"unknown format {fmt!r}", fix="use terminal, markdown, json or html"))
    try:
        _report(run_id, db, fmt, metric, output, html=html, png=png)
    except NearmetalError as exc:
        _fail(exc)
    except ImportError as exc:
        _fail(
            NearmetalError(
                f"this report needs a library that is not installed: {exc.name or exc}",
                fix="pip install 'nearmetal[png]'",
            )
        )


@app.command()
def runs(
    db: DbOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="show at most this many runs")] = 20,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="the runs as a JSON list (id, plan, status, resumable, times, trials, host)"
        ),
    ] = False,
) -> None:
    """List stored runs, newest first."""
    import datetime

    from nearmetal.store import Store

    try:
        store = Store(db)
    except NearmetalError as exc:
        _fail(exc)
    import socket

    from nearmetal.runlock import is_live

    def iso(stamp: float | None) -> str | None:
        if stamp is None:
            return None
        return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat(timespec="seconds")

    here = socket.gethostname()
    listed = []
    for r in store.list_runs(limit):
        status, resumable = r.status, False
        if status == "running" and r.host == here and not is_live(r.id):
            status, resumable = "died", True  # its process is gone: killed, or the machine rebooted
        elif status in ("interrupted", "failed"):
            resumable = True
        listed.append((r, status, resumable))
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "run_id": r.id,
                        "plan": r.name,
                        "status": status,
                        "resumable": resumable,
                        "started_at": iso(r.started_at),
                        "ended_at": iso(r.ended_at),
                        "trials": r.trials,
                        "host": r.host,
                    }
                    for r, status, resumable in listed
                ],
                indent=1,
            )
        )
        return
    table = Table("run", "plan", "status", "started", "trials", "host")
    for r, status, resumable in listed:
        started = datetime.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M:%S")
        if status == "died":
            status = "died (nearmetal resume)"
        elif resumable:
            status = f"{status} (nearmetal resume)"
        table.add_row(r.id, r.name, status, started, str(r.trials), r.host)
    console.print(table)


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
        _fail(exc)
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
        for path, metrics in results.items():
            table = Table("metric", "value", "unit", "better", title=path, title_justify="left")
            for m in metrics:
                table.add_row(m["name"], f"{m['value']:.6g}", m["unit"], m["direction"])
            console.print(table)
    if failed:
        raise typer.Exit(1)


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
        _fail(NearmetalError(f"unknown check(s): {', '.join(unknown)}", fix="see nearmetal doctor --list"))
    findings = run_checks(only or None)
    if for_run:
        from nearmetal.store import Store

        try:
            store = Store(db)
            run_id = store.get_run(for_run).id
            store.add_findings(run_id, [f.to_dict() for f in findings])
        except NearmetalError as exc:
            _fail(exc)
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
def schema() -> None:
    """Print the plan's JSON Schema."""
    from nearmetal.plan import plan_json_schema

    print(json.dumps(plan_json_schema(), indent=2))


def _complete_study(incomplete: str) -> list[str]:
    from nearmetal.studies import study_names

    return [n for n in ["list", *study_names()] if n.startswith(incomplete)]


@app.command()
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
    partition: PartitionOption = None,
    account: AccountOption = None,
    time_limit: TimeOption = None,
    parallel: ParallelOption = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    image: ImageOption = None,
    allow_large: AllowLargeOption = False,
    allow_path: AllowPathOption = None,
) -> None:
    """Run a shipped study (nearmetal study list shows them)."""
    from nearmetal.studies import choose_form, study_description, study_names, study_path

    if name == "list":
        table = Table("study", "what it reproduces")
        for n in study_names():
            table.add_row(n, study_description(n))
        console.print(table)
        return
    try:
        chosen, why = choose_form(name, form, quick)
        path = study_path(name, quick=quick, form=chosen)
    except NearmetalError as exc:
        _fail(exc)
    if form == "auto" and why != "the study has one form" and not as_json:
        err_console.print(f"{name}: {chosen.upper()} form ({why})", highlight=False)
    options = backend_options(partition, account, time_limit, parallel, namespace, kubeconfig, image)
    _run(
        path,
        db,
        workdir,
        seed,
        quiet,
        as_json,
        html=html,
        run_id=run_id,
        backend=backend,
        backend_options=options,
        allow_large=allow_large,
        allow_paths=allow_path,
    )


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
    from nearmetal.cleanup import cleanup as do_cleanup
    from nearmetal.cleanup import find_leftovers, partition_live

    if dry_run:
        leftovers = find_leftovers(run_id)
        dead, kept = (leftovers, []) if include_live else partition_live(leftovers, run_id)
        for leftover in dead:
            console.print(str(leftover), highlight=False)
        for leftover, why in kept:
            console.print(f"{leftover} (kept: {why})", highlight=False)
        return
    report = do_cleanup(run_id, include_live=include_live)
    for leftover in report.removed:
        console.print(f"removed {leftover}", highlight=False)
    for leftover, why in report.skipped:
        console.print(f"kept {leftover}: {why}", highlight=False)
    for leftover, error in report.failed:
        err_console.print(f"[red]could not remove {leftover}[/red]: {error}", highlight=False)
    if not report.removed and not report.failed:
        console.print("nothing to clean up")
    if report.failed:
        raise typer.Exit(1)


# commands of the other areas register themselves on `app` (one import line per module). Run as
# ``python -m nearmetal.cli`` this file is ``__main__``, a second copy of the module: the command modules
# register on ``nearmetal.cli.app``, so ``__main__`` hands over to that one (see the end of the file)
if __name__ != "__main__":
    import importlib

    import nearmetal.commands

    # import_module (not ``import *``) also works when a command module is imported first and is itself
    # in the middle of importing this one
    for _module in nearmetal.commands.__all__:
        importlib.import_module(f"nearmetal.commands.{_module}")


def main() -> None:
    try:
        app()
    except NearmetalError as exc:  # anything a command did not catch itself
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    import nearmetal.cli

    nearmetal.cli.main()
