"""Opening a store, writing runs and trials, reading them back for analysis."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from sqlalchemy import create_engine, event, func, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from nearmetal.errors import NearmetalError
from nearmetal.metrics import Metric
from nearmetal.redact import redact_url
from nearmetal.store import validate
from nearmetal.store.schema import (
    Base,
    EnvironmentRow,
    EventRow,
    FindingRow,
    MetricRow,
    MetricValueRow,
    RunRow,
    TrialRow,
)

T = TypeVar("T")
DEFAULT_DB = "nearmetal.db"
MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL advisory lock held while a process creates or upgrades the schema ("nmig")
SCHEMA_LOCK_KEY = 0x6E6D6967
# how long a write waits for a busy store (another run committing, a server restarting) before giving up:
# a measured trial is worth waiting for
WRITE_RETRY_S = float(os.environ.get("NEARMETAL_STORE_RETRY_S", "300"))


def _transient(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(
        word in text
        for word in (
            "locked",
            "busy",
            "already exists",
            "duplicate key",
            "server closed the connection",
            "connection refused",
            "could not connect",
            "terminating connection",
        )
    )


def _retry_writes(method: Callable[..., T]) -> Callable[..., T]:
    """Run a write transaction again when the store is busy or the connection dropped. Each write method is
    one transaction, rolled back on error, so running it again is safe."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> T:
        deadline = time.monotonic() + WRITE_RETRY_S
        attempt = 0
        while True:
            try:
                return method(self, *args, **kwargs)
            except OperationalError as exc:
                attempt += 1
                if not _transient(exc) or time.monotonic() >= deadline:
                    raise NearmetalError(
                        f"could not write to the result store {redact_url(self.url)}: {redact_url(str(exc.orig))}",
                        fix="check the disk, the database server and other processes holding the store",
                    ) from None
                time.sleep(min(5.0, 0.05 * 2**attempt))

    return wrapper


