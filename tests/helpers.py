"""Small helpers shared by tests (plans written to a temp dir)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_plan(directory: Path, text: str, name: str = "plan.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path
