"""Plans shipped with nearmetal that reproduce the shape of a published study."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from nearmetal.errors import NearmetalError


def study_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files(__name__).iterdir()
        if p.name.endswith(".yaml") and not p.name.endswith(".quick.yaml")
    )


def study_path(name: str, quick: bool = False) -> Path:
    """The study's plan; ``quick`` picks its small form (``NAME.quick.yaml``) made for CI."""
    path = Path(str(resources.files(__name__).joinpath(f"{name}.yaml")))
    if not path.exists():
        raise NearmetalError(
            f"no shipped study named {name!r}",
            fix=f"use one of: {', '.join(study_names())} (nearmetal study list)",
        )
    if quick:
        quick_path = path.with_name(f"{name}.quick.yaml")
        if not quick_path.exists():
            raise NearmetalError(f"study {name!r} has no quick form", fix="run it without --quick")
        return quick_path
    return path


def study_description(name: str) -> str:
    doc = yaml.safe_load(study_path(name).read_text()) or {}
    return " ".join(str(doc.get("description", "")).split())
