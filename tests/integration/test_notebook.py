"""Notebook use: ``Results.to_pandas()``, typed timestamps in Parquet and DataFrames, the analysed loss table
as an export (``export --what losses``) and ``runs --json``."""

from __future__ import annotations

import csv
import datetime
import io
import json
from pathlib import Path

import pytest
from report_data import SyntheticCell, write_run

import nearmetal
from nearmetal.metrics import Metric
from nearmetal.store import Store


def _metrics(cell: SyntheticCell, repeat: int, rng) -> list[Metric]:
    slow = {"native": 1.0, "fuse": 1.5, "overlay": 1.02}[cell.variant]
    return [Metric("wall_s", 2.0 * slow * rng.normal(1, 0.01), "s", "lower")]


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Store, str]:
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    cells = [
        SyntheticCell("io", v, {"clients": n}, baseline=v == "native")
        for n in (1, 8)
        for v in ("native", "fuse", "overlay")
    ]
    return store, write_run(store, cells, _metrics, repeats=5)


def test_to_pandas_gives_the_loss_table_and_the_trials(stored: tuple[Store, str]) -> None:
    pd = pytest.importorskip("pandas")
    store, run_id = stored
    results = nearmetal.load_results(run_id, store=store)
    losses = results.to_pandas()
    assert isinstance(losses, pd.DataFrame) and len(losses) == 6
    table = results.table()
    assert list(losses["loss_pct"].fillna(-1)) == pytest.approx(
        [r.get("loss_pct") if r.get("loss_pct") is not None else -1 for r in table]
    )
    fuse = losses[(losses["variant"] == "fuse") & (losses["point"] == "clients=8")].iloc[0]
    assert fuse["ci_low_pct"] <= fuse["loss_pct"] <= fuse["ci_high_pct"]
    assert fuse["loss_pct"] == pytest.approx(50, abs=5) and fuse["run_id"] == run_id
    assert {"verdict", "stop", "cell_id", "metric"} <= set(losses.columns)
    trials = results.to_pandas("trials")
    assert len(trials) == len(results.trials)  # one metric per trial here
    assert isinstance(trials["started_at"].dtype, pd.DatetimeTZDtype)
    first = next(t for t in results.trials if t.id == trials["trial_id"].iloc[0])
    assert trials["ended_at"].iloc[0].timestamp() == pytest.approx(first.ended_at, abs=1e-6)
    # a pivot a notebook does, with no reshaping first
    means = trials[~trials["warmup"]].groupby("variant")["value"].mean()
    assert means["fuse"] > means["overlay"] > means["native"]
    with pytest.raises(nearmetal.errors.NearmetalError, match="unknown table"):
        results.to_pandas("cells")


def test_export_losses_as_csv_json_and_parquet(stored: tuple[Store, str], run_cli, tmp_path: Path) -> None:
    store, run_id = stored
    db = str(store.url)
    results = nearmetal.load_results(run_id, store=store)
    table = results.table()
    text = run_cli("export", run_id, "--db", db, "--what", "losses", check=True).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(table) == 6
    assert list(rows[0])[:3] == ["run_id", "cell_id", "workload"]
    for row, expected in zip(rows, table, strict=True):
        assert row["variant"] == expected["variant"] and row["verdict"] == expected.get("verdict", "")
        if expected.get("loss_pct") is not None:
            assert float(row["loss_pct"]) == pytest.approx(expected["loss_pct"])
            assert float(row["ci_low_pct"]) == pytest.approx(expected["ci_low_pct"])
    as_json = json.loads(run_cli("export", run_id, "--db", db, "--what", "losses", "-f", "json").stdout)
    assert [r["cell_id"] for r in as_json] == [r["cell_id"] for r in rows]
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "losses.parquet"
    run_cli("export", run_id, "--db", db, "--what", "losses", "-f", "parquet", "-o", str(out), check=True)
    parquet = pq.read_table(out)
    assert parquet.num_rows == 6
    assert str(parquet.schema.field("loss_pct").type) == "double"
    assert parquet.schema.metadata[b"nearmetal.what"] == b"losses"
    # the loss table is a table: OpenMetrics carries the losses its own way
    proc = run_cli("export", run_id, "--db", db, "--what", "losses", "-f", "openmetrics")
    assert proc.returncode == 1 and "--what losses is a table" in proc.stderr


def test_parquet_times_are_timestamps(stored: tuple[Store, str], run_cli, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    store, run_id = stored
    out = tmp_path / "trials.parquet"
    run_cli("export", run_id, "--db", str(store.url), "-f", "parquet", "-o", str(out), check=True)
    table = pq.read_table(out)
    assert table.schema.field("started_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("ended_at").type == pa.timestamp("us", tz="UTC")
    trials = {t.id: t for t in nearmetal.load_results(run_id, store=store).trials}
    for trial_id, started in zip(
        table.column("trial_id").to_pylist(), table.column("started_at").to_pylist(), strict=True
    ):
        assert started.tzinfo is not None
        assert started.timestamp() == pytest.approx(trials[trial_id].started_at, abs=1e-6)


def test_runs_json(stored: tuple[Store, str], run_cli) -> None:
    store, run_id = stored
    second = write_run(store, [SyntheticCell("w", "a", baseline=True)], _metrics_a, repeats=2)
    listed = json.loads(run_cli("runs", "--db", str(store.url), "--json", check=True).stdout)
    assert [r["run_id"] for r in listed] == [second, run_id]  # newest first
    first = listed[1]
    assert first["plan"] == "synthetic" and first["status"] == "finished" and first["resumable"] is False
    assert first["trials"] == len(nearmetal.load_results(run_id, store=store).trials)
    assert datetime.datetime.fromisoformat(first["started_at"]).tzinfo is not None
    limited = json.loads(run_cli("runs", "--db", str(store.url), "--json", "--limit", "1", check=True).stdout)
    assert [r["run_id"] for r in limited] == [second]


def _metrics_a(cell: SyntheticCell, repeat: int, rng) -> list[Metric]:
    return [Metric("wall_s", 1.0 + rng.normal(0, 0.01), "s", "lower")]
