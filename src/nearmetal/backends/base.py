"""What a backend returns for one trial: outputs of its processes, how they ended, where they ran."""

from __future__ import annotations

import signal as signal_mod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nearmetal.metrics import Metric
from nearmetal.workloads.base import ProcessSpec

STDERR_TAIL_BYTES = 4000


@dataclass
class ProcessResult:
    role: str
    label: str
    argv: list[str]
    stdout_path: Path
    stderr_path: Path
    returncode: int | None = None
    timed_out: bool = False
    started_at: float | None = None
    ended_at: float | None = None
    ready_at: float | None = None  # a background process: when its readiness check passed

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal_mod.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"

    def read_stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def read_stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stderr_tail(self, limit: int = STDERR_TAIL_BYTES) -> str:
        text = self.read_stderr()
        return text[-limit:]


@dataclass
class Execution:
    """The outcome of running a trial's processes."""

    main: ProcessResult
    others: list[ProcessResult] = field(default_factory=list)
    wall_s: float = 0.0
    metrics: list[Metric] = field(default_factory=list)  # telemetry
    placement: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a problem outside the main process (a background process died early)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.main.timed_out and self.main.returncode == 0


class Backend(Protocol):
    name: str

    def execute(self, processes: list[ProcessSpec], trial_dir: Path, timeout_s: float) -> Execution: ...
