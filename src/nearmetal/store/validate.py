"""What is read back from a store is data, checked as such (issue 26, case 5).

A store file can come from someone else (a colleague's ``results.db``), and a shared PostgreSQL database can
be written by anyone with its password. Nothing read from one is trusted:

- the SQLite file's schema holds only the tables and indexes nearmetal creates: a VIEW or TRIGGER (a
  recursive view hangs any query that reads it) is refused before any query runs, and every query on a
  SQLite store is bounded by a progress handler (``MAX_QUERY_S``);
- run ids match the pattern they were created with (they become file and directory names);
- typed columns hold their type and JSON columns valid JSON of the expected shape, checked in SQL per run
  before a row is built, so a crafted value is one line naming the run and the column;
- stored plan text is parsed with the plan loader's limits (size, nesting, alias bombs), and the analysis
  settings read from it are bounded as the plan model bounds them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

from nearmetal.errors import NearmetalError
from nearmetal.textsafe import one_line_text

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # as runlock.RUN_ID_PATTERN: what a run id is made of
# the longest a query on a SQLite store may run: a crafted file cannot hang `runs` or `report`; the largest
# real stores (10^6 metric values) read in well under a second
MAX_QUERY_S = 120.0
MAX_TIME = 253402300799  # 9999-12-31 23:59:59 UTC: the last second datetime can show
_PROGRESS_STEPS = 100_000  # SQLite VM instructions between two looks at the clock

# columns checked per run: (table, column, kind); kinds: number, integer, text, object, array,
# object-or-array
RUN_COLUMNS = [
    ("started_at", "time"),
    ("ended_at", "time-or-null"),
    ("seed", "integer-or-null"),
    ("name", "text"),
    ("status", "text"),
    ("plan_text", "text"),
    ("info", "object"),
]
TRIAL_COLUMNS = [
    ("started_at", "time"),
    ("ended_at", "time"),
    ("repeat_index", "integer"),
    ("seq", "integer-or-null"),
    ("block", "integer-or-null"),
    ("exit_code", "integer-or-null"),
    ("cell_id", "text"),
    ("trial_key", "text"),
    ("workload", "text"),
    ("kind", "text"),
    ("variant", "text"),
    ("status", "text"),
    ("comparison_key", "text"),
    ("params", "object"),
    ("point", "object"),
    ("layers", "array"),
    ("placement", "object"),
    ("caveats", "array"),
]
METRIC_COLUMNS = [("name", "text"), ("value", "number"), ("unit", "text-or-null"), ("direction", "text")]
VALUE_COLUMNS = [("name", "text"), ("seq", "integer"), ("value", "number")]
EVENT_COLUMNS = [("time", "time"), ("kind", "text"), ("detail", "object")]
ENVIRONMENT_COLUMNS = [("key", "text"), ("value", "text-or-null")]


def valid_run_id(run_id: object) -> bool:
    return isinstance(run_id, str) and bool(re.fullmatch(RUN_ID_PATTERN, run_id)) and ".." not in run_id


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_time(value: object) -> bool:
    """Epoch seconds a date can be made of (1970 … 9999)."""
    return is_number(value) and 0 <= value <= MAX_TIME  # type: ignore[operator]


def shown_id(run_id: object) -> str:
    """A stored run id as a message shows it: quoted, control characters visible, at most 80 characters."""
    text = one_line_text(run_id)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def check_stored_run_id(run_id: object, store: str) -> str:
    if not valid_run_id(run_id):
        raise NearmetalError(
            f"the store {store} holds a run id {shown_id(run_id)} that nearmetal never creates; not read",
            fix="run ids are 1-64 letters, digits, '.', '_' or '-'; was the store file crafted or edited?",
        )
    return str(run_id)


# --- SQLite: the schema, and a bound on every query ---


def expected_sqlite_objects() -> dict[str, str]:
    """name -> type of every object nearmetal's schema creates in SQLite."""
    from nearmetal.store.schema import Base

    objects = {"alembic_version": "table", "sqlite_sequence": "table"}
    for table in Base.metadata.tables.values():
        objects[table.name] = "table"
        for index in table.indexes:
            if index.name:
                objects[str(index.name)] = "index"
    return objects


def check_sqlite_schema(conn: Any, display: str) -> None:  # conn: a SQLAlchemy Connection
    """Refuse a SQLite file whose schema holds an object nearmetal did not create: a VIEW or TRIGGER runs
    SQL its author chose whenever nearmetal reads or writes (a recursive view never ends), an unknown table
    or index says the file is not a nearmetal store. ``sqlite_autoindex_*`` (unique constraints) are
    SQLite's own."""
    expected = expected_sqlite_objects()
    rows = conn.exec_driver_sql("SELECT type, name FROM sqlite_master").fetchall()
    # views and triggers named first: they are the reason (a table renamed to make room for one is not)
    for kind, name in sorted(rows, key=lambda row: row[0] not in ("view", "trigger")):
        if kind == "index" and str(name).startswith("sqlite_autoindex_"):
            continue
        if expected.get(name) != kind:
            raise NearmetalError(
                f"the store {display} holds a {kind} {shown_id(name)} that nearmetal does not create; "
                "it is not opened (a crafted file runs its own SQL through views and triggers)",
                fix="open only stores nearmetal wrote; to keep its data, copy the runs into a new store "
                "with sqlite3 after removing that object (DROP VIEW/TRIGGER …)",
            )


