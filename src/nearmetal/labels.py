"""How a matrix point and a cell are named in reports, logs and exports (``numjobs=8,rw=read``,
``fio/overlayfs/numjobs=8,rw=read``).

A leaf module: the plan names its cells with these, and the analysis, the store and the exports name what they
read back the same way, without importing the plan.
"""

from __future__ import annotations

from typing import Any


def point_label(point: dict[str, Any]) -> str:
    """A matrix point as text: ``numjobs=8,rw=read`` (keys sorted)."""
    return ",".join(f"{k}={v}" for k, v in sorted(point.items()))


def cell_key(workload: str, variant: str, point: dict[str, Any]) -> str:
    """How reports and logs name a cell: ``workload/variant[/point]``."""
    label = point_label(point)
    return f"{workload}/{variant}" + (f"/{label}" if label else "")
