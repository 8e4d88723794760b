"""Reading a run's measurements as numpy columns, fast enough for a million values.

Rows are read straight off the DBAPI cursor into ``np.fromiter`` (no SQLAlchemy row objects), and metric
names come back as small integer codes computed by the database (a ``CASE`` over the run's distinct names),
so no Python string is made per value. The same statements run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Select, case, func, or_, select

from nearmetal.store.schema import MetricRow, MetricValueRow, TrialRow

if TYPE_CHECKING:
    from nearmetal.analysis.run import CellInfo, MeasuredTable
    from nearmetal.store.store import Store

# beyond this many distinct names a CASE per row costs more than reading the names themselves
MAX_CASE_NAMES = 256


def _fetch(conn: Any, stmt: Select[Any], dtype: list[tuple[str, str]]) -> np.ndarray:
    result = conn.execute(stmt)
    try:
        # the DBAPI cursor yields plain tuples (sqlite3, psycopg): numpy reads them without Python code
        return np.fromiter(result.cursor, dtype=dtype)
    finally:
        result.close()


def _codes(
    conn: Any, run_id: str, table: Any, with_units: bool, first_trials_only: bool = False
) -> tuple[list[str], list[str], list[str]]:
    """The run's distinct metric names (sorted), with a unit and direction each. ``first_trials_only``
    looks at the first trial of each cell only: cheap, and complete unless some later trial has a metric
    the first lacked (the caller checks, see ``_coded_rows``)."""
    cols = [table.name, table.unit, table.direction] if with_units else [table.name]
    if first_trials_only:
        first = select(func.min(TrialRow.id)).where(TrialRow.run_id == run_id).group_by(TrialRow.cell_id)
        stmt = select(*cols).where(table.trial_id.in_(first)).distinct()
    else:
        stmt = (
            select(*cols)
            .join(TrialRow, TrialRow.id == table.trial_id)
            .where(TrialRow.run_id == run_id)
            .distinct()
        )
    seen: dict[str, tuple[str, str]] = {}
    for row in conn.execute(stmt):
        seen.setdefault(row[0], (row[1], row[2]) if with_units else ("", ""))
    names = sorted(seen)
    return names, [seen[n][0] for n in names], [seen[n][1] for n in names]


def _coded_rows(
    conn: Any, run_id: str, table: Any, with_units: bool, with_seq: bool
) -> tuple[np.ndarray, tuple[list[str], list[str], list[str]]]:
    """Rows with names coded against the names of each cell's first trial; when a row's name is not among
    them (code -1), the names are read from every trial and the rows read again."""
    codes = _codes(conn, run_id, table, with_units, first_trials_only=True)
    if not codes[0]:
        codes = _codes(conn, run_id, table, with_units)
        if not codes[0]:
            return np.empty(0, dtype=_row_dtype(with_seq)), codes
    rows = _metric_rows(conn, run_id, table, codes[0], with_seq)
    if rows.size and (rows["code"] < 0).any():
        codes = _codes(conn, run_id, table, with_units)
        rows = _metric_rows(conn, run_id, table, codes[0], with_seq)
    return rows, codes


def _row_dtype(with_seq: bool) -> list[tuple[str, str]]:
    return [("trial", "i8"), ("code", "i8")] + ([("seq", "i8")] if with_seq else []) + [("value", "f8")]


def _name_code(column: Any, names: list[str]) -> Any:
    return case({name: i for i, name in enumerate(names)}, value=column, else_=-1)


def _metric_rows(conn: Any, run_id: str, table: Any, names: list[str], with_seq: bool) -> np.ndarray:
    """(trial, code, [seq,] value) rows of a run; names beyond MAX_CASE_NAMES are coded in Python."""
    seq_cols = [table.seq] if with_seq else []
    dtype = _row_dtype(with_seq)
    where = (TrialRow.run_id == run_id,)
    if len(names) <= MAX_CASE_NAMES:
        stmt = (
            select(table.trial_id, _name_code(table.name, names), *seq_cols, table.value)
            .join(TrialRow, TrialRow.id == table.trial_id)
            .where(*where)
        )
        return _fetch(conn, stmt, dtype)
    # many names: read them, code them per distinct name with numpy's searchsorted on the sorted list
    stmt = (
        select(table.trial_id, table.name, *seq_cols, table.value)
        .join(TrialRow, TrialRow.id == table.trial_id)
        .where(*where)
    )
    rows = conn.execute(stmt).all()
    out = np.empty(len(rows), dtype=dtype)
    if rows:
        cols = list(zip(*rows, strict=True))
        out["trial"] = cols[0]
        known = np.array(names, dtype=object)
        given = np.array(cols[1], dtype=object)
        code = np.minimum(np.searchsorted(known, given), len(names) - 1)
        out["code"] = np.where(known[code] == given, code, -1)  # -1: a name not in the list
        if with_seq:
            out["seq"] = cols[2]
        out["value"] = cols[-1]
    return out


@contextmanager
def snapshot(store: Store) -> Iterator[Any]:
    """A connection whose statements all see the store as it was at the first one: a run being written
    (trials and their metrics are inserted between two of our SELECTs) reads consistently. SQLite in WAL
    mode keeps a read transaction's snapshot, but pysqlite opens none for a SELECT, so BEGIN is explicit;
    PostgreSQL needs REPEATABLE READ (READ COMMITTED takes a new snapshot per statement)."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")
        elif conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            yield conn
        finally:
            conn.rollback()