def arm_deadline(dbapi_connection: Any, limit_s: float | None = None) -> None:
    """Abort the statement about to run (and the fetching of its rows) once it has taken longer than
    ``limit_s`` (SQLite raises `OperationalError: interrupted`); called before every statement."""
    deadline = time.monotonic() + (MAX_QUERY_S if limit_s is None else limit_s)

    def handler() -> int:
        return 1 if time.monotonic() > deadline else 0

    dbapi_connection.set_progress_handler(handler, _PROGRESS_STEPS)


def json_loads(text: str | bytes) -> Any:
    """The store's JSON reader: a column that is not JSON is one error, not a traceback (rows are checked
    per run before they are read; this catches what another read path meets first)."""
    import json

    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        shown = one_line_text(text if isinstance(text, str) else repr(text))
        raise NearmetalError(
            f"the store holds {shown[:60]!r} in a JSON column: not JSON; not read",
            fix="the row was not written by nearmetal (a crafted or damaged store?)",
        ) from None


# --- per-run column checks in SQL ---


def _predicate(dialect: str, column: str, kind: str) -> str:
    """SQL that is true when ``column`` holds what ``kind`` says."""
    nullable = kind.endswith("-or-null")
    kind = kind.removesuffix("-or-null")
    if dialect == "sqlite":
        if kind == "number":
            test = f"typeof({column}) IN ('real', 'integer')"
        elif kind == "time":
            test = f"(typeof({column}) IN ('real', 'integer') AND {column} BETWEEN 0 AND {MAX_TIME})"
        elif kind == "integer":
            test = f"typeof({column}) = 'integer'"
        elif kind == "text":
            test = f"typeof({column}) = 'text'"
        else:
            test = f"(json_valid({column}) AND json_type({column}) IN ('{kind}', 'null'))"
    else:  # PostgreSQL checks types itself; JSON columns can still hold another shape
        if kind in ("object", "array"):
            test = f"json_typeof(CAST({column} AS json)) IN ('{kind}', 'null')"
        elif kind == "time":
            test = f"{column} BETWEEN 0 AND {MAX_TIME}"
        else:
            test = "TRUE"
    return f"({column} IS NULL OR {test})" if nullable or kind in ("object", "array") else test


def _first_bad(
    conn: Any, dialect: str, table: str, columns: list[tuple[str, str]], where: str, params: dict[str, Any]
) -> str | None:
    from sqlalchemy import text

    cases = " ".join(
        f"WHEN NOT {_predicate(dialect, f'x.{column}', kind)} THEN '{column}'" for column, kind in columns
    )
    sql = f"SELECT CASE {cases} ELSE NULL END AS bad FROM {table} x WHERE {where}"
    sql = f"SELECT bad FROM ({sql}) checked WHERE bad IS NOT NULL LIMIT 1"
    row = conn.execute(text(sql), params).first()
    return None if row is None else str(row[0])


def check_run_columns(conn: Any, dialect: str, run_id: str, display: str) -> None:
    """Every value of the run's rows that analysis and reports read holds its column's type; the first that
    does not is one error naming the run, the table and the column."""
    params = {"run": run_id}
    in_run = "x.trial_id IN (SELECT id FROM trials WHERE run_id = :run)"
    checks: list[tuple[str, list[tuple[str, str]], str]] = [
        ("runs", RUN_COLUMNS, "x.id = :run"),
        ("trials", TRIAL_COLUMNS, "x.run_id = :run"),
        ("metrics", METRIC_COLUMNS, in_run),
        ("metric_values", VALUE_COLUMNS, in_run),
        ("events", EVENT_COLUMNS, "x.run_id = :run"),
        ("environment", ENVIRONMENT_COLUMNS, "x.run_id = :run"),
    ]
    for table, columns, where in checks:
        bad = _first_bad(conn, dialect, table, columns, where, params)
        if bad is not None:
            kind = dict(columns)[bad].removesuffix("-or-null")
            raise NearmetalError(
                f"run {run_id} in {display}: {table}.{bad} holds a value that is not {_describe(kind)}; "
                "the run is not read (a crafted or damaged store?)",
                fix="report other runs, or repair the row with sqlite3 / psql",
            )
    from sqlalchemy import text

    from nearmetal.plan.load import MAX_PLAN_BYTES

    plan_size = conn.execute(text("SELECT length(plan_text) FROM runs WHERE id = :run"), params).scalar()
    if plan_size is not None and plan_size > MAX_PLAN_BYTES:
        raise NearmetalError(
            f"run {run_id} in {display}: runs.plan_text is {plan_size:,} characters long, more than a plan "
            f"may be ({MAX_PLAN_BYTES // 1024} KiB); the run is not read",
            fix="report other runs; a plan is a short declaration, this row was not written by nearmetal",
        )


