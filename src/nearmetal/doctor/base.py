"""What a doctor check returns, and the registry of checks: every module of ``nearmetal.doctor`` registers
its checks with ``@check(id, inspects=…, explains=…)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, TypeVar

from nearmetal.registry import Registry

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


@dataclass(frozen=True)
class CheckInfo:
    """What a check looks at, and which kind of loss a non-ok finding of it can explain in a report."""

    check_id: str
    inspects: str = ""
    # metrics whose loss this check can explain (``cpu``: CPU-bound throughput and time, ``variance``:
    # spread between repeats, ``io``, ``network``, ``startup``, ``failure``: trials that fail)
    explains: tuple[str, ...] = ()


Check = Callable[[], list[Finding]]
CHECKS: Registry[Check] = Registry("doctor check", packages=("nearmetal.doctor",))
CHECK_INFO: Registry[CheckInfo] = Registry("doctor check", packages=("nearmetal.doctor",))


AnyCheck = TypeVar("AnyCheck", bound=Callable[..., list[Finding]])


def check(
    check_id: str, inspects: str = "", explains: tuple[str, ...] = ()
) -> Callable[[AnyCheck], AnyCheck]:
    # checks take optional arguments (a mountinfo file, a cgroup root) that tests and layers pass
    def register(fn: AnyCheck) -> AnyCheck:
        CHECKS.add(check_id, fn)
        CHECK_INFO.add(check_id, CheckInfo(check_id, inspects, tuple(explains)), replace=True)
        return fn

    return register
