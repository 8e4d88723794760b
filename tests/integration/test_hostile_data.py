"""Issue 26: data that a hostile plan, workload or store file controls stays data. Each test reproduces one
of the issue's cases through the real ``nearmetal`` command and checks that it now ends in one line (or a
skipped row), never a traceback, a hang, rich markup or raw terminal escapes."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import write_plan

PY = sys.executable


def _no_traceback(proc) -> None:  # type: ignore[no-untyped-def]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert "MarkupError" not in proc.stderr + proc.stdout


def test_a_regex_with_a_closing_tag_that_matches_nothing_is_a_normal_failure(tmp_path: Path, run_cli) -> None:
    """Case 10: ``x[/]y`` is valid RE2; its 'matched nothing' error was printed with markup on."""
    script = tmp_path / "noisy.py"
    script.write_text(
        "import sys\nprint('x=1')\nsys.stderr.write('boom \\x1b[2J \\x1b]52;c;cHduZWQ=\\x07 \\x9b31m')\n"
    )
    plan = write_plan(
        tmp_path,
        f"""
        name: markup
        workloads:
          w:
            kind: command
            params:
              argv: [{PY!r}, {str(script)!r}]
              metrics: [{{name: x_s, regex: 'x[/]y=(\\d+)', direction: lower}}]
          e:
            kind: command
            params:
              argv: [{PY!r}, {str(script)!r}]
              metrics: [{{name: y_s, regex: "\\e[2J\\e]52;c;cHduZWQ=\\a(\\\\d+)", direction: lower}}]
        variants: {{a: []}}
        repeats: 1
        """,
    )
    proc = run_cli("run", str(plan), "--no-html", timeout=120)
    _no_traceback(proc)
    assert proc.returncode == 1
    assert "regex 'x[/]y=(\\\\d+)' matched nothing in stdout" in proc.stderr.replace("\n", " ")
    report = run_cli("report", "--format", "terminal", timeout=120)
    _no_traceback(report)
    for out in (proc.stderr, report.stdout):  # the regex with escapes in the error, shown as text
        assert "\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07" in out.replace("\n", "")
    for out in (proc.stdout, proc.stderr, report.stdout, report.stderr):
        assert "\x1b" not in out and "\x07" not in out


# --- case 5: a crafted store file ---------------------------------------------------------------------

import shutil  # noqa: E402
import sqlite3  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real store with one finished two-variant run (the file each crafted store starts from)."""
    import subprocess

    from conftest import nearmetal_argv

    here = tmp_path_factory.mktemp("store")
    plan = write_plan(
        here,
        f"""
        name: small
        workloads:
          w:
            kind: command
            params:
              argv: [{PY!r}, -c, "print('t=1.5')"]
              metrics: [{{name: t_s, regex: 't=([0-9.]+)', direction: lower}}]
        variants: {{base: [], other: []}}
        baseline: base
        repeats: 2
        """,
    )
    db = here / "results.db"
    proc = subprocess.run(
        [*nearmetal_argv(), "run", str(plan), "--db", str(db), "-q", "--no-html"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(db) as conn:
        (run_id,) = conn.execute("SELECT id FROM runs").fetchone()
    return db, run_id


def _crafted(stored_run: tuple[Path, str], tmp_path: Path, *sql: str) -> str:
    db, run_id = stored_run
    shutil.copy(db, tmp_path / "results.db")
    conn = sqlite3.connect(tmp_path / "results.db")
    for statement in sql:
        conn.execute(statement.replace("RUN", run_id))
    conn.commit()
    conn.close()
    return run_id


def _one_line_refusal(proc, *words: str) -> None:  # type: ignore[no-untyped-def]
    _no_traceback(proc)
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("  fix:")]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr.replace("\n", " "), proc.stderr


def test_a_run_id_that_climbs_out_never_becomes_a_path(stored_run, tmp_path: Path, run_cli) -> None:
    _crafted(stored_run, tmp_path, "UPDATE runs SET id = '../../x' WHERE id = 'RUN'")
    site = tmp_path / "a" / "b" / "site"
    proc = run_cli("site", str(site), timeout=120)
    _no_traceback(proc)
    assert not list(tmp_path.rglob("x/report.html")) and not (tmp_path / "a" / "x").exists()
    assert "'../../x'" in proc.stderr and "left out" in proc.stderr
    listed = run_cli("runs", timeout=60)
    _no_traceback(listed)
    assert "../../x" not in listed.stdout and "an id nearmetal never creates" in listed.stderr
    _one_line_refusal(run_cli("report", "../../x", timeout=60), "never creates")


def test_a_recursive_view_is_refused_not_run(stored_run, tmp_path: Path, run_cli) -> None:
    _crafted(
        stored_run,
        tmp_path,
        "ALTER TABLE runs RENAME TO runs_kept",
        "CREATE VIEW runs AS WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) "
        "SELECT r.* FROM runs_kept r, c",
    )
    for args in (("runs",), ("report",)):
        _one_line_refusal(run_cli(*args, timeout=60), "view 'runs'", "does not create")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("UPDATE runs SET plan_text = '" + BOMB + "'", ("stored plan", "100,000 values")),
        ("UPDATE runs SET info = 'not json {'", ("runs.info", "JSON object")),
        ("UPDATE runs SET started_at = 'yesterday'", ("runs.started_at", "time")),
    ],
    ids=["alias-bomb", "info-not-json", "started-text"],
)
def test_a_crafted_value_is_one_line_naming_the_run(
    stored_run, tmp_path: Path, run_cli, sql: str, words: tuple[str, ...]
) -> None:
    """The CLI end of tests/unit/test_hostile_stores.py (which covers every column and setting)."""
    run_id = _crafted(stored_run, tmp_path, sql)
    _one_line_refusal(run_cli("report", run_id, timeout=60), run_id, *words)


