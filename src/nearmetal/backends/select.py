"""Choosing a backend by name, with the plan's options and the command line's overrides."""

from __future__ import annotations

from typing import Any

from nearmetal.errors import NearmetalError

BACKENDS = ("local", "slurm", "kubernetes")


def make_backend(name: str, plan: Any | None = None, **overrides: Any) -> Any:
    """``local`` (this machine), ``slurm`` (batch jobs) or ``kubernetes`` (batch/v1 Jobs). ``overrides`` are
    the command line's options (None = not given): they win over the plan's ``slurm:``/``kubernetes:``."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if name == "local":
        from nearmetal.backends.local import LocalBackend

        return LocalBackend()
    if name == "slurm":
        from nearmetal.backends.options import SlurmOptions
        from nearmetal.backends.slurm import SlurmBackend

        base = getattr(plan, "slurm", None) or SlurmOptions()
        fields = set(SlurmOptions.model_fields)
        options = SlurmOptions.model_validate(
            {**base.model_dump(), **{k: v for k, v in given.items() if k in fields}}
        )
        return SlurmBackend(options, template=given.get("template"))
    if name == "kubernetes":
        import importlib.util

        if importlib.util.find_spec("kubernetes") is None:  # not in the default install
            raise NearmetalError(
                "the kubernetes backend needs the Kubernetes Python client, which is not installed",
                fix="bash scripts/install.sh --with kubernetes (in a nearmetal checkout), or "
                "pip install 'nearmetal[kubernetes]'",
            )
        from nearmetal.backends.kubernetes import KubernetesBackend
        from nearmetal.backends.options import KubernetesOptions

        base = getattr(plan, "kubernetes", None) or KubernetesOptions()
        fields = set(KubernetesOptions.model_fields)
        options = KubernetesOptions.model_validate(
            {**base.model_dump(), **{k: v for k, v in given.items() if k in fields}}
        )
        return KubernetesBackend(options, kubeconfig=given.get("kubeconfig"), context=given.get("context"))
    raise NearmetalError(f"unknown backend {name!r}", fix=f"use one of: {', '.join(BACKENDS)}")
