"""What a doctor check returns, and the registry of checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["ok", "info", "warning", "critical"]
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2, "ok": 3}


@dataclass(frozen=True)
class Finding:
    check_id: str
    severity: Severity
    title: str
    evidence: str = ""
    fix: str = ""
    lesson: str = ""  # the seed lesson the check comes from

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


Check = Callable[[], list[Finding]]
CHECKS: dict[str, Check] = {}


def check(check_id: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[check_id] = fn
        return fn

    return register
