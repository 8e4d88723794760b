"""Plans shipped with nearmetal that reproduce the shape of a published study."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from nearmetal.errors import NearmetalError

FORMS = ("auto", "cpu", "gpu")


def study_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files(__name__).iterdir()
        if p.name.endswith(".yaml") and not p.name.endswith((".quick.yaml", ".gpu.yaml"))
    )


def has_gpu_form(name: str) -> bool:
    return Path(str(resources.files(__name__).joinpath(f"{name}.gpu.yaml"))).exists()


def study_path(name: str, quick: bool = False, form: str = "cpu") -> Path:
    """The study's plan; ``quick`` picks its small form (``NAME.quick.yaml``) made for CI, ``form="gpu"``
    its GPU form (``NAME.gpu.yaml``, for the studies that have one)."""
    path = Path(str(resources.files(__name__).joinpath(f"{name}.yaml")))
    if not path.exists():
        raise NearmetalError(
            f"no shipped study named {name!r}",
            fix=f"use one of: {', '.join(study_names())} (nearmetal study list)",
        )
    if form == "gpu":
        gpu_path = path.with_name(f"{name}.gpu.yaml")
        if not gpu_path.exists():
            raise NearmetalError(f"study {name!r} has no GPU form", fix="run it without --form gpu")
        if quick:
            raise NearmetalError(
                f"study {name!r} has no quick GPU form (the quick forms are CPU-sized, for CI)",
                fix="drop --quick, or use --form cpu",
            )
        return gpu_path
    if quick:
        quick_path = path.with_name(f"{name}.quick.yaml")
        if not quick_path.exists():
            raise NearmetalError(f"study {name!r} has no quick form", fix="run it without --quick")
        return quick_path
    return path


def choose_form(name: str, form: str = "auto", quick: bool = False) -> tuple[str, str]:
    """(form, why): "auto" takes the GPU form of a study that has one when torch sees a CUDA GPU here."""
    if form not in FORMS:
        raise NearmetalError(f"unknown study form {form!r}", fix=f"use one of: {', '.join(FORMS)}")
    if form != "auto":
        return form, "asked for"
    if not has_gpu_form(name):
        return "cpu", "the study has one form"
    if quick:
        return "cpu", "the quick forms are CPU-sized"
    from nearmetal.host.gpu import cuda_status

    ok, why = cuda_status()
    return ("gpu" if ok else "cpu"), why


def study_description(name: str) -> str:
    doc = yaml.safe_load(study_path(name).read_text()) or {}
    return " ".join(str(doc.get("description", "")).split())
