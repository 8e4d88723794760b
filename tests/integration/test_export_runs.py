"""`nearmetal export` on real runs: CSV matches the analysis, JSON/JSON lines/Parquet carry the same rows,
OpenMetrics through the CLI parses with the Prometheus client."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
from helpers import write_plan

import nearmetal

PY = sys.executable


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One real run shared by this module's tests (run id, store URL)."""
    tmp_path = tmp_path_factory.mktemp("export")
    db_url = f"sqlite:///{tmp_path / 'results.db'}"
    plan = write_plan(
        tmp_path,
        f"""
        name: export-me
        workloads:
          count:
            kind: command
            params:
              argv: ["{PY}", "-c", "import random; print('rate=%d' % random.randint(90, 110))"]
              env: {{API_TOKEN: hunter2-secret, DB: "postgresql://me:pw1234@db/x"}}
              metrics: [{{name: rate, regex: 'rate=([0-9]+)', unit: ops/s, direction: higher}}]
          crash:
            kind: command
            params: {{argv: ["{PY}", "-c", "import sys; sys.exit(2)"]}}
        variants: {{a: [], b: []}}
        repeats: 3
        warmup: 1
        """,
    )
    return nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs").run_id, db_url


def test_csv_is_tidy_and_matches_the_analysis(real_run: tuple[str, str], run_cli) -> None:
    real_run, db_url = real_run
    text = run_cli("export", real_run, "--db", db_url, "--format", "csv", check=True).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    results = nearmetal.load_results(real_run, db=db_url)
    stored = sum(
        max(
            1,
            len(
                results.store.metric_table(real_run)["name"][
                    results.store.metric_table(real_run)["trial_id"] == t.id
                ]
            ),
        )
        for t in results.trials
    )
    assert len(rows) == stored
    assert {
        "run_id",
        "trial_key",
        "cell_id",
        "workload",
        "variant",
        "repeat",
        "warmup",
        "status",
        "metric",
        "value",
        "unit",
        "direction",
        "param.argv",
    } <= set(rows[0])
    # one row per trial × metric: the mean of the measured ok rows is the analysis' mean
    for cell in results.cells:
        if cell.workload != "count":
            continue
        values = [
            float(r["value"])
            for r in rows
            if r["cell_id"] == cell.cell_id
            and r["metric"] == "rate"
            and r["warmup"] == "False"
            and r["status"] == "ok"
        ]
        assert len(values) == 3
        assert sum(values) / 3 == pytest.approx(results.analysis.metric(cell.cell_id, "rate").summary.mean)
    # warm-ups and failures are there, flagged
    assert any(r["warmup"] == "True" for r in rows)
    assert {r["status"] for r in rows if r["workload"] == "crash"} == {"failed"}
    # secrets in parameters never reach an export
    assert "hunter2" not in text and "pw1234" not in text
    assert any(r.get("param.env.API_TOKEN") == "<redacted>" for r in rows)


def test_json_jsonl_and_parquet_carry_the_same_rows(
    real_run: tuple[str, str], run_cli, tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    real_run, db_url = real_run
    as_json = json.loads(run_cli("export", real_run, "--db", db_url, "-f", "json", check=True).stdout)
    lines = run_cli("export", real_run, "--db", db_url, "-f", "jsonl", check=True).stdout.splitlines()
    assert len(as_json) == len(lines) > 0
    assert json.loads(lines[0]) == as_json[0]
    out = tmp_path / "r.parquet"
    proc = run_cli("export", real_run, "--db", db_url, "-f", "parquet", "-o", str(out), check=True)
    assert f"wrote {len(as_json)} rows" in proc.stderr
    table = pq.read_table(out)
    assert table.num_rows == len(as_json)
    assert str(table.schema.field("value").type) == "double"
    assert str(table.schema.field("warmup").type) == "bool"
    assert table.schema.metadata[b"nearmetal.runs"] == real_run.encode()
    assert table.column("metric").to_pylist() == [r["metric"] for r in as_json]
    # parquet needs a file; an unknown format is a one-line error
    proc = run_cli("export", real_run, "--db", db_url, "-f", "parquet")
    assert proc.returncode == 1 and "-o results.parquet" in proc.stderr
    proc = run_cli("export", real_run, "--db", db_url, "-f", "xlsx")
    assert proc.returncode == 1 and "unknown export format 'xlsx'" in proc.stderr


def test_openmetrics_of_a_real_run_through_the_cli(real_run: tuple[str, str], run_cli) -> None:
    parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    real_run, db_url = real_run
    text = run_cli("export", real_run, "--db", db_url, "--format", "openmetrics", check=True).stdout
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    rate = families["nearmetal_trial_rate_per_second"]  # ops/s: a count per second, no base unit
    assert len(rate.samples) == 8  # 2 variants × (3 repeats + 1 warm-up)
    assert {s.labels["warmup"] for s in rate.samples} == {"true", "false"}
    wall = families["nearmetal_trial_wall_seconds"]
    assert wall.unit == "seconds" and {s.labels["metric"] for s in wall.samples} == {"wall_s"}
    assert "hunter2" not in text
