"""Was a cell's CPU shared with work outside the run? Pure functions over each trial's noise evidence (the
``outside`` record the local backend stores in a trial's placement, see ``telemetry.contention``).

A trial is *contended* when processes outside the run plus the hypervisor's steal took more than
``max_outside_cpu_pct`` (default 25) percent of one CPU on average while it ran. Why 25%: an idle host's own
daemons use 1–3% of one CPU here; one busy neighbour uses 100%. A quarter of a CPU is an eighth of this 2-CPU
host's capacity and, for programs whose workers synchronise (particles, DDP, MPI), every preempted worker
stalls the others, so the bias it causes is of the size of the smallest effects the CPU studies look for
(a 1.6-CPU quota on 2 CPUs: 20%). Below it, interleaved blocks spread what remains evenly over the cells.

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
CONTENDED_SHARE = 0.2
CONTENDED = "contended — not interpretable"


@dataclass(frozen=True)
class TrialNoise:
    """One trial's evidence: outside CPU (% of one CPU), steal (% of the host's CPU time), load average and
    the busiest outside programs as (name, processes, CPU seconds)."""

    outside_cpu_pct: float
    steal_pct: float = 0.0
    loadavg: float = math.nan
    cpus: int = 1
    top: tuple[tuple[str, int, float], ...] = ()

    @classmethod
    def from_placement(cls, placement: Mapping[str, Any] | None) -> TrialNoise | None:
        outside = (placement or {}).get("outside")
        if not isinstance(outside, Mapping) or outside.get("outside_cpu_pct") is None:
            return None
        top = tuple(
            (str(t.get("name", "?")), int(t.get("processes", 1)), float(t.get("cpu_s", 0.0)))
            for t in outside.get("top") or ()
            if isinstance(t, Mapping)
        )
        return cls(
            float(outside["outside_cpu_pct"]),
            _num(outside.get("steal_pct"), 0.0),
            _num(outside.get("loadavg_1m"), math.nan),
            int(outside.get("cpus") or 1),
            top,
        )

    @property
    def taken_pct(self) -> float:
        """Outside processes plus steal, in % of one CPU."""
        steal = self.steal_pct if math.isfinite(self.steal_pct) else 0.0
        return self.outside_cpu_pct + steal * self.cpus


def _num(value: Any, default: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def trial_contended(noise: TrialNoise, max_outside_cpu_pct: float = DEFAULT_MAX_OUTSIDE_CPU_PCT) -> bool:
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

    @property
    def is_contended(self) -> bool:
        if self.trials == 0 or self.contended == 0:
            return False
        return self.trials < 5 or self.contended / self.trials >= CONTENDED_SHARE

    def names(self, limit: int = 3) -> str:
        return ", ".join(f"{name} {cpu_s:.1f} s" for name, cpu_s in self.top[:limit]) or "no process named"

    def describe(self) -> str:
        """'3 of 5 trials contended: outside processes used 180% of one CPU on average (max 195%; stress-ng-cpu
        41.2 s, …), steal 0.1%, load average 4.1 (threshold 25%)'."""
        return (
            f"{self.contended} of {self.trials} trials contended: outside processes used"
            f" {self.mean_outside_pct:.0f}% of one CPU on average (max {self.max_outside_pct:.0f}%;"
            f" {self.names()}), steal {self.mean_steal_pct:.1f}%, load average {self.mean_loadavg:.1f}"
            f" (threshold {self.threshold:g}% of one CPU)"
        )


def assess_cell(
    noises: Iterable[TrialNoise | None], max_outside_cpu_pct: float = DEFAULT_MAX_OUTSIDE_CPU_PCT
) -> CellContention:
    """The contention of one cell from its measured trials' evidence (trials without evidence are left out)."""
    got = [n for n in noises if n is not None and math.isfinite(n.outside_cpu_pct)]
    by_name: dict[str, float] = {}
    for n in got:
        for name, _, cpu_s in n.top:
            by_name[name] = by_name.get(name, 0.0) + cpu_s
    loads = [n.loadavg for n in got if math.isfinite(n.loadavg)]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    return CellContention(
        trials=len(got),
        contended=sum(trial_contended(n, max_outside_cpu_pct) for n in got),
        mean_outside_pct=mean([n.outside_cpu_pct for n in got]),
        max_outside_pct=max((n.outside_cpu_pct for n in got), default=math.nan),
        mean_steal_pct=mean([n.steal_pct for n in got if math.isfinite(n.steal_pct)]),
        mean_loadavg=mean(loads),
        threshold=max_outside_cpu_pct,
        top=sorted(by_name.items(), key=lambda kv: -kv[1]),
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
        "its comparisons are not interpretable (stop those programs, or run on an idle host)"
        if guard
        else "its loss may be noise, not the layer"
    )
    return f"{cell_key}: {cell.describe()}; {consequence}"
