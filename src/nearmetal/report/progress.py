"""Progress of a run on the terminal (rich), or one JSON line per trial for scripts and CI logs.

The ETA comes from measured trial times, per cell: a trial under a 0.8-CPU quota takes twice as long as a
bare one, and interleaved order runs every cell equally often, so the estimate per remaining trial is the
mean of the cells' mean durations (the run's mean stands in for cells not measured yet). Durations are
taken from ``trial_started`` to ``trial_finished``, so layer set-up and teardown count too.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from nearmetal.plan import Trial
from nearmetal.run.records import TrialRecord
from nearmetal.textsafe import SafeConsole, plain, strip_controls


class EtaEstimator:
    """Seconds left in a run from the durations of the trials so far."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._per_cell: dict[str, list[float]] = {}
        self._started: float | None = None

    def trial_started(self, now: float | None = None) -> None:
        self._started = time.monotonic() if now is None else now

    def trial_finished(self, cell: str, seconds: float | None = None, now: float | None = None) -> float:
        """Record a finished trial; its duration is measured since ``trial_started`` unless given."""
        now = time.monotonic() if now is None else now
        if self._started is not None:
            seconds = now - self._started
        self._started = None
        duration = max(0.0, seconds or 0.0)
        self._per_cell.setdefault(cell, []).append(duration)
        self.done += 1
        return duration

    def per_trial(self) -> float | None:
        if not self._per_cell:
            return None
        means = [sum(v) / len(v) for v in self._per_cell.values()]
        return sum(means) / len(means)

    def remaining(self) -> float | None:
        """Seconds left, or None before the first trial has ended."""
        per_trial = self.per_trial()
        if per_trial is None:
            return None
        return max(0, self.total - self.done) * per_trial


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA –"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"ETA {hours}:{minutes:02d}:{secs:02d}" if hours else f"ETA {minutes}:{secs:02d}"


class EtaColumn(ProgressColumn):
    """The run's ETA from measured trial times (rich's own column extrapolates the bar's speed)."""

    def render(self, task: Any) -> Text:
        return Text(format_eta(task.fields.get("eta")), style="progress.remaining")


class RichProgress:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or SafeConsole(stderr=True)
        self.failures = 0
        self.eta = EtaEstimator(0)
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, total: int, plan_name: str, run_id: str) -> None:
        self.eta = EtaEstimator(total)
        self.console.print(
            f"[bold]nearmetal[/bold] run [cyan]{plain(run_id)}[/cyan]: {plain(plan_name)}, {total} trials",
            highlight=False,
        )
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),  # a cell key is data
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            EtaColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("starting", total=total, failed="", eta=None)

    def set_total(self, total: int) -> None:
        """Adaptive repeats added a block: the bar grows and the ETA counts the new trials."""
        self.eta.total = total
        if self._progress is not None:
            self._progress.update(self._task, total=total, eta=self.eta.remaining())

    def trial_started(self, trial: Trial, index: int) -> None:
        self.eta.trial_started()
        if self._progress is not None:
            label = trial.cell.key + (" (warm-up)" if trial.warmup else f" #{trial.index}")
            self._progress.update(self._task, description=strip_controls(label[:60]))

    def trial_finished(self, record: TrialRecord, index: int) -> None:
        self.eta.trial_finished(record.trial.cell.key, record.wall_s)
        if record.status != "ok":
            self.failures += 1
            reason = (record.error or record.status).splitlines()[0][:160]
            self.console.print(
                f"[yellow]trial {plain(record.trial.cell.key)} #{record.trial.index} {plain(record.status)}"
                f"[/yellow]: {plain(reason)}",
                highlight=False,
                markup=True,
            )
        if self._progress is not None:
            self._progress.update(
                self._task,
                advance=1,
                failed=f"[red]{self.failures} failed[/red]" if self.failures else "",
                eta=self.eta.remaining(),
            )

    def note(self, text: str) -> None:
        """A warning before the trials start (the contention preflight of a CPU study)."""
        self.console.print(f"[yellow]warning[/yellow]: {plain(text)}", highlight=False, markup=True)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class PlainProgress:
    """Without a terminal (a pipe, a CI log): one plain line per trial as it ends, so a log shows the run as
    it goes (``[12/48] lammps/limit-0.8 r3 ok 12.1 s``), no bar and no control characters."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.eta = EtaEstimator(0)
        self.failures = 0

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, total: int, plan_name: str, run_id: str) -> None:
        self.eta = EtaEstimator(total)
        self._line(f"nearmetal run {run_id}: {plan_name}, {total} trials")

    def set_total(self, total: int) -> None:
        self.eta.total = total
        self._line(f"adaptive repeats: {total} trials now")

    def trial_started(self, trial: Trial, index: int) -> None:
        self.eta.trial_started()

    def trial_finished(self, record: TrialRecord, index: int) -> None:
        self.eta.trial_finished(record.trial.cell.key, record.wall_s)
        trial = record.trial
        which = "warm-up" if trial.warmup else f"r{trial.index}"
        line = f"[{self.eta.done}/{self.eta.total}] {trial.cell.key} {which} {record.status} {record.wall_s:.1f} s"
        if record.status != "ok":
            self.failures += 1
            line += ": " + (record.error or record.status).splitlines()[0][:160]
        self._line(line)

    def note(self, text: str) -> None:
        self._line(f"warning: {text}")

    def finish(self) -> None:
        failed = f", {self.failures} failed" if self.failures else ""
        self._line(f"{self.eta.done} trials done{failed}")


class JsonProgress:
    """One JSON object per line on stderr: start, each trial (with done/total, failures and ETA), finish."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.t0 = time.time()
        self.eta = EtaEstimator(0)
        self.failures = 0

    def _emit(self, **fields: object) -> None:
        self.stream.write(json.dumps({"t": round(time.time() - self.t0, 3), **fields}) + "\n")
        self.stream.flush()

    def start(self, total: int, plan_name: str, run_id: str) -> None:
        self.eta = EtaEstimator(total)
        self._emit(event="start", run_id=run_id, plan=plan_name, trials=total)

    def set_total(self, total: int) -> None:
        self.eta.total = total
        self._emit(event="total", trials=total)

    def trial_started(self, trial: Trial, index: int) -> None:
        self.eta.trial_started()

    def trial_finished(self, record: TrialRecord, index: int) -> None:
        self.eta.trial_finished(record.trial.cell.key, record.wall_s)
        if record.status != "ok":
            self.failures += 1
        remaining = self.eta.remaining()
        self._emit(
            event="trial",
            index=index,
            done=self.eta.done,
            total=self.eta.total,
            failed=self.failures,
            cell=record.trial.cell.key,
            repeat=record.trial.index,
            warmup=record.trial.warmup,
            status=record.status,
            wall_s=round(record.wall_s, 4),
            eta_s=None if remaining is None else round(remaining, 1),
            error=record.error,
        )

    def note(self, text: str) -> None:
        self._emit(event="warning", text=text)

    def finish(self) -> None:
        self._emit(event="finish", done=self.eta.done, failed=self.failures)
