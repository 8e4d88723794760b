"""Progress of a run on the terminal (rich), or one JSON line per trial for scripts and CI logs."""

from __future__ import annotations

import json
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from nearmetal.plan import Trial
from nearmetal.runner import TrialRecord


class RichProgress:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.failures = 0
        self._progress: Progress | None = None
        self._task = None

    def start(self, total: int, plan_name: str, run_id: str) -> None:
        self.console.print(
            f"[bold]nearmetal[/bold] run [cyan]{run_id}[/cyan]: {plan_name}, {total} trials", highlight=False
        )
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("starting", total=total, failed="")

    def trial_started(self, trial: Trial, index: int) -> None:
        if self._progress is not None:
            label = trial.cell.key + (" (warm-up)" if trial.warmup else f" #{trial.index}")
            self._progress.update(self._task, description=label[:60])

    def trial_finished(self, record: TrialRecord, index: int) -> None:
        if record.status != "ok":
            self.failures += 1
            reason = (record.error or record.status).splitlines()[0][:160]
            self.console.print(
                f"[yellow]trial {record.trial.cell.key} #{record.trial.index} {record.status}[/yellow]:"
                f" {reason}",
                highlight=False,
                markup=True,
            )
        if self._progress is not None:
            self._progress.update(
                self._task, advance=1, failed=f"[red]{self.failures} failed[/red]" if self.failures else ""
            )

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class JsonProgress:
    """One JSON object per line on stderr: start, each trial, finish."""

    def __init__(self, stream=None) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream or sys.stderr
        self.t0 = time.time()

    def _emit(self, **fields: object) -> None:
        self.stream.write(json.dumps({"t": round(time.time() - self.t0, 3), **fields}) + "\n")
        self.stream.flush()

    def start(self, total: int, plan_name: str, run_id: str) -> None:
        self._emit(event="start", run_id=run_id, plan=plan_name, trials=total)

    def trial_started(self, trial: Trial, index: int) -> None:
        pass

    def trial_finished(self, record: TrialRecord, index: int) -> None:
        self._emit(
            event="trial",
            index=index,
            cell=record.trial.cell.key,
            repeat=record.trial.index,
            warmup=record.trial.warmup,
            status=record.status,
            wall_s=round(record.wall_s, 4),
            error=record.error,
        )

    def finish(self) -> None:
        self._emit(event="finish")
