"""``nearmetal doctor``: the known causes of a slow or broken run, each as a check with evidence and a fix.

One module per family of checks; each registers its checks with ``@check(id, inspects=…, explains=…)``
(``CHECKS``, read on first use)."""

from __future__ import annotations

from dataclasses import replace

from nearmetal.doctor.base import CHECK_INFO, CHECKS, SEVERITY_ORDER, CheckInfo, Finding


def run_checks(only: list[str] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    for check_id, fn in CHECKS.items():
        if only and check_id not in only:
            continue
        try:
            found = fn()
        except Exception as exc:  # a check that cannot read what it needs says so, and the others still run
            found = [Finding(check_id, "info", f"check could not run: {exc}")]
        inspects = CHECK_INFO[check_id].inspects if check_id in CHECK_INFO else ""
        findings += [replace(f, inspects=f.inspects or inspects) for f in found]
    return sorted(findings, key=lambda f: SEVERITY_ORDER[f.severity])


__all__ = ["CHECKS", "CHECK_INFO", "CheckInfo", "Finding", "run_checks"]
