"""``nearmetal image build``: the workload image for ``--backend kubernetes``, built here (a Debian root
filesystem with the workloads' packages) and loaded into containerd, for a cluster that reaches no registry."""

from __future__ import annotations

from typing import Annotated

import typer

from nearmetal.commands.common import app as main_app
from nearmetal.commands.common import console, err_console, fail
from nearmetal.errors import NearmetalError

image_app = typer.Typer(no_args_is_help=True, help="Container images for the Kubernetes backend.")
main_app.add_typer(image_app, name="image")


@image_app.command("build")
def build(
    plans: Annotated[
        list[str] | None,
        typer.Argument(help="plans (YAML) or shipped studies whose workloads the image must run"),
    ] = None,
    package: Annotated[
        list[str] | None, typer.Option("--package", help="one more Debian package in the image; repeatable")
    ] = None,
    suite: Annotated[str, typer.Option(help="Debian suite of the image")] = "bookworm",
    mirror: Annotated[str | None, typer.Option(help="Debian mirror (default: debootstrap's)")] = None,
    load: Annotated[
        bool, typer.Option("--load/--no-load", help="import it into containerd's k8s.io namespace")
    ] = True,
    containerd_address: Annotated[
        str | None,
        typer.Option(
            "--containerd-address",
            envvar="CONTAINERD_ADDRESS",
            help="containerd's socket (scripts/services/kubernetes.sh start prints it)",
        ),
    ] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="build again even when cached")] = False,
) -> None:
    """Build the workload image (cached by its packages), keep its archive in the image cache, load it into
    containerd, and print its name for --image."""
    from nearmetal.kubeimage import build_workload_image

    try:
        image = build_workload_image(
            plans or ["cpu-quota"],
            extra_packages=package,
            suite=suite,
            mirror=mirror,
            load=load and bool(containerd_address),
            address=containerd_address,
            rebuild=rebuild,
        )
    except NearmetalError as exc:
        fail(exc)
    how = "cached" if image.cached else f"built in {image.built_s:.0f} s"
    err_console.print(f"{image.ref}: {', '.join(image.packages)} ({how}; archive {image.archive})")
    if load and not image.loaded:
        err_console.print("not loaded: no containerd address (kubernetes.sh start imports it)")
    console.print(image.ref, highlight=False)
