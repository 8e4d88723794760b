"""A store: writing runs and trials, reading them back for analysis. Opening its database is ``engine.py``,
its schema ``migrate.py``, retrying a busy write ``retry.py``."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from nearmetal.errors import NearmetalError
from nearmetal.metrics import Metric
from nearmetal.redact import redact_url
from nearmetal.store import validate
from nearmetal.store.engine import must_exist, open_engine, resolve_db_url
from nearmetal.store.migrate import check_schema, migrate
from nearmetal.store.retry import retry_writes
from nearmetal.store.schema import (
    EnvironmentRow,
    EventRow,
    FindingRow,
    MetricRow,
    MetricValueRow,
    RunRow,
    TrialRow,
)

T = TypeVar("T")


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


@dataclass
class RunSummary:
    id: str
    name: str
    status: str
    started_at: float
    ended_at: float | None
    host: str
    trials: int


class Store:
    def __init__(self, db: str | None = None, create: bool = True) -> None:
        """``create=False`` (commands that only read: report, runs, export, site, compare): a SQLite path
        that does not exist is one clear error, not a new empty store that hides a mistyped ``--db``."""
        self.url = resolve_db_url(db)
        # what messages and reports show: never the password
        self.display_url = redact_url(self.url)
        if not create:
            must_exist(self.url)
        self.skipped: list[str] = []  # rows the last list_runs left out, one line each
        self.engine = open_engine(self.url, self.display_url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if self.engine.dialect.name == "sqlite":
            check_schema(self.engine, self.display_url)
        migrate(self.engine, self.display_url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # --- writing ---
    @retry_writes
    def create_run(self, **fields: Any) -> None:
        with self.session() as s:
            s.add(RunRow(**fields))

    @retry_writes
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

    @retry_writes
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

    @retry_writes
    def finish_run(self, run_id: str, status: str, info: dict[str, Any] | None = None) -> None:
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                return
            run.status = status
            run.ended_at = time.time()
            if info:
                run.info = {**(run.info or {}), **info}

    @retry_writes
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

    @retry_writes
    def set_trial_status(self, trial_ids: Iterable[int], status: str) -> None:
        """Change stored trials' status (``run.repair`` marks a re-run block's first trials ``repaired``)."""
        ids = list(trial_ids)
        if not ids:
            return
        with self.session() as s:
            for row in s.scalars(select(TrialRow).where(TrialRow.id.in_(ids))):
                row.status = status

    @retry_writes
    def update_run_info(self, run_id: str, info: dict[str, Any]) -> None:
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is not None:
                run.info = {**(run.info or {}), **info}

    @retry_writes
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

    @retry_writes
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
