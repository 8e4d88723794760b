"""Tables of the result store. Times are epoch seconds (float) so analysis needs no date parsing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from nearmetal.metrics import NAME_MAX_CHARS, UNIT_MAX_CHARS


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    plan_text: Mapped[str] = mapped_column(Text)
    plan_source: Mapped[str] = mapped_column(String(512), default="")
    plan_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    backend: Mapped[str] = mapped_column(String(32), default="local")
    seed: Mapped[int] = mapped_column(Integer, default=0)
    nearmetal_version: Mapped[str] = mapped_column(String(32), default="")
    workdir: Mapped[str] = mapped_column(Text, default="")
    # free-form facts about the run: stop reasons per cell, options the run was given
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    trials: Mapped[list[TrialRow]] = relationship(back_populates="run", cascade="all, delete-orphan")


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("run_id", "trial_key", name="uq_trial_key"),
        Index("ix_trials_run", "run_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    trial_key: Mapped[str] = mapped_column(String(64))
    cell_id: Mapped[str] = mapped_column(String(32))
    cell_key: Mapped[str] = mapped_column(Text)
    comparison_key: Mapped[str] = mapped_column(Text)
    workload: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64))
    variant: Mapped[str] = mapped_column(String(128))
    is_baseline: Mapped[bool] = mapped_column(Boolean, default=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    point: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    layers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    repeat_index: Mapped[int] = mapped_column(Integer)
    is_warmup: Mapped[bool] = mapped_column(Boolean, default=False)
    block: Mapped[int] = mapped_column(Integer, default=0)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    signal: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    stderr_tail: Mapped[str | None] = mapped_column(Text, nullable=True)
    output_dir: Mapped[str] = mapped_column(Text, default="")
    placement: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    caveats: Mapped[list[str]] = mapped_column(JSON, default=list)

    run: Mapped[RunRow] = relationship(back_populates="trials")
    metrics: Mapped[list[MetricRow]] = relationship(back_populates="trial", cascade="all, delete-orphan")


class MetricRow(Base):
    """One metric of one trial; ``value`` is the trial's value (the mean when it has several)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_trial", "trial_id"), Index("ix_metrics_name", "name"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(UNIT_MAX_CHARS), default="")
    direction: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(32), default="workload")
    n_values: Mapped[int] = mapped_column(Integer, default=1)

    trial: Mapped[TrialRow] = relationship(back_populates="metrics")


class MetricValueRow(Base):
    """The individual values of a metric when a trial yields several (epochs, windows, iterations)."""

    __tablename__ = "metric_values"
    __table_args__ = (Index("ix_metric_values_trial", "trial_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    seq: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)


class EnvironmentRow(Base):
    __tablename__ = "environment"
    __table_args__ = (UniqueConstraint("run_id", "key", name="uq_env_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)


class FindingRow(Base):
    """A doctor finding, attached to a run when it was made for one (``doctor --for RUN``)."""

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=True)
    check_id: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text)
    evidence: Mapped[str] = mapped_column(Text, default="")
    fix: Mapped[str] = mapped_column(Text, default="")
    lesson: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    """Something that happened at a moment during a run: an injected fault, an interruption, a resume."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_run", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), nullable=True)
    time: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
