"""Issue 26, case 5: values in a store are data. A crafted SQLite file (a colleague's ``results.db``) is
read by ``runs``, ``report``, ``compare`` and ``site``; each crafted value ends in one error naming the run
and the column (or the row left out), never a traceback, a hang, or a path outside the output directory."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from nearmetal.api import load_results
from nearmetal.errors import NearmetalError
from nearmetal.metrics import Metric
from nearmetal.report.site import write_site
from nearmetal.results.compare import compare_runs
from nearmetal.store import Store, validate

RUNS = ("20260101-000000-aaaa", "20260102-000000-bbbb")
PLAN = "name: small\nworkloads: {w: {kind: command}}\nvariants: {base: [], other: []}\nbaseline: base\n"


def _make_store(path: Path) -> None:
    store = Store(f"sqlite:///{path}")
    for r, run_id in enumerate(RUNS):
        store.create_run(
            id=run_id,
            name="small",
            plan_text=PLAN,
            plan_source="p.yaml",
            plan_hash="0" * 64,
            started_at=1_700_000_000.0 + r,
            info={"order": "interleaved"},
        )
        seq = 0
        for variant, cell in (("base", "c1"), ("other", "c2")):
            for i in range(3):
                seq += 1
                store.add_trial(
                    [Metric("wall_s", 1.0 + 0.01 * i + (0.1 if variant == "other" else 0), "s", "lower")],
                    run_id=run_id,
                    trial_key=f"{cell}-r{i}",
                    cell_id=cell,
                    cell_key=f"w/{variant}",
                    comparison_key='["w",{}]',
                    workload="w",
                    kind="command",
                    variant=variant,
                    is_baseline=variant == "base",
                    params={},
                    point={},
                    layers=[],
                    repeat_index=i,
                    is_warmup=False,
                    block=i,
                    seq=seq,
                    status="ok",
                    started_at=1_700_000_000.0 + seq,
                    ended_at=1_700_000_000.5 + seq,
                    output_dir="",
                    placement={},
                    caveats=[],
                )
        store.finish_run(run_id, "finished")
    store.dispose()


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "results.db"
    _make_store(path)
    return path


def _crafted(clean_store: Path, tmp_path: Path, *sql: str) -> str:
    path = tmp_path / "results.db"
    shutil.copy(clean_store, path)
    conn = sqlite3.connect(path)
    for statement in sql:
        conn.execute(statement.replace("RUN", RUNS[0]))
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def test_the_clean_store_reads(clean_store: Path, tmp_path: Path) -> None:
    db = _crafted(clean_store, tmp_path)
    assert [r["variant"] for r in load_results(RUNS[0], db=db).table()] == ["base", "other"]
    assert compare_runs(RUNS[0], RUNS[1], db=db).rows


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        (f"UPDATE runs SET plan_text = '{BOMB}' WHERE id = 'RUN'", ("stored plan", "100,000 values")),
        (f"UPDATE runs SET plan_text = '{'[' * 200}' WHERE id = 'RUN'", ("stored plan", "nested")),
        ("UPDATE runs SET plan_text = 'name: [unclosed' WHERE id = 'RUN'", ("stored plan", "YAML")),
        ("UPDATE runs SET plan_text = '- a list' WHERE id = 'RUN'", ("stored plan", "not a mapping")),
        ("UPDATE runs SET plan_text = 'analysis: [1]' WHERE id = 'RUN'", ("analysis is not a mapping",)),
        (
            "UPDATE runs SET plan_text = plan_text || 'analysis: {bootstrap_resamples: 1000000000}' WHERE id = 'RUN'",
            ("analysis.bootstrap_resamples", "outside"),
        ),
        (
            "UPDATE runs SET plan_text = plan_text || 'analysis: {bootstrap_resamples: lots}' WHERE id = 'RUN'",
            ("analysis.bootstrap_resamples", "not a number"),
        ),
        (
            "UPDATE runs SET plan_text = plan_text || 'analysis: {confidence: 1.5}' WHERE id = 'RUN'",
            ("analysis.confidence", "outside"),
        ),
        (
            "UPDATE runs SET plan_text = plan_text || 'analysis: {statistic: evil}' WHERE id = 'RUN'",
            ("analysis.statistic",),
        ),
        (f"UPDATE runs SET plan_text = '{'#' * 1_100_000}' WHERE id = 'RUN'", ("runs.plan_text", "KiB")),
        ("UPDATE runs SET info = 'not json {' WHERE id = 'RUN'", ("runs.info", "JSON object")),
        ("UPDATE runs SET info = '[1, 2]' WHERE id = 'RUN'", ("runs.info", "JSON object")),
        ("UPDATE runs SET started_at = 'yesterday' WHERE id = 'RUN'", ("runs.started_at", "time")),
        ("UPDATE runs SET seed = 'x' WHERE id = 'RUN'", ("runs.seed", "integer")),
        ("UPDATE trials SET point = 'nope' WHERE run_id = 'RUN'", ("trials.point", "JSON object")),
        ("UPDATE trials SET params = '\"text\"' WHERE run_id = 'RUN'", ("trials.params",)),
        ("UPDATE trials SET layers = '{}' WHERE run_id = 'RUN'", ("trials.layers", "JSON array")),
        ("UPDATE trials SET ended_at = 1e300 WHERE run_id = 'RUN'", ("trials.ended_at", "time")),
        ("UPDATE trials SET cell_id = x'00ff' WHERE run_id = 'RUN'", ("trials.cell_id", "text")),
        (
            "UPDATE metrics SET value = 'fast' WHERE trial_id IN (SELECT id FROM trials WHERE run_id = 'RUN')",
            ("metrics.value", "number"),
        ),
        (
            "INSERT INTO events (run_id, time, kind, detail) VALUES ('RUN', 1.0, 'x', 'nope')",
            ("events.detail",),
        ),
    ],
)
def test_a_crafted_value_is_one_error_naming_the_run(
    clean_store: Path, tmp_path: Path, sql: str, words: tuple[str, ...]
) -> None:
    db = _crafted(clean_store, tmp_path, sql)
    for read in (
        lambda: load_results(RUNS[0], db=db).table(),
        lambda: compare_runs(RUNS[0], RUNS[1], db=db),
        lambda: compare_runs(RUNS[1], RUNS[0], db=db),
    ):
        with pytest.raises(NearmetalError) as caught:
            read()
        message = caught.value.message
        assert "\n" not in message and RUNS[0] in message
        for word in words:
            assert word in message
    # the listing reads no JSON: the run is listed (its id and times are fine) or left out with a reason
    store = Store(db)
    listed = [r.id for r in store.list_runs()]
    assert RUNS[1] in listed and (RUNS[0] in listed or store.skipped)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE runs SET started_at = 'yesterday' WHERE id = 'RUN'",
        "UPDATE runs SET started_at = 1e300 WHERE id = 'RUN'",
        "UPDATE runs SET ended_at = 'later' WHERE id = 'RUN'",
        "UPDATE runs SET name = x'00ff' WHERE id = 'RUN'",
        "UPDATE runs SET id = '../../x' WHERE id = 'RUN'",
        "UPDATE runs SET id = 'a/b' WHERE id = 'RUN'",
        "UPDATE runs SET id = '\x1b[2J' WHERE id = 'RUN'",
    ],
)
def test_runs_leaves_out_a_row_it_cannot_show(clean_store: Path, tmp_path: Path, sql: str) -> None:
    store = Store(_crafted(clean_store, tmp_path, sql))
    assert [r.id for r in store.list_runs()] == [RUNS[1]]
    assert len(store.skipped) == 1 and "left out" in store.skipped[0] and "\x1b" not in store.skipped[0]


def test_a_run_id_that_climbs_out_never_becomes_a_path(clean_store: Path, tmp_path: Path) -> None:
    db = _crafted(clean_store, tmp_path, "UPDATE runs SET id = '../../x' WHERE id = 'RUN'")
    out = tmp_path / "a" / "b" / "site"
    summary = write_site(out, db=db)
    assert summary.runs == 1 and summary.reports == 1
    assert any("'../../x'" in p for p in summary.problems)
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*.html")}
    assert written == {Path("a/b/site/index.html"), Path(f"a/b/site/runs/{RUNS[1]}/report.html")}
    with pytest.raises(NearmetalError, match="never creates"):
        load_results("../../x", db=db)


def test_a_site_run_directory_that_is_a_link_is_not_written_through(
    clean_store: Path, tmp_path: Path
) -> None:
    db = _crafted(clean_store, tmp_path)
    out = tmp_path / "site"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "runs").mkdir(parents=True)
    (out / "runs" / RUNS[0]).symlink_to(elsewhere)
    summary = write_site(out, db=db)
    assert not list(elsewhere.iterdir())
    assert any("leads outside" in p for p in summary.problems)


@pytest.mark.parametrize(
    ("sql", "kind", "name"),
    [
        (
            "CREATE VIEW spin AS WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT n FROM c",
            "view",
            "spin",
        ),
        ("CREATE TRIGGER wipe AFTER INSERT ON events BEGIN DELETE FROM runs; END", "trigger", "wipe"),
        ("CREATE TABLE extra (x)", "table", "extra"),
    ],
)
def test_a_store_with_objects_nearmetal_did_not_create_is_refused(
    clean_store: Path, tmp_path: Path, sql: str, kind: str, name: str
) -> None:
    db = _crafted(clean_store, tmp_path, sql)
    with pytest.raises(NearmetalError) as caught:
        Store(db)
    assert f"holds a {kind} '{name}' that nearmetal does not create" in caught.value.message


def test_runs_replaced_by_a_recursive_view_is_refused_before_any_query(
    clean_store: Path, tmp_path: Path
) -> None:
    db = _crafted(
        clean_store,
        tmp_path,
        "ALTER TABLE runs RENAME TO runs_kept",
        "CREATE VIEW runs AS WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) "
        "SELECT r.* FROM runs_kept r, c",
    )
    started = time.monotonic()
    with pytest.raises(NearmetalError, match="holds a view 'runs'"):
        Store(db)
    assert time.monotonic() - started < 30  # refused from the schema, not after running the view


def test_every_sqlite_query_is_bounded(tmp_path: Path) -> None:
    """The second line of defence: a query that never ends is interrupted at the deadline."""
    conn = sqlite3.connect(tmp_path / "x.db")
    validate.arm_deadline(conn, 0.5)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        conn.execute(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c"
        ).fetchall()
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(
    "info",
    [
        {"backend_options": "x"},
        {"backend_options": {"a b": 1}},
        {"backend_options": {"k": {1: "not a text key"}}},
        {"backend_options": {"k": {"a": {"b": {"c": {"d": {"e": 1}}}}}}},  # deeper than any option
    ],
)
def test_stored_backend_options_are_plain_values(info: dict) -> None:
    with pytest.raises(NearmetalError, match="stored backend options"):
        validate.stored_backend_options(info, RUNS[0])
    # what nearmetal itself stores: plain values, and mappings such as Kubernetes' node_selector
    options = {"partition": "debug", "parallel": 2, "node_selector": {"kubernetes.io/os": "linux"}}
    assert validate.stored_backend_options({"backend_options": options}, "r") == options
