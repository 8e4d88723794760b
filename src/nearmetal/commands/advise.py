"""``nearmetal advise gpu-sharing``: the seed's How-To-Choose tables, a recommendation with reasons and
measured losses, and the manifests to apply it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from nearmetal.advise.gpu_sharing import parse_layout
from nearmetal.advise.manifests import dump_yaml
from nearmetal.commands.common import DbOption, app, console, err_console, fail
from nearmetal.errors import NearmetalError

advise_app = typer.Typer(
    no_args_is_help=True, help="Recommendations with reasons, and the configuration to apply them."
)
app.add_typer(advise_app, name="advise")


def _tables() -> None:
    from nearmetal.advise.gpu_sharing import FEATURES, FOOTNOTES, MECHANISM_TITLES, MECHANISMS, USE_CASES

    features = Table(
        "feature",
        *[MECHANISM_TITLES[m] for m in MECHANISMS],
        title="How to choose: features (seed 001)",
        title_justify="left",
    )
    for name, cells in FEATURES:
        features.add_row(name, *[cells[m] for m in MECHANISMS])
    console.print(features)
    cases = Table(
        "use case",
        "examples",
        *[MECHANISM_TITLES[m] for m in MECHANISMS],
        title="How to choose: use cases",
        title_justify="left",
    )
    for case in USE_CASES.values():
        cases.add_row(f"{case.title} ({case.name})", case.examples, *[case.verdicts[m] for m in MECHANISMS])
    console.print(cases)
    for mark, text in FOOTNOTES.items():
        console.print(f"{mark} {text}", highlight=False)


def build_manifests(rec: Any, kind: str, namespace: str, image: str) -> dict[str, dict[str, Any]]:
    """File name → manifest for a recommendation."""
    from nearmetal.advise.gpu_sharing import resolve_card
    from nearmetal.advise.manifests import (
        SHARED_RESOURCE,
        mig_layout_name,
        mig_parted_config,
        mig_parted_configmap,
        time_slicing_configmap,
        workload_manifest,
    )

    kind_name: Literal["Pod", "Job"] = "Job" if kind.lower() == "job" else "Pod"
    out: dict[str, dict[str, Any]] = {}
    if rec.mechanism == "time-slicing":
        out["time-slicing-configmap.yaml"] = time_slicing_configmap(rec.replicas, namespace="kube-system")
        out[f"{kind_name.lower()}.yaml"] = workload_manifest(
            kind_name,
            SHARED_RESOURCE,
            namespace=namespace,
            image=image,
            node_label=("nvidia.com/device-plugin.config", f"slice-{rec.replicas}"),
        )
    elif rec.mechanism == "mig":
        model = resolve_card(rec.card)
        assert model is not None and rec.mig_layout
        out["mig-parted-configmap.yaml"] = mig_parted_configmap(model, rec.mig_layout)
        out["mig-parted-config.yaml"] = mig_parted_config(model, rec.mig_layout)
        profile = max(rec.mig_layout, key=lambda p: int(p.split("g")[0]))
        out[f"{kind_name.lower()}.yaml"] = workload_manifest(
            kind_name,
            f"nvidia.com/mig-{profile}",
            namespace=namespace,
            image=image,
            node_label=("nvidia.com/mig.config", mig_layout_name(rec.mig_layout)),
        )
    return out


@advise_app.command("gpu-sharing")
def gpu_sharing(
    use_case: Annotated[
        str | None,
        typer.Option(
            "--use-case",
            "-u",
            help="latency-sensitive, notebooks, simulation or ci-runners (none: the tables)",
        ),
    ] = None,
    card: Annotated[
        str, typer.Option("--card", "-c", help="A100-40GB, A100-80GB, H100, T4, …")
    ] = "A100-40GB",
    users: Annotated[
        int, typer.Option("--users", help="workloads to share one GPU (time-slicing replicas, MIG instances)")
    ] = 4,
    mig_layout: Annotated[
        str | None, typer.Option("--mig-layout", help="MIG instances per GPU, e.g. 2x2g.10gb,3x1g.5gb")
    ] = None,
    kind: Annotated[str, typer.Option("--kind", help="workload manifest: pod or job")] = "job",
    namespace: Annotated[str, typer.Option("--namespace", help="namespace of the workload")] = "default",
    image: Annotated[
        str, typer.Option("--image", help="container image of the workload")
    ] = "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="write the manifests here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="recommendation and manifests as JSON")] = False,
    db: DbOption = None,
) -> None:
    """Which GPU-sharing mechanism for a use case and card, why, what it costs, and the manifests."""
    from nearmetal.advise.gpu_sharing import MECHANISM_TITLES, USE_CASES, measured_sharing_losses, recommend

    if use_case is None:
        _tables()
        console.print(
            "\nnearmetal advise gpu-sharing --use-case NAME --card MODEL for a recommendation and manifests"
        )
        return
    if kind.lower() not in ("pod", "job"):
        fail(NearmetalError(f"--kind {kind!r}: use pod or job"))
    if use_case not in USE_CASES:
        fail(NearmetalError(f"unknown use case {use_case!r}", fix=f"use one of: {', '.join(USE_CASES)}"))
    try:
        measured = measured_sharing_losses(db)
    except NearmetalError:
        measured = []  # no store yet: the published figures stand alone
    try:
        layout = parse_layout(mig_layout) if mig_layout else None
        rec = recommend(use_case, card, users_per_gpu=users, mig_layout=layout, measured=measured)
        manifests = build_manifests(rec, kind, namespace, image)
    except (ValueError, KeyError) as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        fail(
            NearmetalError(
                message,
                fix="see nearmetal advise gpu-sharing for the tables; MIG profiles per card are in nearmetal.host.gpu_profiles",
            )
        )
    if output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
        for name, doc in manifests.items():
            (output_dir / name).write_text(dump_yaml(doc))
        err_console.print(f"wrote {', '.join(manifests)} to {output_dir}", highlight=False)
    if as_json:
        print(json.dumps({**rec.to_dict(), "manifests": manifests}, indent=2))
        return
    title = MECHANISM_TITLES.get(rec.mechanism or "", "whole GPUs (no sharing)")
    console.print(
        f"[bold]{USE_CASES[use_case].title} ({use_case}) on {rec.card}: [green]{title}[/green][/bold]",
        highlight=False,
    )
    if rec.replicas:
        console.print(f"  {rec.replicas} time-sliced replicas per GPU", highlight=False)
    if rec.mig_layout:
        console.print(
            "  MIG layout per GPU: " + ", ".join(f"{c} × {p}" for p, c in rec.mig_layout.items()),
            highlight=False,
        )
    for heading, lines in (("why", rec.reasons), ("mind", rec.caveats), ("evidence", rec.evidence)):
        if lines:
            console.print(f"[bold]{heading}[/bold]:")
            for line in lines:
                console.print(f"  - {line}", highlight=False, markup=False)
    if rec.alternatives:
        console.print("[bold]not first[/bold]:")
        for mechanism, why in rec.alternatives:
            console.print(f"  - {MECHANISM_TITLES[mechanism]}: {why}", highlight=False, markup=False)
    if manifests and not output_dir:
        # only Kubernetes objects go to stdout, so it can be piped to kubectl apply -f -
        kube = [doc for doc in manifests.values() if "apiVersion" in doc]
        console.print(
            "[bold]manifests[/bold] (kubectl apply -f -; --output-dir also writes the bare mig-parted config):"
        )
        print(dump_yaml(*kube), end="")
