"""What CI jobs and pipes get (issue 30): a JUnit report of a run's verdicts (read back with junitparser),
tables that keep names whole and fall back to a vertical form when COLUMNS is too narrow."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from report_data import SyntheticCell, write_run
from rich.console import Console

import nearmetal
from nearmetal.metrics import Metric
from nearmetal.report.junit import junit_xml
from nearmetal.report.tables import Table
from nearmetal.report.terminal import print_table
from nearmetal.store import Store

COST = {"bare-metal": 1.0, "limit-1.6": 1.02, "limit-0.8": 1.5}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> nearmetal.Results:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('junit') / 'r.db'}")
    cells = [SyntheticCell("lammps", v, {"ranks": 2}, baseline=v == "bare-metal") for v in COST]
    run_id = write_run(
        store,
        cells,
        lambda c, r, rng: [Metric("wall_s", 10 * COST[c.variant] * rng.normal(1, 0.003), "s", "lower")],
        repeats=8,
    )
    return nearmetal.load_results(run_id, store=store)


def test_junit_has_a_case_per_comparison_and_fails_big_losses(results, tmp_path: Path) -> None:
    text = junit_xml([results], fail_above=0.10)
    root = ET.fromstring(text)
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {
        "limit-1.6[ranks=2] wall_s vs bare-metal",
        "limit-0.8[ranks=2] wall_s vs bare-metal",
    }
    assert cases["limit-0.8[ranks=2] wall_s vs bare-metal"].find("failure") is not None  # +50% > 10%
    assert cases["limit-1.6[ranks=2] wall_s vs bare-metal"].find("failure") is None  # +2%: below 10%
    assert root.get("tests") == "2" and root.get("failures") == "1"
    # with no threshold, the significant +2% fails too
    assert ET.fromstring(junit_xml([results])).get("failures") == "2"
    junitparser = pytest.importorskip("junitparser")  # the reader CI plugins use (pip: junitparser)
    path = tmp_path / "junit.xml"
    path.write_text(text)
    xml = junitparser.JUnitXml.fromfile(str(path))
    [suite] = list(xml)
    assert suite.tests == 2 and suite.failures == 1 and suite.errors == 0
    outcomes = {case.name: [type(r).__name__ for r in case.result] for case in suite}
    assert outcomes["limit-0.8[ranks=2] wall_s vs bare-metal"] == ["Failure"]
    assert outcomes["limit-1.6[ranks=2] wall_s vs bare-metal"] == []


TABLE = Table(
    title="lammps: timesteps_per_s",
    headers=["variant", "n", "timesteps_per_s", "± sd", "loss % [95% CI]", "stop", "verdict"],
    rows=[
        ["bare-metal", "10", "130.6", "18", "baseline", "max reached (10 blocks)", "baseline"],
        [
            "limit-0.8-with-a-long-name",
            "5",
            "45.98",
            "2.0",
            "+61.4% [+59.5, +63.2]",
            "target met",
            "significant loss",
        ],
    ],
    significance=[False, True],
)


def _printed(width: int) -> str:
    buffer = io.StringIO()
    print_table(TABLE, Console(file=buffer, width=width, force_terminal=False, color_system=None))
    return buffer.getvalue()


@pytest.mark.parametrize("width", [200, 120, 110])
def test_names_are_never_broken(width: int) -> None:
    out = _printed(width)
    assert "bare-metal" in out and "limit-0.8-with-a-long-name" in out and "+61.4% [+59.5, +63.2]" in out
    assert max(len(line) for line in out.splitlines()) <= width


def test_too_narrow_gives_the_vertical_form() -> None:
    out = _printed(50)
    assert "limit-0.8-with-a-long-name\n" in out
    assert "  loss % [95% CI]: +61.4% [+59.5, +63.2]" in out and "  verdict: significant loss" in out
    assert max(len(line) for line in out.splitlines()) <= 50
