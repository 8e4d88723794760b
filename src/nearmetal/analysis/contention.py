"""Was a cell's CPU shared with work outside the run? Pure functions over each trial's noise evidence (the
``outside`` record the local backend stores in a trial's placement, see ``telemetry.contention`` and
``telemetry.schedwait``).

A trial is *contended* when its own threads waited for a CPU more than ``max_cpu_wait_pct`` (default 20)
percent of their runnable time (``cpu_wait_pct``: schedstat wait / (wait + run), the trial's own quota
throttling excluded). That is interference measured where it acts: a neighbour that used CPU the trial did
not want does not count, one that kept the trial off the CPU does, however little it used in total. Why 20%:
on this 2-CPU host (2026-12-07, other work at load 12–19) the cpu-quota study's trials waited 0–13% of their
runnable time under the shield (cell means 0.3–9%; part of it the trial's own threads queueing behind each
other, e.g. two MPI ranks a quota crowds onto one CPU) and 50–90% without it beside ``stress-ng --cpu 2``; 20%
sits between the two with room on both sides, and a trial delayed by a fifth cannot tell the layer's cost
(the smallest loss the CPU studies look for is ~15%) from the neighbour's.
Outside CPU use (processes outside the run plus the hypervisor's steal, in % of one CPU) stays as the
explanation ("waited 38% of its runnable time; stress-ng-cpu 1.2 CPUs"), and is the rule only for records
without wait evidence (before it existed, or where /proc has no schedstat): contended above
``max_outside_cpu_pct`` (default 25) percent of one CPU.

A cell is contended when at least a fifth of its measured trials were (any one of fewer than five). With the
guard on (``analysis.contention_guard: true``, set by the CPU studies), a comparison in which the variant or
its baseline is contended gets the verdict ``CONTENDED`` instead of a finding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_OUTSIDE_CPU_PCT = 25.0
DEFAULT_MAX_CPU_WAIT_PCT = 20.0
CONTENDED_SHARE = 0.2
CONTENDED = "contended — not interpretable"


@dataclass(frozen=True)
class TrialNoise:
    """One trial's evidence: outside CPU (% of one CPU), steal (% of the host's CPU time), load average, the
    busiest outside programs as (name, processes, CPU seconds), and the share of its runnable time its threads
    waited for a CPU (``cpu_wait_pct``, NaN when not measured)."""

    outside_cpu_pct: float
    steal_pct: float = 0.0
    loadavg: float = math.nan
    cpus: int = 1
    top: tuple[tuple[str, int, float], ...] = ()
    cpu_wait_pct: float = math.nan

    @classmethod
    def from_placement(cls, placement: Mapping[str, Any] | None) -> TrialNoise | None:
        outside = (placement or {}).get("outside")
        if not isinstance(outside, Mapping):
            return None
        if outside.get("outside_cpu_pct") is None and outside.get("cpu_wait_pct") is None:
            return None
        top = tuple(
            (str(t.get("name", "?")), int(t.get("processes", 1)), float(t.get("cpu_s", 0.0)))
            for t in outside.get("top") or ()
            if isinstance(t, Mapping)
        )
        return cls(
            _num(outside.get("outside_cpu_pct"), math.nan),
            _num(outside.get("steal_pct"), 0.0),
            _num(outside.get("loadavg_1m"), math.nan),
            int(outside.get("cpus") or 1),
            top,
            _num(outside.get("cpu_wait_pct"), math.nan),
        )

    @property
    def has_wait(self) -> bool:
        return math.isfinite(self.cpu_wait_pct)

    @property
    def taken_pct(self) -> float:
        """Outside processes plus steal, in % of one CPU (NaN without outside evidence)."""
        steal = self.steal_pct if math.isfinite(self.steal_pct) else 0.0
        return self.outside_cpu_pct + steal * self.cpus


def _num(value: Any, default: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def trial_contended(
    noise: TrialNoise,
    max_outside_cpu_pct: float = DEFAULT_MAX_OUTSIDE_CPU_PCT,
    max_cpu_wait_pct: float = DEFAULT_MAX_CPU_WAIT_PCT,
) -> bool:
    """By what the trial waited when that was measured; by what others used otherwise."""
    if noise.has_wait:
        return noise.cpu_wait_pct > max_cpu_wait_pct
    return noise.taken_pct > max_outside_cpu_pct


@dataclass(frozen=True)
class CellContention:
    trials: int  # trials with evidence
    contended: int  # of which above the threshold
    mean_outside_pct: float
    max_outside_pct: float
    mean_steal_pct: float
    mean_loadavg: float
    threshold: float
    # busiest outside programs over the cell's trials: (name, CPU seconds), largest first
    top: list[tuple[str, float]] = field(default_factory=list)
    # the trials' own wait for a CPU (% of runnable time), over the trials that measured it (NaN: none did)
    mean_wait_pct: float = math.nan
    max_wait_pct: float = math.nan
    wait_threshold: float = DEFAULT_MAX_CPU_WAIT_PCT
    # wall seconds of the cell's trials with outside evidence (to turn CPU seconds into CPUs)
    seconds: float = math.nan

    @property
    def is_contended(self) -> bool:
        if self.trials == 0 or self.contended == 0:
            return False
        return self.trials < 5 or self.contended / self.trials >= CONTENDED_SHARE

    def names(self, limit: int = 3) -> str:
        if math.isfinite(self.seconds) and self.seconds > 0:
            shown = [f"{name} {cpu_s / self.seconds:.1f} CPUs" for name, cpu_s in self.top[:limit]]
        else:
            shown = [f"{name} {cpu_s:.1f} s" for name, cpu_s in self.top[:limit]]
        return ", ".join(shown) or "no process named"

    @property
    def by_wait(self) -> bool:
        return math.isfinite(self.mean_wait_pct)

    def describe(self) -> str:
        """'3 of 5 trials contended: they waited 38% of their runnable time for a CPU on average (max 45%;
        threshold 10%); outside processes used 120% of one CPU (stress-ng-cpu 1.2 CPUs, …), steal 0.1%, load
        average 4.1'. Without wait evidence: by outside CPU, against its threshold."""
        outside = (
            f"outside processes used {self.mean_outside_pct:.0f}% of one CPU on average"
            f" (max {self.max_outside_pct:.0f}%; {self.names()}), steal {self.mean_steal_pct:.1f}%,"
            f" load average {self.mean_loadavg:.1f}"
            if math.isfinite(self.mean_outside_pct)
            else "no outside-CPU evidence (trials shorter than the sampler's first scan)"
        )
        if self.by_wait:
            return (
                f"{self.contended} of {self.trials} trials contended: they waited {self.mean_wait_pct:.0f}% of"
                f" their runnable time for a CPU on average (max {self.max_wait_pct:.0f}%; threshold"
                f" {self.wait_threshold:g}%); {outside}"
            )
        return (
            f"{self.contended} of {self.trials} trials contended: {outside}"
            f" (threshold {self.threshold:g}% of one CPU)"
        )


