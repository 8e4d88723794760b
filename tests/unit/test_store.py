"""The result store on SQLite and on a real PostgreSQL server: the same data comes back the same way
(JSON columns, float precision, ordering, NaN, long names), migrations reach one head, and a store URL's
password is never stored or printed. (Concurrent writers and openers: tests/test_concurrency.py.)"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from report_data import SyntheticCell, write_run
from sqlalchemy import create_engine, inspect, text

import nearmetal
from nearmetal.errors import NearmetalError
from nearmetal.metrics import Metric
from nearmetal.store import Store
from nearmetal.store.schema import Base

EDGE_FLOATS = [0.1 + 0.2, 1e-300, 1e300, -0.0, 123456789.12345679, 2.0**-1074, 1 / 3, math.inf, -math.inf]


def _trial_fields(run_id: str, key: str, seq: int, **extra) -> dict:
    fields = dict(
        run_id=run_id,
        trial_key=key,
        cell_id="c1",
        cell_key="w/a",
        comparison_key='["w",{}]',
        workload="w",
        kind="command",
        variant="a",
        is_baseline=True,
        params={"argv": ["x", "ü"], "nested": {"n": 3, "none": None, "flag": True}},
        point={},
        layers=[{"layer": "cpu-quota", "cpus": 1.5}],
        repeat_index=seq,
        is_warmup=False,
        block=0,
        seq=seq,
        status="ok",
        started_at=1_700_000_000.123456,
        ended_at=1_700_000_001.654321,
        output_dir="/tmp/x",
        placement={},
        caveats=[],
    )
    fields.update(extra)
    return fields


def _new_run(store: Store, run_id: str = "20260101-000000-abcd", started: float = 1.0) -> str:
    store.create_run(
        id=run_id,
        name="store-test",
        plan_text="name: store-test\n",
        plan_source="p.yaml",
        plan_hash="0" * 64,
        started_at=started,
        info={"order": "interleaved", "repeats": {"min": 3, "max": None}, "ünï": "çødé", "x": [1, 2.5, None]},
    )
    return run_id


def test_values_come_back_exactly(store_url: str) -> None:
    store = Store(store_url)
    run_id = _new_run(store)
    metrics = [Metric(f"edge_{i}", v, "u", "lower") for i, v in enumerate(EDGE_FLOATS)]
    metrics.append(Metric.series("epoch_s", [1.1, 2.2, 3.3000000000000003], "s", "lower"))
    store.add_trial(metrics, **_trial_fields(run_id, "t1", 1))
    trial = store.trials(run_id)[0]
    assert trial.params == {"argv": ["x", "ü"], "nested": {"n": 3, "none": None, "flag": True}}
    assert trial.layers == [{"layer": "cpu-quota", "cpus": 1.5}]
    assert trial.started_at == 1_700_000_000.123456 and trial.is_baseline is True
    assert store.get_run(run_id).info["ünï"] == "çødé"
    table = store.metric_table(run_id)
    got = dict(zip(table["name"], table["value"], strict=True))
    for i, v in enumerate(EDGE_FLOATS):
        assert got[f"edge_{i}"] == v  # bit-exact: both keep IEEE doubles
    assert math.copysign(1, got["edge_3"]) in (1, -1)
    ids, values = store.metric_values(run_id, "epoch_s")
    assert values.tolist() == [1.1, 2.2, 3.3000000000000003] and ids.dtype == np.int64
    assert table["is_warmup"].dtype == bool and table["value"].dtype == float


def test_json_columns_hold_the_same_on_both(store_url: str) -> None:
    store = Store(store_url)
    run_id = _new_run(store)
    placement = {
        "nan": float("nan"),
        "inf": math.inf,
        "path": Path("/x"),
        "n": np.int64(3),
        "f": np.float32(0.5),
    }
    store.add_trial([], **_trial_fields(run_id, "t1", 1, placement=placement, caveats=["a", "b"]))
    trial = store.trials(run_id)[0]
    assert trial.placement == {"nan": None, "inf": None, "path": "/x", "n": 3, "f": 0.5}
    store.add_event(run_id, "fault", {"window": [1.5, 2.5], "what": "netem loss 30%"}, at=5.0)
    store.add_event(run_id, "resume", {}, at=2.0)
    assert [e["kind"] for e in store.events(run_id)] == ["resume", "fault"]
    assert store.events(run_id)[1]["detail"] == {"window": [1.5, 2.5], "what": "netem loss 30%"}


def test_nan_metric_is_left_out_and_said_so(store_url: str) -> None:
    store = Store(store_url)
    run_id = _new_run(store)
    store.add_trial(
        [
            Metric("ok", 1.0, "", "lower"),
            Metric("bad", float("nan"), "", "lower"),
            Metric.series("s", [1.0, float("nan"), 3.0], "", "lower"),
        ],
        **_trial_fields(run_id, "t1", 1),
    )
    table = store.metric_table(run_id)
    assert sorted(table["name"]) == ["ok", "s"]
    assert store.metric_values(run_id, "s")[1].tolist() == [1.0, 3.0]
    assert store.trials(run_id)[0].caveats == [
        "metric bad was NaN (no value) and is not stored",
        "metric s: 1 NaN values left out",
    ]
    assert table["value"][list(table["name"]).index("s")] == 2.0


def test_ordering_does_not_depend_on_the_database(store_url: str) -> None:
    store = Store(store_url)
    run_id = _new_run(store)
    for seq in (3, 1, 2):
        store.add_trial([Metric("v", float(seq), "", "lower")], **_trial_fields(run_id, f"t{seq}", seq))
    assert [t.seq for t in store.trials(run_id)] == [1, 2, 3]
    keys = ["cpu_x", "cpu.x", "CPU", "a", "B", "tool.fio", "tool-fio", "ä"]
    store.set_environment(run_id, {k: k.upper() for k in keys})
    assert list(store.environment(run_id)) == sorted(keys)  # code-point order, whatever the collation
    # re-running a trial replaces it and its metrics
    store.add_trial([Metric("v", 9.0, "", "lower")], **_trial_fields(run_id, "t2", 4))
    table = store.metric_table(run_id)
    assert sorted(table["value"].tolist()) == [1.0, 3.0, 9.0]
    assert [t.trial_key for t in store.trials(run_id)] == ["t1", "t3", "t2"]


def test_runs_by_prefix_and_latest(store_url: str) -> None:
    store = Store(store_url)
    _new_run(store, "20260101-000000-aaaa", started=1.0)
    _new_run(store, "20260101-000000-aabb", started=2.0)
    _new_run(store, "20260102-000000-cccc", started=3.0)
    assert store.latest_run_id() == "20260102-000000-cccc"
    assert [r.id for r in store.list_runs()] == [
        "20260102-000000-cccc",
        "20260101-000000-aabb",
        "20260101-000000-aaaa",
    ]
    assert store.get_run("20260102").id == "20260102-000000-cccc"
    with pytest.raises(NearmetalError, match="2 runs start with it"):
        store.get_run("20260101-000000-aa")
    for wildcard in ("%", "_", "2026010_"):  # LIKE wildcards are matched literally
        with pytest.raises(NearmetalError, match="no run"):
            store.get_run(wildcard)
    with pytest.raises(NearmetalError, match="no run"):
        store.get_run("20260101-000000-AABB")  # case matters on both


def test_too_long_names_are_refused_the_same_way(store_url: str) -> None:
    store = Store(store_url)
    run_id = _new_run(store)
    with pytest.raises(NearmetalError, match=r"metrics.name is 200 characters long.*at most 128"):
        store.add_trial([Metric("m" * 200, 1.0, "", "lower")], **_trial_fields(run_id, "t1", 1))
    assert store.trials(run_id) == []  # nothing half-written


def test_same_run_same_analysis_on_sqlite_and_postgresql(tmp_path: Path, fresh_postgres_url: str) -> None:
    """The whole path store → analysis → table gives identical numbers on both databases."""
    cells = [SyntheticCell("w", v, {"n": n}, baseline=v == "base") for n in (1, 4) for v in ("base", "slow")]

    def metrics(cell, repeat, rng):
        return [
            Metric(
                "wall_s",
                (1.3 if cell.variant == "slow" else 1.0) * cell.point["n"] * rng.normal(1, 0.05),
                "s",
                "lower",
            )
        ]

    tables = []
    for url in (f"sqlite:///{tmp_path / 's.db'}", fresh_postgres_url):
        store = Store(url)
        run_id = write_run(store, cells, metrics, repeats=6, run_id="same-run", seed=3)
        tables.append(nearmetal.load_results(run_id, store=store).table())
        store.dispose()
    assert tables[0] == tables[1]
    assert any(r.get("significant") for r in tables[0])


def test_alembic_has_one_head_and_upgrades_from_the_first_revision(store_url: str) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from nearmetal.store.migrate import alembic_config

    engine = create_engine(store_url)
    cfg = alembic_config(engine)
    script = ScriptDirectory.from_config(cfg)
    assert len(script.get_heads()) == 1, (
        f"migrations branch: heads {script.get_heads()} (rebase re-parents yours)"
    )
    first = [r for r in script.walk_revisions() if r.down_revision is None]
    assert [r.revision for r in first] == ["0001"]
    # a store made by the first release, with a run in it
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            text(
                "insert into runs (id, name, description, plan_text, plan_source, plan_hash, status, started_at,"
                " host, backend, seed, nearmetal_version, workdir, info) values ('old-run', 'old', '', 'name: old',"
                " '', 'h', 'finished', 1.0, 'h', 'local', 0, '0.1.0', '', '{}')"
            )
        )
    engine.dispose()
    store = Store(store_url)  # opening upgrades it to head
    assert store.get_run("old-run").name == "old"
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == script.get_current_head()
        # the migrations build exactly the schema the models describe
        diff = [d for d in compare_metadata(context, Base.metadata) if not _harmless(d)]
    assert diff == [], f"schema.py and the migrations disagree: {diff}"


def _harmless(diff: object) -> bool:
    # SQLite reports no types/defaults for some columns; only structural differences count
    return isinstance(diff, list) and all(d[0] in ("modify_default", "modify_comment") for d in diff)


def test_a_fresh_store_is_at_head_and_matches_the_models(store_url: str) -> None:
    store = Store(store_url)
    names = set(inspect(store.engine).get_table_names())
    assert {
        "runs",
        "trials",
        "metrics",
        "metric_values",
        "environment",
        "findings",
        "events",
        "alembic_version",
    } <= names


def test_the_store_password_is_never_stored_or_printed(
    fresh_postgres_url: str, tmp_path: Path, run_cli
) -> None:
    """The test server takes a password (scripts/services/postgres.sh: scram-sha-256, no trust): run a
    plan with its URL and look for the password everywhere nearmetal writes."""
    from sqlalchemy.engine import make_url

    url = fresh_postgres_url
    secret = make_url(url).password
    if not secret:
        pytest.skip("the test PostgreSQL URL has no password (scripts/services/postgres.sh gives one)")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: pw\nworkloads:\n  w: {kind: command, params: {argv: ['"
        + sys.executable
        + "', '-c', 'pass']}}\nvariants: {a: []}\nrepeats: 1\n"
    )
    proc = run_cli("run", str(plan), "--json", "--workdir", "runs", env={"NEARMETAL_DB": url}, check=True)
    assert secret not in proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["db"].startswith(f"postgresql+psycopg://{make_url(url).username}:<redacted>@")
    assert secret not in Path(out["html"]).read_text()
    export = run_cli("export", "-f", "json", env={"NEARMETAL_DB": url}, check=True).stdout
    assert secret not in export
    engine = create_engine(url)
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                assert secret not in json.dumps([str(v) for v in row]), table.name
    engine.dispose()
    results = nearmetal.load_results(out["run_id"], db=url)
    assert results.environment["store.url"] == out["db"]
    # a wrong URL's error names the store without its password
    # (a database that does not exist: an unreachable server would be retried for a while, see Store)
    bad = make_url(url).set(database="nearmetal_no_such_database").render_as_string(hide_password=False)
    proc = run_cli("report", env={"NEARMETAL_DB": bad})
    assert proc.returncode == 1 and "cannot open the result store" in proc.stderr
    assert secret not in proc.stderr
