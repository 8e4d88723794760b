"""Concurrent writers: runs that share one result store (a SQLite file, a PostgreSQL database) all finish with
every trial stored, also when they create the store at the same moment."""

from __future__ import annotations

import multiprocessing
import os
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import nearmetal_argv
from helpers import write_plan

from nearmetal.metrics import Metric
from nearmetal.store import Store

WRITERS = 4
TRIALS_PER_WRITER = 25


def _plan(directory: Path, name: str, repeats: int) -> Path:
    return write_plan(
        directory,
        f"""
        name: {name}
        workloads:
          t: {{kind: command, params: {{argv: [/bin/true]}}}}
        variants: {{a: [], b: []}}
        repeats: {repeats}
        """,
        name=f"{name}.yaml",
    )


def _two_runs_at_once(tmp_path: Path, db: str, repeats: int = 8) -> list[str]:
    """Start two `nearmetal run`s on one store at the same moment; returns their run ids."""
    env = {**os.environ, "NEARMETAL_DB": db}
    procs = []
    run_ids = []
    for i in range(2):
        run_id = f"conc{i}-{os.getpid()}-{secrets.token_hex(2)}"
        run_ids.append(run_id)
        plan = _plan(tmp_path, f"writer{i}", repeats)
        procs.append(
            subprocess.Popen(
                [*nearmetal_argv(), "run", str(plan), "--run-id", run_id, "-q", "--no-html"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    # a reader as well, as someone looking at `nearmetal runs` while both measure
    reads = []
    while any(p.poll() is None for p in procs):
        reads.append(
            subprocess.run(
                [*nearmetal_argv(), "runs"], env=env, capture_output=True, text=True, timeout=120, check=False
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    store = Store(db)
    try:
        for run_id in run_ids:
            trials = store.trials(run_id)
            assert len(trials) == 2 * repeats, (run_id, len(trials))
            assert {t.status for t in trials} == {"ok"}
            assert store.get_run(run_id).status == "finished"
    finally:
        store.dispose()
    # the reader was never locked out or shown a half-written store while both wrote
    # a reader that looks before the first writer made the SQLite file is told "no store at …" (readers
    # never create a store); from the first answer that read the store on, every read must succeed
    opened = [i for i, read in enumerate(reads) if read.returncode == 0]
    assert opened, (
        f"the reader never read the store while the runs wrote: {reads[-1].stderr if reads else ''}"
    )
    for read in reads[: opened[0]]:
        assert "no store at" in read.stderr, read.stderr
    for read in reads[opened[0] :]:
        assert read.returncode == 0, read.stderr
        assert "database is locked" not in read.stderr and "Traceback" not in read.stderr
    return run_ids


def _add_trials(db: str, writer: int, count: int) -> int:
    """One process writing trials as fast as it can (no workload in between: the worst case for locks)."""
    store = Store(db)
    run_id = f"w{writer}"
    store.create_run(id=run_id, name="writers", plan_text="", plan_hash="", started_at=time.time())
    for i in range(count):
        now = time.time()
        store.add_trial(
            [Metric("wall_s", 0.1 * i, "s", "lower"), Metric("x", 1.0, "", "higher")],
            run_id=run_id,
            trial_key=f"k{i}",
            cell_id="c",
            cell_key="c",
            comparison_key="c",
            workload="w",
            kind="command",
            variant="v",
            repeat_index=i,
            status="ok",
            started_at=now,
            ended_at=now,
        )
        store.list_runs()
    store.dispose()
    return count


def _hammer(db: str) -> None:
    with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
        done = pool.starmap(_add_trials, [(db, w, TRIALS_PER_WRITER) for w in range(WRITERS)])
    assert done == [TRIALS_PER_WRITER] * WRITERS
    store = Store(db)
    try:
        for w in range(WRITERS):
            assert len(store.trials(f"w{w}")) == TRIALS_PER_WRITER
        ids, _ = store.metric_values("w0", "x")
        table = store.metric_table("w1")
        assert len(table["value"]) == 2 * TRIALS_PER_WRITER and len(ids) == 0
    finally:
        store.dispose()


@pytest.mark.slow
def test_two_runs_share_one_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    _two_runs_at_once(tmp_path, str(db))
    with sqlite3.connect(db) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_writers_creating_one_sqlite_store_at_once_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "hammered.db"
    _hammer(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
        # exactly one schema version, stamped once
        assert conn.execute("select count(*) from alembic_version").fetchone()[0] == 1


@pytest.fixture
def fresh_postgres(postgres_url: str):
    """A database of its own on the test server, so other tests' schemas never meet this one's."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    name = f"nm_conc_{os.getpid()}_{secrets.token_hex(3)}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_two_runs_share_one_postgres_database(tmp_path: Path, fresh_postgres: str) -> None:
    _two_runs_at_once(tmp_path, fresh_postgres)


def test_writers_creating_one_postgres_store_at_once_lose_nothing(fresh_postgres: str) -> None:
    _hammer(fresh_postgres)
    store = Store(fresh_postgres)
    try:
        with store.engine.connect() as conn:
            from sqlalchemy import text

            assert conn.execute(text("select count(*) from alembic_version")).scalar() == 1
    finally:
        store.dispose()
