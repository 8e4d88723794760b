"""The ``nearmetal`` command: a thin typer layer over the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from nearmetal.commands.options import BackendOptions
from nearmetal.errors import NearmetalError
from nearmetal.textsafe import SafeConsole, plain, strip_controls


def _range_words(low: Any, high: Any) -> str | None:
    """A number range in words ("≥ 2", "0 to 2147483647"), not Python's ``0<=x<=2147483647``."""
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"≥ {low}"
    if high is not None:
        return f"≤ {high}"
    return None


def _value_word(param: Any) -> str | None:
    """What help shows for a value: a word (TEXT, N, X, PATH; an argument its own name, PLAN), never a
    Python type (``<list[str]>``, ``<int range>``, ``{plan}``); None leaves typer's (a choice's values)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and getattr(descriptor, "is_choice", False):
        return None
    if getattr(param, "param_type_name", "") == "argument":
        return str(param.name or "value").upper()
    annotation = getattr(descriptor, "annotation", None)
    kind = getattr(annotation, "__name__", "") or type(getattr(param, "type", None)).__name__
    words = {"int": "N", "float": "X", "Path": "PATH", "IntParamType": "N", "IntRange": "N"}
    words |= {"FloatParamType": "X", "FloatRange": "X"}
    return words.get(kind, "TEXT")


class _Commands(typer.core.TyperGroup):
    """The command group: help shows flags as plain flags (``--quiet``, not ``--quiet <bool>``), values by a
    word (TEXT, N, PATH, PLAN), never a Python type, and number ranges in words."""

    @staticmethod
    def _plain(params: list[Any]) -> list[Any]:
        for param in params:
            if getattr(param, "_nearmetal_plain", False):
                continue
            param._nearmetal_plain = True
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # typer shows a flag's type (<bool>) unless it has a metavar
                continue
            word = param.metavar if param.metavar is not None else _value_word(param)
            if word is not None:
                param.metavar = word
                param.display_type_rich = lambda ctx=None, word=word: word  # an argument's type column too
            if getattr(param, "param_type_name", "") == "argument" and word is not None:
                # the usage line: PLAN, [RUN], COMMAND... (typer writes a required one as {plan})
                usage = word + ("..." if getattr(param, "nargs", 1) != 1 else "")
                usage = usage if param.required else f"[{usage}]"
                param._usage_display_name = lambda usage=usage: usage
            if hasattr(param, "_get_number_range_help_str"):
                low, high = getattr(param, "min", None), getattr(param, "max", None)
                param._get_number_range_help_str = lambda low=low, high=high: _range_words(low, high)
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
console = SafeConsole()
if not console.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
    # piped into a file or a CI log with no COLUMNS: do not squeeze tables into 80 columns (a COLUMNS the
    # user or the CI sets is kept: rich reads it)
    console.width = 150
err_console = SafeConsole(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="NEARMETAL_DB",
        help="result store: a SQLite path or SQLAlchemy URL \\[default: ./nearmetal.db]",
    ),
]


def complete_run_id(ctx: Any, incomplete: str) -> list[str]:
    """Tab completion of run ids from the store the command would read (--db, NEARMETAL_DB or the
    default); nothing when there is no store (completion never creates one)."""
    try:
        from nearmetal.store import Store

        db = (ctx.params or {}).get("db") if ctx is not None else None
        store = Store(db, create=False)
        ids = [r.id for r in store.list_runs(200)]
        store.engine.dispose()
    except Exception:
        return []
    return [i for i in ids if i.startswith(incomplete)]


def complete_from(*values: str) -> Any:
    """Tab completion of an option's fixed values (--format, --backend)."""

    def complete(incomplete: str) -> list[str]:
        return [v for v in values if v.startswith(incomplete)]

    return complete


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
    # messages carry plan values, paths and stored text: escaped, so "[...]" in them is text, not rich
    # markup, and control characters (ESC …) shown as \xNN, never sent to the terminal; not
    # wrapped, so a log keeps each problem on one line
    separator = "\n" if "\n" in exc.message else " "
    err_console.print(
        f"[bold red]error:[/bold red]{separator}{plain(exc.message)}", highlight=False, soft_wrap=True
    )
    if exc.fix:
        err_console.print(f"  [bold]fix:[/bold] {plain(exc.fix)}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def plan_errors(exc: NearmetalError) -> None:
    # one line per problem, nothing else: file:line field.path: message
    for line in exc.message.splitlines():
        err_console.print(strip_controls(line), highlight=False, markup=False, soft_wrap=True)
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
    backend_options: BackendOptions = None,
    allow_large: bool = False,
    allow_paths: list[Path] | None = None,
    loaded_plan: Any = None,
    junit: Path | None = None,
    fail_above: str | None = None,
    allow_shared_workdir: bool = False,
    allow_network: bool = False,
    shield: bool = False,
) -> None:
    """Run a plan, or (``resume``) continue a stored run, optionally checking ``plan`` is its plan.
    ``junit``: write the verdicts as JUnit XML there; ``fail_above``: exit 3 when a loss lies wholly above it.
    ``loaded_plan`` (a ``LoadedPlan``) is a plan made here rather than read from a file (``nearmetal try``).
    ``backend`` names where trials run; ``backend_options`` are its command-line options (None: not given).
    A resumed run uses the backend (and options) it was started with; ``backend_options`` given replace
    those."""
    from nearmetal.backends.select import make_backend
    from nearmetal.errors import PlanError
    from nearmetal.plan import load_plan
    from nearmetal.report.progress import JsonProgress
    from nearmetal.run.preflight import Allowances
    from nearmetal.run.runner import DEFAULT_WORKDIR, RunInterrupted, resume_run, run_plan

    allow = Allowances(tuple(allow_paths or ()), allow_large, allow_shared_workdir, allow_network)

    loaded = loaded_plan
    try:
        threshold = parse_threshold(fail_above) if fail_above is not None else None
    except NearmetalError as exc:
        fail(exc)
    if plan is not None and loaded is None:
        try:
            loaded = load_plan(plan)
        except PlanError as exc:
            plan_errors(exc)
    progress = JsonProgress() if as_json else (None if quiet else terminal_progress())
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
                allow=allow,
                shield=shield,
                backend_options=backend_options,
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
                allow=allow,
                shield=shield,
            )
    except RunInterrupted as exc:
        err_console.print(
            f"[yellow]{plain(exc)}[/yellow]; see them with: nearmetal report {exc.run_id}; "
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
            err_console.print(f"HTML report: {plain(html_path)}", highlight=False)
    if failure:
        err_console.print(f"[bold red]error:[/bold red] {plain(failure)}", highlight=False)
        raise typer.Exit(1)
    verdicts(result.run_id, db, junit, threshold)


# exit status when a loss lies wholly above --fail-above (errors use 1 and 2)
REGRESSION_EXIT = 3


def parse_threshold(value: str) -> float:
    """``"5%"``, ``"0.05"``, ``"0"`` → a fraction in [0, 1)."""
    import re

    match = re.fullmatch(r"\s*\+?([0-9]*\.?[0-9]+)\s*(%?)\s*", value)
    if not match:
        raise NearmetalError(f"--fail-above {value!r} is not a percentage", fix="write it like 5% (or 0.05)")
    number = float(match.group(1))
    fraction = number / 100 if match.group(2) else number
    if not 0 <= fraction < 1:
        raise NearmetalError(f"--fail-above {value!r} is out of range", fix="give a loss between 0% and 100%")
    return fraction


def verdicts(run_id: str, db: str | None, junit: Path | None, threshold: float | None) -> None:
    """``--junit FILE`` (one test case per compared cell) and ``--fail-above`` (exit 3 on a loss wholly
    above it) of a stored run: what a CI job reads."""
    if junit is None and threshold is None:
        return
    from nearmetal.api import load_results
    from nearmetal.report.junit import junit_xml

    results = load_results(run_id, db=db)
    text = junit_xml([results], threshold or 0.0)
    if junit is not None:
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)
            junit.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(NearmetalError(f"--junit {junit}: cannot write: {exc.strerror or exc}"))
        err_console.print(f"wrote {junit} ({text.count('<testcase ')} test cases)", highlight=False)
    if threshold is not None:
        failed = text.count("<failure ")
        if failed:
            err_console.print(
                f"[bold red]{failed} loss(es) lie wholly above {threshold:.1%}[/bold red]", highlight=False
            )
            raise typer.Exit(REGRESSION_EXIT)
        err_console.print(f"no loss lies wholly above {threshold:.1%}", highlight=False)


JunitOption = Annotated[
    Path | None,
    typer.Option(
        "--junit",
        metavar="FILE",
        help="also write the verdicts as JUnit XML for CI: a test case per compared cell, failed when its "
        "loss lies wholly above --fail-above (default 0%)",
    ),
]
FailAboveOption = Annotated[
    str | None,
    typer.Option(
        "--fail-above",
        metavar="PCT",
        help="exit 3 when a loss's whole interval lies above this, e.g. 5%",
    ),
]


def terminal_progress() -> Any:
    """A live bar on a terminal; one plain line per trial in a pipe or a CI log."""
    from nearmetal.report.progress import PlainProgress, RichProgress

    return RichProgress(err_console) if err_console.is_terminal else PlainProgress()


def run_failure(result: Any) -> str | None:
    """Why a run that went to its end still failed (exit 1): every trial it ran failed, or the filesystem
    of its directory filled up (then trials fail for that reason, whatever they say)."""
    from nearmetal.host.machine import free_disk_bytes

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
            err_console.print(
                f"[yellow]figure not drawn[/yellow]: {plain(problem.builder)}: {plain(problem.error)}"
            )
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
