"""What a doctor check concludes: a finding with its evidence and the fix (the vocabulary's *finding*).

A leaf (standard library only): doctor's checks make findings, and so do host probes a layer runs during a
trial (the fault layer records doctor's severed-mount finding as an event) without importing doctor.
"""

from __future__ import annotations

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
    inspects: str = ""  # the files, syscalls or commands the check read (filled from the registry)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)