def resolve_db_url(db: str | None = None) -> str:
    """``--db`` wins, then ``NEARMETAL_DB``, then ``./nearmetal.db``; a plain path means SQLite."""
    value = db or os.environ.get("NEARMETAL_DB") or DEFAULT_DB
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # the busy timeout first: switching to WAL needs a lock another process may hold at this moment
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a trial whose commit returned survives a power loss too (one fsync per trial is nothing
    # next to a trial); NORMAL could lose the last commits, and a resume would run them again
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # SQL in the schema (a view, a trigger, a default) may not call functions with side effects; a store
    # with views or triggers is refused anyway (validate.check_sqlite_schema)
    cursor.execute("PRAGMA trusted_schema=OFF")
    cursor.close()


def _sqlite_deadline(conn: Any, *_args: Any) -> None:
    """Before every statement on a SQLite store: bound its time (a crafted file cannot hang a read)."""
    validate.arm_deadline(conn.connection.dbapi_connection)


def _json_ready(value: Any) -> Any:
    """JSON columns hold the same thing on every database: NaN/±inf become null (PostgreSQL's json type
    rejects them, SQLite would store invalid JSON), numpy scalars their Python value, anything else its str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_ready(value.item())
    return str(value)


def _json_dumps(value: Any) -> str:
    return json.dumps(_json_ready(value), allow_nan=False)


def _check_lengths(row_class: Any, values: dict[str, Any]) -> None:
    """Strings longer than their column: PostgreSQL refuses them, SQLite stores them; refuse on both with
    a message that says which field (before anything of the trial is written)."""
    for column in row_class.__table__.columns:
        length = getattr(column.type, "length", None)
        value = values.get(column.key)
        if length and isinstance(value, str) and len(value) > length:
            raise NearmetalError(
                f"{row_class.__tablename__}.{column.key} is {len(value)} characters long, the store keeps at "
                f"most {length}: {value[:60]!r}…",
                fix="use a shorter name in the plan (or the workload's metric definition)",
            )


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


@dataclass
class RunSummary:
    id: str
    name: str
    status: str
    started_at: float
    ended_at: float | None
    host: str
    trials: int


def _create_private(database: str | None) -> None:
    """A new SQLite store is created readable by its owner only (0600): it holds plans and outputs. SQLite
    gives its -wal and -shm files the database file's mode."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError, FileNotFoundError, IsADirectoryError, PermissionError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def _must_exist(url: str) -> None:
    if not url.startswith("sqlite"):
        return  # a server's database: opening it says what is wrong
    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database
    except Exception:
        return
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    if not Path(database).exists():
        raise NearmetalError(
            f"no store at {database}",
            fix="check --db or NEARMETAL_DB (the default is ./nearmetal.db in the current directory); "
            "nearmetal run PLAN (or study, try) creates a store, reading commands do not",
        )


class Store:
    def __init__(self, db: str | None = None, create: bool = True) -> None:
        """``create=False`` (commands that only read: report, runs, export, site, compare): a SQLite path
        that does not exist is one clear error, not a new empty store that hides a mistyped ``--db``."""
        self.url = resolve_db_url(db)
        # what messages and reports show: never the password
        self.display_url = redact_url(self.url)
        if not create:
            _must_exist(self.url)
        self.skipped: list[str] = []  # rows the last list_runs left out, one line each
        kwargs: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": validate.json_loads}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # a server restarted during a long run: check pooled connections before using them
            kwargs["pool_pre_ping"] = True
        try:
            self.engine = create_engine(self.url, **kwargs)
        except Exception as exc:  # a malformed URL or a driver that is not installed
            raise NearmetalError(
                f"cannot open the result store {self.display_url!r}: {redact_url(str(exc))}",
                fix="give --db a SQLAlchemy URL such as sqlite:///results.db or "
                "postgresql+psycopg://user@host/db",
            ) from None
        if self.engine.dialect.name == "sqlite":
            _create_private(self.engine.url.database)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "before_cursor_execute", _sqlite_deadline)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if self.engine.dialect.name == "sqlite":
            self._check_schema()
        self._migrate()

    def _check_schema(self) -> None:
        """A SQLite file holds only nearmetal's tables and indexes (before any query reads them)."""
        try:
            with self.engine.connect() as conn:
                validate.check_sqlite_schema(conn, self.display_url)
        except DatabaseError:  # not a database, cannot be opened, busy: _migrate says so in its words
            return

    # --- schema ---
    def _migrate(self) -> None:
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = _alembic_config(self.engine)
        head = ScriptDirectory.from_config(cfg).get_current_head()
        for attempt in range(40):
            try:
                # the common case, also for a read-only store: already at head, nothing to lock
                with self.engine.connect() as conn:
                    if MigrationContext.configure(conn).get_current_revision() == head:
                        return
                with self.engine.connect() as conn:
                    self._lock_schema(conn)
                    # checked again under the lock: another process may have just created or upgraded it
                    current = MigrationContext.configure(conn).get_current_revision()
                    if current != head:
                        self._create_or_upgrade(conn, cfg, current)
                    conn.commit()
                    return
            except (OperationalError, IntegrityError, ProgrammingError, DatabaseError) as exc:
                # another process is creating the same store at this moment (a server without advisory
                # locks, a lock wait that timed out): look again shortly
                if _transient(exc) and attempt < 39:
                    time.sleep(min(2.0, 0.05 * (attempt + 1)))
                    continue
                raise NearmetalError(
                    f"cannot open the result store {self.display_url}: {redact_url(str(exc.orig)).strip()}",
                    fix="check the path or URL, and that the database server is running",
                ) from None
        raise NearmetalError(
            f"the result store {self.display_url} stayed locked", fix="stop other writers and retry"
        )

    def _lock_schema(self, conn: Any) -> None:
        """Serialise schema creation and upgrades between processes opening the same store at once, and
        make them all-or-nothing: a process killed half-way leaves the store as it was."""
        if self.engine.dialect.name == "sqlite":
            # pysqlite does not open transactions for DDL on its own; BEGIN IMMEDIATE takes the write lock
            # now (waiting for the busy timeout) and makes every CREATE TABLE part of one transaction
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif self.engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})

    @staticmethod
    def _create_or_upgrade(conn: Any, cfg: Any, current: str | None) -> None:
        from alembic import command

        cfg.attributes["connection"] = conn
        if current is None and not inspect(conn).has_table("runs"):
            Base.metadata.create_all(conn)
            command.stamp(cfg, "head")
        else:
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # --- writing ---
    @_retry_writes
    def create_run(self, **fields: Any) -> None:
        with self.session() as s:
            s.add(RunRow(**fields))

    @_retry_writes
    def set_environment(self, run_id: str, env: dict[str, str]) -> None:
        with self.session() as s:
            for key, value in env.items():
                existing = s.scalar(
                    select(EnvironmentRow).where(EnvironmentRow.run_id == run_id, EnvironmentRow.key == key)
                )
                if existing:
                    existing.value = str(value)
                else:
                    s.add(EnvironmentRow(run_id=run_id, key=key, value=str(value)))

    def add_trial(self, metrics: Iterable[Metric], **fields: Any) -> int:
        """Store one finished trial and its metrics in a single transaction.

        A metric whose value is NaN (a program that printed ``nan``) has no value to compare: it is not
        stored, and the trial's caveats say so (the same on SQLite, which cannot keep NaN, and PostgreSQL)."""
        metrics = list(metrics)
        kept: list[Metric] = []
        caveats = list(fields.get("caveats") or [])
        for m in metrics:
            values = [float(v) for v in m.values]
            finite = [v for v in values if not math.isnan(v)]
            if len(finite) != len(values) and finite:
                # a series with some NaN samples: keep the others, and their mean as the trial's value
                caveats.append(f"metric {m.name}: {len(values) - len(finite)} NaN values left out")
                m = Metric(m.name, sum(finite) / len(finite), m.unit, m.direction, m.source, tuple(finite))
            if math.isnan(float(m.value)):
                caveats.append(f"metric {m.name} was NaN (no value) and is not stored")
            else:
                kept.append(m)
        if len(kept) != len(metrics):
            fields = {**fields, "caveats": caveats}
        _check_lengths(TrialRow, fields)
        for m in kept:
            _check_lengths(MetricRow, {"name": m.name, "unit": m.unit, "source": m.source})
        return self._write_trial(kept, fields)

    @_retry_writes
    def _write_trial(self, metrics: list[Metric], fields: dict[str, Any]) -> int:
        with self.session() as s:
            existing = s.scalar(
                select(TrialRow).where(
                    TrialRow.run_id == fields["run_id"], TrialRow.trial_key == fields["trial_key"]
                )
            )
            if existing is not None:
                # a resumed run re-ran a trial whose first attempt was stored: keep the newest attempt
                s.delete(existing)
                s.flush()
            trial = TrialRow(**fields)
            s.add(trial)
            s.flush()
            for m in metrics:
                s.add(
                    MetricRow(
                        trial_id=trial.id,
                        name=m.name,
                        value=float(m.value),
                        unit=m.unit,
                        direction=m.direction,
                        source=m.source,
                        n_values=max(1, len(m.values)),
                    )
                )
                for i, v in enumerate(m.values):
                    s.add(MetricValueRow(trial_id=trial.id, name=m.name, seq=i, value=float(v)))
            return trial.id

    @_retry_writes
    def finish_run(self, run_id: str, status: str, info: dict[str, Any] | None = None) -> None:
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                return
            run.status = status
            run.ended_at = time.time()
            if info:
                run.info = {**(run.info or {}), **info}

    @_retry_writes
    def reopen_run(self, run_id: str, resume: dict[str, Any]) -> None:
        """Mark a run as running again (``nearmetal resume``); ``resume`` is appended to ``info.resumes``."""
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                raise NearmetalError(f"no run {run_id!r} in {self.display_url}")
            run.status = "running"
            run.ended_at = None
            info = dict(run.info or {})
            info["resumes"] = [*info.get("resumes", []), resume]
            run.info = info

    def trial_metrics(self, run_id: str) -> dict[str, list[Metric]]:
        """The metrics of every stored trial of a run, by trial key (a resumed run starts from them)."""
        stmt = (
            select(
                TrialRow.trial_key,
                MetricRow.name,
                MetricRow.value,
                MetricRow.unit,
                MetricRow.direction,
                MetricRow.source,
            )
            .join(MetricRow, MetricRow.trial_id == TrialRow.id)
            .where(TrialRow.run_id == run_id)
            .order_by(TrialRow.seq, MetricRow.id)
        )
        out: dict[str, list[Metric]] = {}
        with self.engine.connect() as conn:
            for key, name, value, unit, direction, source in conn.execute(stmt):
                better: Literal["higher", "lower"] = "higher" if direction == "higher" else "lower"
                out.setdefault(key, []).append(Metric(name, value, unit, better, source))
        return out

    @_retry_writes
    def set_trial_status(self, trial_ids: Iterable[int], status: str) -> None:
        """Change stored trials' status (``run.repair`` marks a re-run block's first trials ``repaired``)."""
        ids = list(trial_ids)
        if not ids:
            return
        with self.session() as s:
            for row in s.scalars(select(TrialRow).where(TrialRow.id.in_(ids))):
                row.status = status

    @_retry_writes
    def update_run_info(self, run_id: str, info: dict[str, Any]) -> None:
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is not None:
                run.info = {**(run.info or {}), **info}

    @_retry_writes
    def add_event(
        self,
        run_id: str,
        kind: str,
        detail: dict[str, Any] | None = None,
        trial_id: int | None = None,
        at: float | None = None,
    ) -> None:
        with self.session() as s:
            s.add(
                EventRow(
                    run_id=run_id, trial_id=trial_id, time=at or time.time(), kind=kind, detail=detail or {}
                )
            )

    @_retry_writes
    def add_findings(self, run_id: str | None, findings: Iterable[dict[str, Any]]) -> None:
        with self.session() as s:
            columns = set(FindingRow.__table__.columns.keys())
            for f in findings:
                # a finding may carry more than the table keeps (e.g. ``inspects``, known from its check)
                s.add(
                    FindingRow(
                        run_id=run_id, created_at=time.time(), **{k: v for k, v in f.items() if k in columns}
                    )
                )

    # --- reading ---
    def get_run(self, run_id: str) -> RunRow:
        """The run (its id or a unique prefix of it), after its stored values were checked as data: a run
        id nearmetal never creates, a typed column holding another type, JSON that is not JSON or not the
        expected shape, a plan text over the plan size limit are one error naming the run and the column."""
        matches: list[str] = []
        with self._sessions() as s:
            found = s.scalar(select(RunRow.id).where(RunRow.id == run_id))
            if found is None:
                pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                matches = list(
                    s.scalars(
                        select(RunRow.id)
                        .where(RunRow.id.like(f"{pattern}%", escape="\\"))
                        .order_by(RunRow.id)
                    ).all()
                )
                # SQLite's LIKE ignores case, PostgreSQL's does not: the same answer on both
                matches = [m for m in matches if isinstance(m, str) and m.startswith(run_id)]
                if len(matches) == 1:
                    found = matches[0]
        if found is None:
            raise NearmetalError(
                f"no run {validate.shown_id(run_id)} in {self.display_url}"
                + (f" ({len(matches)} runs start with it)" if len(matches) > 1 else ""),
                fix="list runs with `nearmetal runs`, or point --db at the right store",
            )
        found = validate.check_stored_run_id(found, self.display_url)
        with self.engine.connect() as conn:
            validate.check_run_columns(conn, self.engine.dialect.name, found, self.display_url)
        with self._sessions() as s:
            run = s.get(RunRow, found)
            if run is None:  # removed in between
                raise NearmetalError(f"no run {found!r} in {self.display_url}")
            validate.stored_backend_options(run.info, found)  # a resume passes them to the backend
            s.expunge(run)
            return run

    def latest_run_id(self) -> str:
        with self._sessions() as s:
            run_id = s.scalar(select(RunRow.id).order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(1))
        if run_id is not None:
            validate.check_stored_run_id(run_id, self.display_url)
        if run_id is None:
            raise NearmetalError(
                f"the store {self.display_url} has no runs yet",
                fix="run a plan first: nearmetal run PLAN (or nearmetal study cpu-quota)",
            )
        return run_id

    def list_runs(self, limit: int = 50) -> list[RunSummary]:
        """The newest runs. A row whose id nearmetal never creates or whose fields are not of their types
        is left out, with one line in ``self.skipped`` (``nearmetal runs`` prints them)."""
        self.skipped = []
        with self._sessions() as s:
            counts = (
                select(TrialRow.run_id, func.count(TrialRow.id).label("n"))
                .group_by(TrialRow.run_id)
                .subquery()
            )
            rows = s.execute(
                select(
                    RunRow.id,
                    RunRow.name,
                    RunRow.status,
                    RunRow.started_at,
                    RunRow.ended_at,
                    RunRow.host,
                    counts.c.n,
                )
                .outerjoin(counts, counts.c.run_id == RunRow.id)
                .order_by(RunRow.started_at.desc(), RunRow.id.desc())
                .limit(limit)
            ).all()
        out = []
        for run_id, name, status, started, ended, host, n in rows:
            problem = None
            if not validate.valid_run_id(run_id):
                problem = "an id nearmetal never creates"
            elif not validate.is_time(started) or not (ended is None or validate.is_time(ended)):
                problem = "runs.started_at or ended_at is not a time (epoch seconds)"
            elif not all(isinstance(v, str) for v in (name, status)) or not isinstance(host, str | None):
                problem = "runs.name, status or host is not text"
            if problem:
                self.skipped.append(
                    f"run {validate.shown_id(run_id)} in {self.display_url} left out: {problem}"
                )
                continue
            out.append(RunSummary(run_id, name, status, float(started), ended, host or "", n or 0))
        return out

    def trials(self, run_id: str) -> list[TrialRow]:
        with self._sessions() as s:
            rows = s.scalars(
                select(TrialRow).where(TrialRow.run_id == run_id).order_by(TrialRow.seq, TrialRow.id)
            ).all()
            for r in rows:
                s.expunge(r)
            return list(rows)

    def environment(self, run_id: str) -> dict[str, str]:
        with self._sessions() as s:
            rows = s.execute(
                select(EnvironmentRow.key, EnvironmentRow.value).where(EnvironmentRow.run_id == run_id)
            ).all()
            # sorted here: the database's collation would order "cpu.x" vs "cpu_x" differently per server
            return dict(sorted(rows))

    def findings(self, run_id: str | None) -> list[dict[str, Any]]:
        with self._sessions() as s:
            rows = s.scalars(
                select(FindingRow).where(FindingRow.run_id == run_id).order_by(FindingRow.id)
            ).all()
            return [
                {
                    "check_id": r.check_id,
                    "severity": r.severity,
                    "title": r.title,
                    "evidence": r.evidence,
                    "fix": r.fix,
                    "lesson": r.lesson,
                }
                for r in rows
            ]

    def events(self, run_id: str) -> list[dict[str, Any]]:
        with self._sessions() as s:
            rows = s.scalars(
                select(EventRow).where(EventRow.run_id == run_id).order_by(EventRow.time, EventRow.id)
            ).all()
            return [
                {"time": r.time, "kind": r.kind, "detail": r.detail, "trial_id": r.trial_id} for r in rows
            ]

    def metric_table(self, run_id: str) -> dict[str, np.ndarray]:
        """Every metric of every trial of a run as column arrays (one SQL query, no per-row objects)."""
        stmt = (
            select(
                TrialRow.id,
                TrialRow.cell_id,
                TrialRow.variant,
                TrialRow.comparison_key,
                TrialRow.is_warmup,
                TrialRow.status,
                MetricRow.name,
                MetricRow.value,
                MetricRow.unit,
                MetricRow.direction,
            )
            .join(MetricRow, MetricRow.trial_id == TrialRow.id)
            .where(TrialRow.run_id == run_id)
            .order_by(TrialRow.seq, MetricRow.name)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        cols = [
            "trial_id",
            "cell_id",
            "variant",
            "comparison_key",
            "is_warmup",
            "status",
            "name",
            "value",
            "unit",
            "direction",
        ]
        if not rows:
            return {c: np.array([]) for c in cols}
        arrays = list(zip(*rows, strict=True))
        out = {c: np.asarray(a, dtype=object) for c, a in zip(cols, arrays, strict=True)}
        out["value"] = np.asarray(arrays[7], dtype=float)
        out["trial_id"] = np.asarray(arrays[0], dtype=np.int64)
        out["is_warmup"] = np.asarray(arrays[4], dtype=bool)
        return out

    def metric_values(self, run_id: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(trial ids, values) of a multi-valued metric."""
        stmt = (
            select(MetricValueRow.trial_id, MetricValueRow.value)
            .join(TrialRow, TrialRow.id == MetricValueRow.trial_id)
            .where(TrialRow.run_id == run_id, MetricValueRow.name == name)
            .order_by(MetricValueRow.trial_id, MetricValueRow.seq)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            return np.array([], dtype=np.int64), np.array([], dtype=float)
        ids, values = zip(*rows, strict=True)
        return np.asarray(ids, dtype=np.int64), np.asarray(values, dtype=float)

    def measured_table(self, run_id: str) -> Any:
        """A run's trials, metrics and metric values as numpy columns (``analysis.MeasuredTable``), read
        without a Python object per value; see ``store/columns.py``."""
        from nearmetal.store.columns import measured_table

        return measured_table(self, run_id)

    def dispose(self) -> None:
        self.engine.dispose()
