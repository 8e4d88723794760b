"""Availability and recovery tables of the resilience studies, with intervals over repeats, and the data the
timeline figures draw (``report/figures/resilience.py``). The studies show them by workload kind:
``report/studies/failover.py`` (``http-load``) and ``report/studies/severed_mount.py`` (``io-probe``).

A run has this shape when it has cells of the ``http-load`` / ``io-probe`` workloads. Per cell: availability
(whole trial and during the fault), time to detect, recover and reach steady state, requests lost — each the
mean over repeats with its BCa bootstrap interval (``analysis.bootstrap.statistic_intervals``) — how many
repeats recovered, the load balancer's own detection (its health checks marking the server DOWN, from its
log), errors by kind, and p99 latency before / during / after. doctor's findings recorded during a fault
(``kill-fuse`` runs doctor's severed-mount check on the mount) are shown beside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nearmetal.layers import layer_kinds
from nearmetal.report.tables import Table, fmt_number

if TYPE_CHECKING:
    from nearmetal.analysis import CellInfo
    from nearmetal.api import Results

KINDS = ("http-load", "io-probe")
INTERVAL_METRICS = (
    ("availability_pct", "availability %"),
    ("availability_during_pct", "during fault %"),
    ("detect_s", "detect s"),
    ("recover_s", "recover s"),
    ("steady_s", "steady s"),
    ("requests_lost", "lost"),
)
LATENCY_METRICS = (
    ("latency_before_p99_us", "before"),
    ("latency_during_p99_us", "during"),
    ("latency_after_p99_us", "after"),
)


@dataclass
class Estimate:
    mean: float
    low: float | None
    high: float | None
    n: int

    def text(self, digits: int = 3) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "–"
        if self.low is None or self.high is None or self.low == self.high:
            return fmt_number(self.mean, digits)  # one trial, or every repeat gave the same value
        return f"{fmt_number(self.mean, digits)} [{fmt_number(self.low, digits)}, {fmt_number(self.high, digits)}]"


@dataclass
class TrialFaults:
    trial_id: int
    faults: list[dict[str, Any]] = field(default_factory=list)  # fault-injected events
    healed: list[dict[str, Any]] = field(default_factory=list)
    lb: list[dict[str, Any]] = field(default_factory=list)  # lb-server-down / -up
    doctor: list[dict[str, Any]] = field(default_factory=list)
    timeline: dict[str, Any] | None = None
    other: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CellResilience:
    cell: CellInfo
    n: int
    estimates: dict[str, Estimate]
    recovered: tuple[int, int] | None  # (repeats that recovered, repeats with a fault)
    lb_detect: Estimate | None
    errors: dict[str, float]  # kind -> mean per trial (absent = 0)
    latency_ms: dict[str, float | None]
    fault: str
    trials: list[TrialFaults]


def _by_trial(results: Results) -> dict[int, TrialFaults]:
    out: dict[int, TrialFaults] = {}
    for event in results.events:
        trial_id = event.get("trial_id")
        if trial_id is None:
            continue
        entry = out.setdefault(trial_id, TrialFaults(trial_id))
        kind = event.get("kind")
        record = {"time": event["time"], **(event.get("detail") or {})}
        if kind == "fault-injected":
            entry.faults.append(record)
        elif kind == "fault-healed":
            entry.healed.append(record)
        elif kind in ("lb-server-down", "lb-server-up"):
            entry.lb.append({"kind": kind, **record})
        elif kind == "doctor-finding":
            entry.doctor.append(record)
        elif kind == "timeline":
            entry.timeline = record
        else:
            entry.other.append({"kind": kind, **record})
    return out


def interval_of(values: np.ndarray, results: Results, seed_offset: int = 0) -> Estimate:
    from nearmetal.analysis.bootstrap import Sample, statistic_intervals

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Estimate(float("nan"), None, None, 0)
    interval = statistic_intervals(
        [Sample.of(v)],
        confidence=results.confidence,
        resamples=min(results.resamples, 4999),
        seed=(results.config.seed or 0) + seed_offset,
    )[0]
    return Estimate(float(v.mean()), interval.low, interval.high, int(v.size))


def _lb_detect_times(trials: list[TrialFaults]) -> list[float]:
    """Per trial: from the first injection to the balancer marking a server DOWN after it."""
    out = []
    for t in trials:
        if not t.faults:
            continue
        inject = min(f["time"] for f in t.faults)
        downs = [e["time"] for e in t.lb if e["kind"] == "lb-server-down" and e["time"] >= inject]
        if downs:
            out.append(min(downs) - inject)
    return out


def describe_fault(layers: list[dict[str, Any]]) -> str:
    parts = []
    resilience = layer_kinds("resilience")  # described below; any other layer by its kind
    for layer in layers:
        if layer.get("layer") not in resilience:
            parts.append(str(layer.get("layer")))
        if layer.get("layer") == "clusters":
            checks = "checks" if layer.get("health_checks", True) else "no checks"
            parts.append(f"{layer.get('balancer', 'haproxy')} ({checks})")
        if layer.get("layer") == "fault":
            text = f"{layer['action']} {layer.get('target') or 'mount'} at {layer.get('at_s', 5):g}s"
            if layer.get("heal") == "watchdog":
                text += f", watchdog every {layer.get('scan_interval_s', 1):g}s"
            elif layer.get("heal_after_s") is not None:
                text += f", healed after {layer['heal_after_s']:g}s"
            parts.append(text)
    return "; ".join(parts) or "–"


def resilience_data(results: Results) -> dict[str, list[CellResilience]]:
    """workload -> one entry per cell (plan order)."""
    cells = [c for c in results.cells if c.kind in KINDS]
    if not cells:
        return {}
    events = _by_trial(results)
    trials_by_cell: dict[str, list[Any]] = {}
    layers_by_cell: dict[str, list[dict[str, Any]]] = {}
    for trial in results.trials:
        layers_by_cell.setdefault(trial.cell_id, trial.layers or [])
        if trial.status == "ok" and not trial.is_warmup:
            trials_by_cell.setdefault(trial.cell_id, []).append(trial)
    out: dict[str, list[CellResilience]] = {}
    for index, cell in enumerate(cells):
        ok_trials = trials_by_cell.get(cell.cell_id, [])
        faults = [events.get(t.id, TrialFaults(t.id)) for t in ok_trials]
        estimates = {}
        for offset, (metric, _) in enumerate(INTERVAL_METRICS):
            cm = results.analysis.metric(cell.cell_id, metric)
            if cm is not None:
                estimates[metric] = interval_of(cm.values, results, seed_offset=index * 31 + offset)
        rec = results.analysis.metric(cell.cell_id, "recovered")
        recovered = (int(np.nansum(rec.values)), int(rec.values.size)) if rec is not None else None
        lb_times = _lb_detect_times(faults)
        lb_detect = (
            interval_of(np.array(lb_times), results, seed_offset=index * 31 + 17) if lb_times else None
        )
        errors: dict[str, float] = {}
        n = len(ok_trials)
        for t in faults:
            for kind, count in ((t.timeline or {}).get("errors_by_kind") or {}).items():
                errors[kind] = errors.get(kind, 0.0) + count / max(n, 1)
        latency = {}
        for metric, label in LATENCY_METRICS:
            cm = results.analysis.metric(cell.cell_id, metric)
            latency[label] = (
                float(np.nanmean(cm.values)) / 1000 if cm is not None and cm.values.size else None
            )
        out.setdefault(cell.workload, []).append(
            CellResilience(
                cell=cell,
                n=n,
                estimates=estimates,
                recovered=recovered,
                lb_detect=lb_detect,
                errors=errors,
                latency_ms=latency,
                fault=describe_fault(layers_by_cell.get(cell.cell_id, [])),
                trials=faults,
            )
        )
    return out


def availability_tables(results: Results, kind: str) -> list[Table]:
    """The tables of the run's workloads of one kind (``http-load`` or ``io-probe``): availability and
    recovery per cell, and doctor's findings during the fault."""
    if not any(c.kind == kind for c in results.cells):
        return []
    # every resilience cell of the run, as before the studies were split: each cell's bootstrap seed is its
    # place among them
    data = resilience_data(results)
    out: list[Table] = []
    conf = f"{results.confidence:.0%}"
    for workload, rows in data.items():
        if rows[0].cell.kind != kind:
            continue
        has_lb = any(r.lb_detect is not None for r in rows)
        headers = ["variant", "set-up and fault", "n"] + [label for _, label in INTERVAL_METRICS]
        headers += ["recovered"] + (["LB marked down s"] if has_lb else [])
        headers += ["errors by kind (per trial)", "p99 ms before / during / after"]
        body = []
        for r in rows:
            label = r.cell.variant + (f" ({r.cell.point_label})" if r.cell.point_label else "")
            row = [label, r.fault, str(r.n)]
            row += [r.estimates[m].text() if m in r.estimates else "–" for m, _ in INTERVAL_METRICS]
            row.append(f"{r.recovered[0]}/{r.recovered[1]}" if r.recovered else "–")
            if has_lb:
                row.append(r.lb_detect.text() if r.lb_detect else "–")
            row.append(", ".join(f"{k} {fmt_number(v, 3)}" for k, v in sorted(r.errors.items())) or "none")
            row.append(" / ".join(fmt_number(r.latency_ms[p], 3) for p in ("before", "during", "after")))
            body.append(row)
        notes = [
            f"mean over repeats [{conf} BCa bootstrap interval]; times are from the injection: detect = the first "
            "failed request is sent (0 when it was in flight at the injection), recover = the first success "
            "that starts an error-free stretch, steady = the first window as good as before the fault (every "
            "backend serving again once healed); lost = what the pre-fault rate would have completed until "
            "steady state, minus the successes",
        ]
        if has_lb:
            notes.append("LB marked down: from the injection to the load balancer's health checks marking the "
                         "server DOWN (its own log)")  # fmt: skip
        out.append(
            Table(
                f"Availability and recovery: {workload}",
                headers,
                body,
                notes,
                significance=[None] * len(body),
                workload=workload,
            )
        )
        findings = [(r, f) for r in rows for t in r.trials[:1] for f in t.doctor]
        if findings:
            out.append(
                Table(
                    f"doctor during the fault: {workload}",
                    ["variant", "check", "severity", "finding", "checked after s", "fix"],
                    [
                        [
                            r.cell.variant,
                            str(f.get("check_id", "")),
                            str(f.get("severity", "")),
                            str(f.get("title", "")),
                            fmt_number(f.get("checked_after_s"), 3),
                            str(f.get("fix", "")),
                        ]
                        for r, f in findings
                    ],
                    ["doctor's check run on the mount right after its FUSE daemon was killed (first repeat)"],
                    workload=workload,
                    significance=[None] * len(findings),
                )
            )
    return out