# --- case 9: limits before work ---------------------------------------------------------------------


def test_check_refuses_a_ten_million_cell_plan_at_once(tmp_path: Path, run_cli) -> None:
    """The cell count comes from the matrix's value counts: refused before expansion (it took 300 s and
    7 GB before). The timeout is generous for a loaded CI machine; unloaded it takes about 2 s."""
    import json

    plan = tmp_path / "big.yaml"
    plan.write_text(
        "name: big\nworkloads:\n  w: {kind: command, params: {argv: [/bin/true]}}\nvariants: {a: []}\n"
        f"matrix:\n  w.argv: {json.dumps([['/bin/true', str(i)] for i in range(10_000)])}\n"
        f"  w.tool_package: {json.dumps([f'p{i}' for i in range(1_000)])}\n"
    )
    proc = run_cli("check", str(plan), timeout=60)
    _no_traceback(proc)
    assert proc.returncode == 2
    assert "makes 10,000,000 cells" in proc.stderr + proc.stdout


# --- case 12: reach ------------------------------------------------------------------------------------


def test_network_reach_is_shown_by_check_and_needs_allow_network_to_run(tmp_path: Path, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: reach
        workloads:
          w: {{kind: command, params: {{argv: [{PY!r}, -c, "print(1)"]}}}}
        variants: {{a: []}}
        repeats: 1
        energy: {{prometheus_url: "http://127.0.0.1:9/", sources: [kepler, estimated]}}
        """,
    )
    check = run_cli("check", str(plan), timeout=120)
    _no_traceback(check)
    assert "this plan asks for:" in check.stdout
    assert "network: energy.prometheus_url: the runner queries http://127.0.0.1:9/" in check.stdout
    assert check.returncode == 2 and "--allow-network" in check.stderr
    refused = run_cli("run", str(plan), "--no-html", timeout=120)
    _one_line_refusal(refused, "reach the network", "nothing was run")
    assert not (tmp_path / "nearmetal-runs").exists()
    allowed = run_cli("run", str(plan), "--no-html", "-q", "--allow-network", timeout=120)
    _no_traceback(allowed)
    assert allowed.returncode == 0, allowed.stderr  # port 9 answers nothing: the trial notes it, runs on
    bad = write_plan(
        tmp_path, plan.read_text().replace("http://127.0.0.1:9/", "file:///etc/shadow"), "bad.yaml"
    )
    refused = run_cli("run", str(bad), "--no-html", "--allow-network", timeout=120)
    assert (
        refused.returncode == 2 and "energy.prometheus_url" in refused.stderr and "http://" in refused.stderr
    )