def _describe(kind: str) -> str:
    return {
        "number": "a number",
        "time": "a time (epoch seconds, 1970 … 9999)",
        "integer": "an integer",
        "text": "text",
        "object": "a JSON object",
        "array": "a JSON array",
    }.get(kind, kind)


# --- stored plan text and the analysis settings in it ---


def stored_plan(text: object, run_id: str) -> dict[str, Any]:
    """The stored plan as a mapping, parsed with the plan loader's limits (size, nesting, alias bombs,
    safe loader); a plan that does not parse is one error naming the run."""
    import yaml

    from nearmetal.errors import PlanError
    from nearmetal.plan.load import (
        MAX_PLAN_BYTES,
        check_structure,
        compose_plan,
        construct_plan,
        flow_depth_problem,
    )

    source = f"run {run_id}: stored plan"
    if not isinstance(text, str):
        raise NearmetalError(f"{source} is not text", fix="the store row was not written by nearmetal")
    if len(text.encode(errors="replace")) > MAX_PLAN_BYTES:
        raise NearmetalError(f"{source} is larger than {MAX_PLAN_BYTES // 1024} KiB; not read")
    try:
        problem = flow_depth_problem(text, source)
        if problem:
            raise PlanError([problem])
        root = compose_plan(text)
        problems = check_structure(root, source)
        if problems:
            raise PlanError(problems[:1])
        data = construct_plan(root)
    except PlanError as exc:
        raise NearmetalError(
            one_line_text(exc.problems[0]), fix="the store row was not written by nearmetal"
        ) from None
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        first = one_line_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise NearmetalError(
            f"{source} does not parse as YAML: {first[:200]}",
            fix="the store row was not written by nearmetal",
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NearmetalError(f"{source} is not a mapping", fix="the store row was not written by nearmetal")
    for key in ("analysis", "workloads", "variants", "matrix", "energy"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise NearmetalError(
                f"{source}: {key} is not a mapping", fix="the store row was not written by nearmetal"
            )
    return data


def _plain_value(value: object, depth: int = 0) -> bool:
    """JSON's plain values: None, text, numbers, booleans, and lists or text-keyed mappings of them (an
    option such as the Kubernetes ``node_selector`` is a mapping), at most 4 levels deep."""
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if depth >= 4:
        return False
    if isinstance(value, list):
        return all(_plain_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_value(v, depth + 1) for k, v in value.items())
    return False


def stored_backend_options(info: object, run_id: str) -> dict[str, Any]:
    """The backend options a run was started with (``info.backend_options``), for its resume: a mapping of
    option names to plain values, else one error (the backend's option model validates the values)."""
    options = info.get("backend_options", {}) if isinstance(info, dict) else {}
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and k.isidentifier() and _plain_value(v) for k, v in options.items()
    ):
        raise NearmetalError(
            f"run {run_id}: the stored backend options are not a mapping of option names to values",
            fix="the store row was not written by nearmetal; start the run again instead of resuming it",
        )
    return dict(options)


# the bounds of the plan model's `analysis:` section (plan.models.Analysis), applied again on read
ANALYSIS_BOUNDS: dict[str, tuple[Callable[[Any], Any], float, float]] = {
    "confidence": (float, 0.5, 1.0),  # open interval
    "bootstrap_resamples": (int, 99, 1_000_000),
    "outlier_mad_k": (float, 0.0, 1e6),
    "cv_warning": (float, 0.0, 1e6),
}


def analysis_setting(section: dict[str, Any], key: str, default: Any, run: str = "the stored plan") -> Any:
    """One analysis setting of a stored plan, refused with one line when it is not a number within the
    plan model's bounds (``bootstrap_resamples: 1e9`` would allocate gigabytes)."""
    value = section.get(key, default)
    convert, low, high = ANALYSIS_BOUNDS[key]
    try:
        if isinstance(value, bool):
            raise TypeError
        number = convert(value)
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise NearmetalError(
            f"{run}: analysis.{key} is {one_line_text(repr(value))[:60]}, not a number",
            fix="the store row was not written by nearmetal",
        ) from None
    if key == "confidence":
        inside = low < number < high
    elif key == "bootstrap_resamples":
        inside = low <= number <= high
    else:
        inside = low < number <= high
    if not inside:
        raise NearmetalError(
            f"{run}: analysis.{key} = {number} is outside what a plan may set ({low} … {high}); not analysed",
            fix="the store row was not written by nearmetal (a plan with this value is refused at load)",
        )
    return number