def assess_cell(
    noises: Iterable[TrialNoise | None],
    max_outside_cpu_pct: float = DEFAULT_MAX_OUTSIDE_CPU_PCT,
    max_cpu_wait_pct: float = DEFAULT_MAX_CPU_WAIT_PCT,
    seconds: float = math.nan,
) -> CellContention:
    """The contention of one cell from its measured trials' evidence (trials without evidence are left out).
    ``seconds``: the trials' summed wall time, to name the busiest outside programs in CPUs."""
    got = [n for n in noises if n is not None and (math.isfinite(n.outside_cpu_pct) or n.has_wait)]
    waits = [n.cpu_wait_pct for n in got if n.has_wait]
    outs = [n.outside_cpu_pct for n in got if math.isfinite(n.outside_cpu_pct)]
    by_name: dict[str, float] = {}
    for n in got:
        for name, _, cpu_s in n.top:
            by_name[name] = by_name.get(name, 0.0) + cpu_s
    loads = [n.loadavg for n in got if math.isfinite(n.loadavg)]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    return CellContention(
        trials=len(got),
        contended=sum(trial_contended(n, max_outside_cpu_pct, max_cpu_wait_pct) for n in got),
        mean_outside_pct=mean(outs),
        max_outside_pct=max(outs, default=math.nan),
        mean_steal_pct=mean([n.steal_pct for n in got if math.isfinite(n.steal_pct)]),
        mean_loadavg=mean(loads),
        threshold=max_outside_cpu_pct,
        top=sorted(by_name.items(), key=lambda kv: -kv[1]),
        mean_wait_pct=mean(waits),
        max_wait_pct=max(waits, default=math.nan),
        wait_threshold=max_cpu_wait_pct,
        seconds=seconds,
    )


def contention_verdict(
    cell: CellContention | None, baseline: CellContention | None, guard: bool
) -> str | None:
    """``CONTENDED`` when the guard is on and the cell or its baseline was contended; else None (the
    interval's own verdict stands)."""
    if not guard:
        return None
    if any(c is not None and c.is_contended for c in (cell, baseline)):
        return CONTENDED
    return None


def contention_warning(cell_key: str, cell: CellContention, guard: bool) -> str | None:
    """The line a table prints under a contended cell (None when it was not)."""
    if not cell.is_contended:
        return None
    consequence = (
        "its comparisons are not interpretable (run with --shield, stop those programs, or run on an idle host)"
        if guard
        else "its loss may be noise, not the layer"
    )
    return f"{cell_key}: {cell.describe()}; {consequence}"