def measured_table(store: Store, run_id: str) -> MeasuredTable:
    """Every trial, metric and metric value of a run, as the columns ``analysis.analyse`` takes, read in one
    snapshot (``snapshot``)."""
    from nearmetal.analysis.run import MeasuredTable

    with snapshot(store) as conn:
        trial_stmt = select(
            TrialRow.id,
            TrialRow.cell_id,
            TrialRow.status == "ok",
            # a trial whose block was run again (run.repair) is, like a warm-up, neither measured nor failed
            or_(TrialRow.is_warmup, TrialRow.status == "repaired"),
            TrialRow.block,
        ).where(TrialRow.run_id == run_id)
        result = conn.execute(trial_stmt)
        trials = sorted(result.cursor.fetchall())  # raw tuples: no row object per trial
        result.close()
        metric_rows, (names, units, directions) = _coded_rows(conn, run_id, MetricRow, True, False)
        series_rows, (series_names, _, _) = _coded_rows(conn, run_id, MetricValueRow, False, True)
    cell_of: dict[str, int] = {}
    trial_cell = np.fromiter(
        (cell_of.setdefault(t[1], len(cell_of)) for t in trials), dtype=np.int64, count=len(trials)
    )
    order = np.argsort(metric_rows["trial"], kind="stable")
    metric_rows = metric_rows[order]
    # series values: names coded against the metrics' names (a series always has its metric row)
    index = {n: i for i, n in enumerate(names)}
    remap = np.array([index.get(n, -1) for n in series_names] or [-1], dtype=np.int64)
    series_rows = series_rows[np.lexsort((series_rows["seq"], series_rows["code"], series_rows["trial"]))]
    series_code = remap[series_rows["code"]] if series_rows.size else series_rows["code"]
    known = series_code >= 0
    return MeasuredTable(
        cell_ids=list(cell_of),
        trial_id=np.array([t[0] for t in trials], dtype=np.int64),
        trial_cell=trial_cell,
        trial_ok=np.array([bool(t[2]) for t in trials], dtype=bool),
        trial_warmup=np.array([bool(t[3]) for t in trials], dtype=bool),
        trial_block=np.array([int(t[4] or 0) for t in trials], dtype=np.int64),
        names=names,
        units=units,
        directions=directions,
        metric_trial=metric_rows["trial"].copy(),
        metric_code=metric_rows["code"].copy(),
        metric_value=metric_rows["value"].copy(),
        series_trial=series_rows["trial"][known].copy(),
        series_code=series_code[known].copy(),
        series_value=series_rows["value"][known].copy(),
    )


