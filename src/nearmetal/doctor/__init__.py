"""``nearmetal doctor``: the known causes of a slow or broken run, each as a check with evidence and a fix."""

from __future__ import annotations

from nearmetal.doctor import cpu, limits  # noqa: F401  (registers their checks)
from nearmetal.doctor.base import CHECKS, SEVERITY_ORDER, Finding


def run_checks(only: list[str] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    for check_id, fn in CHECKS.items():
        if only and check_id not in only:
            continue
        try:
            findings += fn()
        except Exception as exc:  # a check that cannot read what it needs says so, and the others still run
            findings.append(Finding(check_id, "info", f"check could not run: {exc}"))
    return sorted(findings, key=lambda f: SEVERITY_ORDER[f.severity])


__all__ = ["CHECKS", "Finding", "run_checks"]
