"""What a run returns, what it reports while it runs, and how it says it was interrupted."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from nearmetal.metrics import Metric
from nearmetal.plan import Trial

DEFAULT_WORKDIR = "nearmetal-runs"


class RunInterrupted(Exception):
    """The run was stopped by Ctrl-C or SIGTERM; every finished trial is stored."""

    def __init__(self, run_id: str, signal_name: str) -> None:
        super().__init__(f"run {run_id} interrupted by {signal_name}; finished trials are stored")
        self.run_id = run_id
        self.signal_name = signal_name


@dataclass
class TrialRecord:
    trial: Trial
    status: str  # ok | failed | timeout | invalid | error
    wall_s: float
    metrics: list[Metric]
    error: str | None = None
    trial_id: int | None = None
    # stored by an earlier attempt of a resumed run, not run again by this process
    resumed: bool = False


class Progress(Protocol):
    """What the runner tells whoever shows a run's progress (``report.progress``: a bar, plain lines, JSON
    lines); exactly the calls ``run.runner`` makes. ``NullProgress`` is a base that ignores them all."""

    def start(self, total: int, plan_name: str, run_id: str) -> None: ...
    def set_total(self, total: int) -> None: ...
    def trial_started(self, trial: Trial, index: int) -> None: ...
    def trial_finished(self, record: TrialRecord, index: int) -> None: ...
    def note(self, text: str) -> None: ...
    def finish(self) -> None: ...


class NullProgress:
    def start(self, total: int, plan_name: str, run_id: str) -> None:
        pass

    def set_total(self, total: int) -> None:
        """Adaptive repeats added a block: the run has this many trials now."""

    def note(self, text: str) -> None:
        """A line about the run (the contention preflight's finding)."""

    def trial_started(self, trial: Trial, index: int) -> None:
        pass

    def trial_finished(self, record: TrialRecord, index: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class RunResult:
    run_id: str
    db_url: str
    records: list[TrialRecord] = field(default_factory=list)
    status: str = "finished"
    workdir: Path | None = None


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
