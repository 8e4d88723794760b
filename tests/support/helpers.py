"""Small helpers shared by tests (plans written to a temp dir)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nearmetal.api import Results


def write_plan(directory: Path, text: str, name: str = "plan.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def skip_if_contended(results: Results, what: str) -> None:
    """Skip, naming the evidence, when the run's own noise evidence calls any cell contended: its figures
    are not interpretable (``Results.contention``)."""
    import pytest

    contended = {
        c.key: noise.describe()
        for c in results.cells
        if (noise := results.contention.get(c.cell_id)) is not None and noise.is_contended
    }
    if contended:
        pytest.skip(f"host busy during {what} ({os.getloadavg()[0]:.1f} load): {contended}")


def run_program(name: str, *args: str, timeout: float = 300) -> dict:
    """Run one of nearmetal's own workload programs (workloads/programs) and return its JSON result."""
    from nearmetal.workloads.programs import program_path

    proc = subprocess.run(
        [sys.executable, str(program_path(name)), *args], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    assert "nearmetal-ready" in proc.stdout
    return json.loads(proc.stdout.splitlines()[-1].split(" ", 1)[1])


# a plan with two invalid values (ranks -1, a quota of 0 CPUs), for the error-reporting tests
BAD_PLAN = """
name: bad
workloads:
  lammps:
    kind: lammps
    params: {ranks: -1}
variants:
  bare: []
  limited:
    - {layer: cpu-quota, cpus: 0}
"""


def fio_plan(directory: str) -> str:
    """A one-cell fio plan writing into ``directory``."""
    return f"name: x\nworkloads:\n  f: {{kind: fio, params: {{directory: {directory!r}}}}}\nvariants: {{a: []}}\n"