def run_cells(store: Store, run_id: str, primary_metric: Any) -> list[CellInfo]:
    """The cells of a run, in the order their first trial ran (one row per cell, read by SQL)."""
    from nearmetal.analysis.run import CellInfo

    first = select(func.min(TrialRow.id)).where(TrialRow.run_id == run_id).group_by(TrialRow.cell_id)
    stmt = (
        select(
            TrialRow.cell_id,
            TrialRow.workload,
            TrialRow.kind,
            TrialRow.variant,
            TrialRow.point,
            TrialRow.comparison_key,
            TrialRow.is_baseline,
        )
        .where(TrialRow.id.in_(first))
        .order_by(TrialRow.seq, TrialRow.id)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        CellInfo(cid, workload, kind, variant, dict(point or {}), key, bool(base), primary_metric(kind))
        for cid, workload, kind, variant, point, key, base in rows
    ]


def cell_settings(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """cell_id → {"params": the workload's parameters, "layers": the variant's layer stack} of each cell's
    first trial (what two runs' cells must share to be compared)."""
    first = select(func.min(TrialRow.id)).where(TrialRow.run_id == run_id).group_by(TrialRow.cell_id)
    stmt = select(TrialRow.cell_id, TrialRow.params, TrialRow.layers).where(TrialRow.id.in_(first))
    with store.engine.connect() as conn:
        return {
            cid: {"params": dict(params or {}), "layers": list(layers or [])}
            for cid, params, layers in conn.execute(stmt)
        }


def trial_counts(store: Store, run_id: str) -> dict[tuple[str, bool], int]:
    """(status, is_warmup) → number of trials."""
    stmt = (
        select(TrialRow.status, TrialRow.is_warmup, func.count(TrialRow.id))
        .where(TrialRow.run_id == run_id)
        .group_by(TrialRow.status, TrialRow.is_warmup)
    )
    with store.engine.connect() as conn:
        return {(status, bool(warm)): int(n) for status, warm, n in conn.execute(stmt)}


def failed_trials(store: Store, run_id: str, limit: int = 10) -> tuple[list[dict[str, Any]], int]:
    """The first ``limit`` trials that did not succeed, and how many there are in all."""
    where = (TrialRow.run_id == run_id, TrialRow.status.notin_(("ok", "repaired")))
    stmt = (
        select(TrialRow.cell_key, TrialRow.repeat_index, TrialRow.is_warmup, TrialRow.status, TrialRow.error)
        .where(*where)
        .order_by(TrialRow.seq)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
        total = conn.execute(select(func.count(TrialRow.id)).where(*where)).scalar_one()
    return [
        {"cell_key": r[0], "repeat_index": r[1], "is_warmup": bool(r[2]), "status": r[3], "error": r[4]}
        for r in rows
    ], int(total)


def trial_durations(store: Store, run_id: str) -> dict[str, tuple[int, float]]:
    """cell_id → (trials, mean seconds from start to end of a trial, set-up and teardown included)."""
    stmt = (
        select(TrialRow.cell_id, func.count(TrialRow.id), func.avg(TrialRow.ended_at - TrialRow.started_at))
        .where(TrialRow.run_id == run_id)
        .group_by(TrialRow.cell_id)
    )
    with store.engine.connect() as conn:
        return {cid: (int(n), float(avg or 0.0)) for cid, n, avg in conn.execute(stmt)}


def repeat_labels(store: Store, trial_ids: list[int]) -> dict[int, str]:
    """trial id → '#3' (its repeat index) for a few trials."""
    if not trial_ids:
        return {}
    stmt = select(TrialRow.id, TrialRow.repeat_index).where(TrialRow.id.in_(trial_ids))
    with store.engine.connect() as conn:
        return {tid: f"#{idx}" for tid, idx in conn.execute(stmt)}
