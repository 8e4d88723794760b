"""The CLI as other tools and CI jobs use it (issue 30): exports into directories that do not exist yet,
stores that do not exist, output without a terminal. Short subprocess tests over a synthetic store."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_data import SyntheticCell, write_run

from nearmetal.metrics import Metric
from nearmetal.store import Store


def _metrics(cell: SyntheticCell, repeat: int, rng) -> list[Metric]:
    slow = {"bare-metal": 1.0, "limit-0.8": 1.3}[cell.variant]
    return [Metric("wall_s", 2.0 * slow * rng.normal(1, 0.01), "s", "lower")]


@pytest.fixture
def stored(tmp_path: Path) -> tuple[str, str]:
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    cells = [SyntheticCell("lammps", v, baseline=v == "bare-metal") for v in ("bare-metal", "limit-0.8")]
    return str(store.url), write_run(store, cells, _metrics, repeats=4)


@pytest.mark.parametrize("fmt", ["csv", "json", "openmetrics", "textfile"])
def test_export_into_a_missing_directory_creates_it(stored, run_cli, tmp_path: Path, fmt: str) -> None:
    db, run_id = stored
    out = tmp_path / "fresh" / "node-exporter" / f"nearmetal.{fmt}"
    proc = run_cli("export", run_id, "--db", db, "-f", fmt, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and out.stat().st_size > 0
    assert "Traceback" not in proc.stderr


def test_export_where_no_directory_can_be_made_is_one_line(stored, run_cli, tmp_path: Path) -> None:
    db, run_id = stored
    (tmp_path / "a-file").write_text("x")
    proc = run_cli("export", run_id, "--db", db, "-o", str(tmp_path / "a-file" / "sub" / "x.csv"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "cannot create the directory" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
