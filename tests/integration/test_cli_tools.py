"""The CLI as other tools and CI jobs use it (issue 30): exports into directories that do not exist yet,
stores that do not exist, output without a terminal. Short subprocess tests over a synthetic store."""

from __future__ import annotations

import sys
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


def test_site_serve_previews_on_localhost_and_stops(stored, tmp_path: Path) -> None:
    import subprocess
    import urllib.request

    db, run_id = stored
    site = tmp_path / "site"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nearmetal.cli",
            "site",
            str(site),
            "--db",
            db,
            "--serve",
            "--port",
            "0",
            "--serve-for",
            "8",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("serving "):
                url = line.split(" at ", 1)[1].split()[0]
                break
        assert url and url.startswith("http://127.0.0.1:"), url
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
        assert run_id in page
        base = url.rsplit("/", 1)[0]
        with urllib.request.urlopen(f"{base}/static/plotly.min.js", timeout=10) as response:
            assert len(response.read()) > 1e6
        with urllib.request.urlopen(f"{base}/runs/{run_id}/report.html", timeout=10) as response:
            assert b"../../static/plotly.min.js" in response.read()
        assert proc.wait(timeout=60) == 0  # --serve-for: it stops by itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_try_prints_a_plan_that_nearmetal_run_takes(run_cli, tmp_path: Path) -> None:
    proc = run_cli(
        "try", "--show-plan", "--layer", "cpu-quota:cpus=0.8", "--", "lmp", "-in", "in.lj", check=True
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(proc.stdout)
    import yaml

    data = yaml.safe_load(proc.stdout)
    assert data["workloads"]["command"]["params"]["argv"] == ["lmp", "-in", "in.lj"]
    assert data["variants"] == {"bare-metal": [], "cpu-quota-cpus-0.8": [{"layer": "cpu-quota", "cpus": 0.8}]}
    assert data["baseline"] == "bare-metal" and data["order"] == "interleaved"
    checked = run_cli("check", str(plan), "--json")
    assert '"cpu-quota-cpus-0.8"' in checked.stdout or "cpu-quota-cpus-0.8" in checked.stderr
    bad = run_cli("try", "--layer", "cpu-quota:cpus", "--", "true")
    assert bad.returncode != 0 and "is not KEY=VALUE" in bad.stderr and "Traceback" not in bad.stderr
    unknown = run_cli("try", "--show-plan", "--layer", "cpu-qouta:cpus=1", "--", "true")
    assert unknown.returncode == 2 and "cpu-qouta" in unknown.stderr


@pytest.mark.root
def test_try_runs_the_command_bare_and_under_a_quota(run_cli, tmp_path: Path) -> None:
    import json
    import os

    if os.geteuid() != 0:
        pytest.skip("the cpu-quota layer writes cgroups: needs root")
    proc = run_cli(
        "try", "--layer", "cpu-quota:cpus=0.5", "--repeats", "2", "--warmup", "0", "--json", "--no-html",
        "--workdir", str(tmp_path / "runs"), "--",
        sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass",
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"bare-metal", "cpu-quota-cpus-0.5"}
    assert rows["bare-metal"]["n"] == rows["cpu-quota-cpus-0.5"]["n"] == 2
    assert rows["cpu-quota-cpus-0.5"]["metric"] == "wall_s" and "loss_pct" in rows["cpu-quota-cpus-0.5"]


def test_run_piped_prints_one_line_per_trial_and_junit(run_cli, tmp_path: Path) -> None:
    import re
    import xml.etree.ElementTree as ET

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: piped\n"
        "workloads:\n"
        f'  nap: {{kind: command, params: {{argv: ["{sys.executable}", "-c", "pass"]}}}}\n'
        "variants: {bare-metal: [], again: []}\n"
        "repeats: 2\nwarmup: 1\n"
    )
    junit = tmp_path / "ci" / "nearmetal.xml"
    proc = run_cli("run", str(plan), "--no-html", "--junit", str(junit), "--workdir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    # 2 variants × (1 warm-up + 2 repeats), each as it ends: "[k/6] nap/again r1 ok 0.1 s"
    assert len(lines) == 6, proc.stderr
    assert all(
        re.fullmatch(r"\[\d/6\] nap/(bare-metal|again) (warm-up|r\d) ok \d+\.\d s", line) for line in lines
    )
    assert "\x1b[" not in proc.stderr and "\r" not in proc.stderr  # no bar, no colours in a pipe
    suites = ET.parse(junit).getroot()
    assert suites.tag == "testsuites" and suites.get("tests") == "1"
    [case] = suites.iter("testcase")
    assert case.get("classname") == "piped.nap"
    assert "again" in case.get("name") and "vs bare-metal" in case.get("name")


@pytest.mark.parametrize(
    "args",
    [("runs",), ("report",), ("export",), ("site", "out"), ("compare", "a", "b")],
    ids=lambda a: a[0],
)
def test_readers_of_a_missing_store_say_so_and_create_nothing(run_cli, tmp_path: Path, args) -> None:
    typo = tmp_path / "typo.db"
    proc = run_cli(*args, "--db", str(typo))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"no store at {typo}" in proc.stderr and "Traceback" not in proc.stderr
    assert not typo.exists() and not (tmp_path / "out").exists()


def test_compare_three_runs_each_against_the_first_with_a_geometric_mean(run_cli, tmp_path: Path) -> None:
    import json
    import math

    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    cells = [SyntheticCell("lammps", v, baseline=v == "bare-metal") for v in ("bare-metal", "limit-0.8")]
    ids = []
    for slow in (1.0, 1.10, 1.21):  # a platform that gets slower, run after run

        def metrics(cell, repeat, rng, slow=slow):
            return [Metric("wall_s", 2.0 * slow * rng.normal(1, 0.002), "s", "lower")]

        ids.append(write_run(store, cells, metrics, repeats=5, seed=len(ids)))
    db = str(store.url)
    doc = json.loads(run_cli("compare", *ids, "--db", db, "--json", check=True).stdout)
    assert doc["reference"] == ids[0] and [c["run_b"] for c in doc["comparisons"]] == ids[1:]
    means = {m["run"]: m for m in doc["geometric_means"]}
    for run, expected in ((ids[1], 1.10), (ids[2], 1.21)):
        assert (
            means[run]["against"] == ids[0] and means[run]["cells"] == 2 and means[run]["metric"] == "wall_s"
        )
        assert math.isclose(means[run]["geometric_mean_slowdown"], expected, rel_tol=0.01)
    shown = run_cli("compare", *ids, "--db", db, check=True)
    assert "geometric mean" in shown.stdout and shown.stdout.count(" slower") >= 2
    failed = run_cli("compare", *ids, "--db", db, "--fail-above", "15%")
    assert failed.returncode == 3 and "regression" in failed.stderr  # the third run: +21%
    alone = run_cli("compare", ids[0], "--db", db)
    assert alone.returncode == 1 and "at least two runs" in alone.stderr


def test_smaller_frictions(run_cli, stored, tmp_path: Path) -> None:
    import subprocess

    # a study's name given to run: the hint to use study
    proc = run_cli("run", "cpu-quota")
    assert proc.returncode == 2 and "nearmetal study cpu-quota" in proc.stderr
    # `nearmetal schema | head -1`: the reader closes the pipe early; nearmetal leaves quietly with 0
    with subprocess.Popen(
        [sys.executable, "-m", "nearmetal.cli", "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as piped:
        assert piped.stdout is not None and piped.stderr is not None
        assert piped.stdout.read(10).startswith(b"{")
        piped.stdout.close()
        err = piped.stderr.read()
        assert piped.wait(timeout=120) == 0, err
        assert err == b""
    # study list says which studies need PyTorch
    listed = run_cli("study", "list", check=True, env={"COLUMNS": "300"}).stdout
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in listed.splitlines()
        if line.count("│") > 3
    }
    assert rows["cpu-quota"] == "no" and rows["time-slicing"] == "yes"
    # completion: run ids from the store, --format values
    db, run_id = stored
    env = {
        "_NEARMETAL_COMPLETE": "complete_bash",
        "COMP_WORDS": f"nearmetal report --db {db} syn",
        "COMP_CWORD": "4",
    }
    assert run_id in run_cli(env=env).stdout.split()
    env = {
        "_NEARMETAL_COMPLETE": "complete_bash",
        "COMP_WORDS": "nearmetal export -f open",
        "COMP_CWORD": "3",
    }
    assert run_cli(env=env).stdout.split() == ["openmetrics"]
