"""What a doctor check returns, and the registry of checks: every module of ``nearmetal.doctor`` registers
its checks with ``@check(id, inspects=…, explains=…)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

# what a check returns lives in a leaf of its own (host probes make findings too); re-exported here
from nearmetal.findings import SEVERITY_ORDER as SEVERITY_ORDER
from nearmetal.findings import Finding as Finding
from nearmetal.findings import Severity as Severity
from nearmetal.registry import Registry


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
