"""Sizes as fio, mount options, Slurm and Kubernetes write them, and how much memory the host has to spare."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$")
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: str | int) -> int:
    """``64k``, ``32g``, ``1MiB`` (powers of 1024, as fio's default ``kb_base`` and mount's ``size=``) → bytes."""
    if isinstance(value, int):
        return value
    match = SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size such as 64k, 16m or 1g")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])


def mem_available_bytes() -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


# a memory size as Slurm (--mem) and Kubernetes (memory requests) write it; MiB
MEMORY_UNITS = {
    "k": 1 / 1024,
    "ki": 1 / 1024,
    "m": 1.0,
    "mi": 1.0,
    "g": 1024.0,
    "gi": 1024.0,
    "t": 1024.0**2,
    "ti": 1024.0**2,
}
# a size as a plan writes it (the plan's JSON Schema describes this, not the MiB it becomes)
MEMORY_PATTERN = r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]i?)?[bB]?\s*$"
MemoryInput = Annotated[float, Field(ge=1)] | Annotated[str, Field(pattern=MEMORY_PATTERN)]


def parse_memory_mib(value: Any) -> int:
    """``2G``, ``2Gi``, ``1500M``, ``1500`` (MiB) → MiB. Slurm's and Kubernetes' suffixes both mean powers
    of two here (Slurm's M and G are MiB and GiB)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 2G or 1500M")
    if isinstance(value, int | float):
        mib = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]i?)?[bB]?\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a size such as 2G, 2Gi or 1500M")
        mib = float(match.group(1)) * MEMORY_UNITS[(match.group(2) or "m").lower()]
    else:
        raise ValueError("must be a size such as 2G or 1500M")
    if mib < 1:
        raise ValueError("must be at least 1M")
    return round(mib)
