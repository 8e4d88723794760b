"""Sizes as fio and mount options write them, and how much memory the host has to spare."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

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
