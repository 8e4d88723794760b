"""Standalone programs the Python workloads run (flops, particles, train, ddp).

Each is a script run as ``python <script>``: it imports only the standard library, numpy and torch (never
nearmetal), so it runs unchanged on any host with those, e.g. a Slurm node or a container. Every program
prints ``nearmetal-ready`` when its steady state begins (co-located neighbours are started only once they
print it) and, at the end, one ``NEARMETAL_RESULT {json}`` line that the workload's parser reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nearmetal.workloads.base import ParseError

PROGRAM_DIR = Path(__file__).resolve().parent
READY_PATTERN = r"nearmetal-ready"
RESULT_PREFIX = "NEARMETAL_RESULT "


def program_path(name: str) -> Path:
    return PROGRAM_DIR / f"{name}_program.py"


def read_result(text: str, program: str) -> dict[str, Any]:
    """The last result line a program printed, checked to come from ``program``."""
    lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise ParseError(
            f"no '{RESULT_PREFIX.strip()}' line: the {program} program did not finish (see its stderr)"
        )
    try:
        doc = json.loads(lines[-1][len(RESULT_PREFIX) :])
    except json.JSONDecodeError as exc:
        raise ParseError(f"the {program} result line is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("program") != program:
        raise ParseError(f"the result line comes from {doc.get('program')!r}, not the {program} program")
    if int(doc.get("format", 0)) < 1:
        raise ParseError(f"unknown result format {doc.get('format')!r} of the {program} program")
    return doc
