"""``nearmetal try``: the one-off question without a plan file, as ``hyperfine 'cmd'`` is for timing.

``nearmetal try --layer cpu-quota:cpus=0.8 -- lmp -in in.lj`` makes a plan of one ``command`` workload (the
program after ``--``, no shell), a bare-metal baseline and one variant per ``--layer``; it runs that plan like
``nearmetal run`` (interleaved blocks, the same analysis, table and report) and prints the plan first, so it
can be saved and run again (``--show-plan`` prints it and runs nothing).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
import yaml

from nearmetal.commands.common import (
    DbOption,
    FailAboveOption,
    JunitOption,
    app,
    err_console,
    fail,
    plan_errors,
    run_plan_command,
)
from nearmetal.commands.options import AllowLargeOption, OptionalWorkdirOption
from nearmetal.errors import NearmetalError, PlanError

LAYER_SPEC = "KIND[:KEY=VALUE[,KEY=VALUE…]][+KIND…]"


def parse_layer_spec(spec: str) -> list[dict[str, Any]]:
    """``cpu-quota:cpus=0.8`` → ``[{layer: cpu-quota, cpus: 0.8}]``; ``netns+cpu-quota:cpus=1`` stacks two
    layers in one variant. Values are read as YAML scalars (``0.8`` a number, ``true`` a boolean,
    ``[1,2]`` a list)."""
    layers = []
    for part in spec.split("+"):
        kind, _, options = part.strip().partition(":")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", kind):
            raise NearmetalError(
                f"--layer {spec!r}: {kind!r} is not a layer kind", fix=f"write --layer {LAYER_SPEC}"
            )
        layer: dict[str, Any] = {"layer": kind}
        for item in filter(None, (o.strip() for o in options.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise NearmetalError(
                    f"--layer {spec!r}: {item!r} is not KEY=VALUE", fix=f"write --layer {LAYER_SPEC}"
                )
            try:
                layer[key.strip()] = yaml.safe_load(value) if value.strip() else ""
            except yaml.YAMLError:
                layer[key.strip()] = value
        layers.append(layer)
    return layers


def variant_name(spec: str) -> str:
    """A variant name from a layer spec: ``cpu-quota:cpus=0.8`` → ``cpu-quota-cpus-0.8``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec).strip("-.") or "layer"
    return name[:63]


def quick_plan(
    argv: list[str], layers: list[str], repeats: int, warmup: int, timeout: str, name: str
) -> dict[str, Any]:
    """The plan ``nearmetal try`` runs: one command workload, bare metal as the baseline, a variant per
    ``--layer``, interleaved."""
    variants: dict[str, Any] = {"bare-metal": []}
    for spec in layers:
        variant = variant_name(spec)
        if variant in variants:
            raise NearmetalError(f"--layer {spec!r} is given twice", fix="give each variant once")
        variants[variant] = parse_layer_spec(spec)
    return {
        "name": name,
        "description": "made by nearmetal try: " + " ".join(argv)[:200],
        "workloads": {"command": {"kind": "command", "params": {"argv": argv}}},
        "variants": variants,
        "baseline": "bare-metal",
        "repeats": repeats,
        "warmup": warmup,
        "order": "interleaved",
        "timeout": timeout,
    }


def plan_yaml(plan: dict[str, Any]) -> str:
    return yaml.safe_dump(plan, sort_keys=False, allow_unicode=True, width=100)


@app.command(
    name="try",
    context_settings={"allow_interspersed_args": False},
)
def try_(
    command: Annotated[
        list[str], typer.Argument(help="the program and its arguments, after -- (run as an argv: no shell)")
    ],
    layer: Annotated[
        list[str],
        typer.Option(
            "--layer",
            "-l",
            metavar="SPEC",
            help=f"a variant to compare with bare metal: {LAYER_SPEC}, e.g. cpu-quota:cpus=0.8; repeatable",
        ),
    ],
    repeats: Annotated[int, typer.Option("--repeats", "-r", help="measured trials per variant", min=2)] = 5,
    warmup: Annotated[int, typer.Option("--warmup", help="unmeasured trials per variant first", min=0)] = 1,
    timeout: Annotated[str, typer.Option("--timeout", help="per-trial timeout, e.g. 300s or 5m")] = "10m",
    name: Annotated[str, typer.Option("--name", help="the plan's (and run's) name")] = "try",
    show_plan: Annotated[
        bool, typer.Option("--show-plan", help="print the plan (YAML) on stdout and run nothing")
    ] = False,
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
    allow_large: AllowLargeOption = False,
    junit: JunitOption = None,
    fail_above: FailAboveOption = None,
) -> None:
    """Compare a command on bare metal with the same command under layers, with no plan file:
    nearmetal try --layer cpu-quota:cpus=0.8 -- lmp -in in.lj. Prints the plan it runs (save it and
    nearmetal run it again)."""
    from nearmetal.plan import parse_plan_text

    try:
        plan = quick_plan(list(command), list(layer), repeats, warmup, timeout, name)
    except NearmetalError as exc:
        fail(exc)
    text = plan_yaml(plan)
    try:
        loaded = parse_plan_text(text, source="try")
    except PlanError as exc:
        plan_errors(exc)
    if show_plan:
        print(text, end="")
        return
    if not as_json:
        err_console.print(
            "# the plan (save it and run it again with: nearmetal run plan.yaml)", highlight=False
        )
        err_console.print(text.rstrip(), highlight=False, markup=False, soft_wrap=True)
    run_plan_command(
        None,
        db,
        workdir,
        seed,
        quiet,
        as_json,
        html=html,
        allow_large=allow_large,
        loaded_plan=loaded,
        junit=junit,
        fail_above=fail_above,
    )
