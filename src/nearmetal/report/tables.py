"""The tables every report format shows, built once from a run's results."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nearmetal.analysis import Comparison
from nearmetal.api import Results

# extra columns shown beside the primary metric when a run has them: (metric, header)
CONTEXT_COLUMNS: list[tuple[str, str]] = [
    ("lammps_cpu_use_pct", "CPU use %"),
    ("cpu_util_pct", "CPU util %"),
    ("throttled_pct", "throttled %"),
]


def fmt_number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.{max(0, digits - 1 - int(math.log10(magnitude)))}f}"
    if magnitude == 0:
        return "0"
    return f"{value:.{digits}g}"


def fmt_loss(comp: Comparison | None) -> str:
    if comp is None:
        return "baseline"
    est = comp.loss
    if est.low is None or est.high is None:
        return f"{est.loss * 100:+.1f}% [n too small]"
    return f"{est.loss * 100:+.1f}% [{est.low * 100:+.1f}, {est.high * 100:+.1f}]"


def short_verdict(comp: Comparison) -> str:
    """The table's wording; a difference is significant only when its interval excludes 0."""
    sig = comp.loss.significant
    if sig is None:
        return "too few trials for an interval"
    if not sig:
        return "no significant difference"
    return "significant loss" if comp.loss.loss > 0 else "significant gain"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    # per row: True = significant loss, False = no significant difference, None = baseline/unknown
    significance: list[bool | None] = field(default_factory=list)
    # doctor findings stored for the run that can explain this table's loss (see attach_findings)
    findings: list[str] = field(default_factory=list)
    workload: str = ""


def loss_tables(results: Results, metric: str | None = None) -> list[Table]:
    """One table per workload × matrix point, in the seeds' shape: variant, value, loss % [CI], context."""
    analysis = results.analysis
    groups: dict[tuple[str, str], list[Any]] = {}
    for cell in results.cells:
        groups.setdefault((cell.workload, cell.point_label), []).append(cell)
    tables = []
    conf = f"{results.confidence:.0%}"
    for (workload, point), cells in groups.items():
        cells.sort(key=lambda c: (not c.is_baseline, results.cells.index(c)))
        name = metric or cells[0].primary_metric
        present_ctx = [
            (m, h)
            for m, h in CONTEXT_COLUMNS
            if m != name and any(analysis.metric(c.cell_id, m) for c in cells)
        ]
        # show the workload's own CPU-use figure when it has one, the rusage one otherwise
        if any(m == "lammps_cpu_use_pct" for m, _ in present_ctx):
            present_ctx = [(m, h) for m, h in present_ctx if m != "cpu_util_pct"]
        unit = next((cm.unit for c in cells if (cm := analysis.metric(c.cell_id, name))), "")
        headers = [
            "variant",
            "n",
            f"{name} ({unit})" if unit else name,
            "± sd",
            f"loss % [{conf} CI]",
            *[h for _, h in present_ctx],
            "verdict",
        ]
        rows, sig = [], []
        for cell in cells:
            cm = analysis.metric(cell.cell_id, name)
            comp = analysis.comparison(cell.cell_id, name)
            failed = analysis.failed.get(cell.cell_id, 0)
            n = f"{cm.summary.n if cm else 0}" + (f" (+{failed} failed)" if failed else "")
            ctx_values = []
            for m, _ in present_ctx:
                ccm = analysis.metric(cell.cell_id, m)
                ctx_values.append(fmt_number(ccm.summary.mean, 3) if ccm else "–")
            if cell.is_baseline:
                verdict = "baseline"
            elif comp is None:
                verdict = "no baseline value to compare"
            else:
                verdict = short_verdict(comp)
            rows.append(
                [
                    cell.variant,
                    n,
                    fmt_number(cm.summary.mean if cm else None),
                    fmt_number(cm.summary.stdev if cm else None, 2),
                    fmt_loss(comp) if not cell.is_baseline else "baseline",
                    *ctx_values,
                    verdict,
                ]
            )
            sig.append(None if comp is None else comp.loss.significant)
        title = f"{workload}" + (f" ({point})" if point else "") + f": {name}"
        direction = next((cm.direction for c in cells if (cm := analysis.metric(c.cell_id, name))), "")
        notes = [
            f"loss is direction-aware ({direction} is better); positive = the variant costs; "
            f"{conf} BCa bootstrap interval on the ratio of means"
        ]
        tables.append(Table(title, headers, rows, notes, sig, workload=workload))
    return tables


def run_header(results: Results) -> list[tuple[str, str]]:
    run = results.run
    env = results.environment
    n_ok = sum(1 for t in results.trials if t.status == "ok" and not t.is_warmup)
    n_bad = sum(1 for t in results.trials if t.status != "ok")
    n_warm = sum(1 for t in results.trials if t.is_warmup)
    return [
        ("run", run.id),
        ("plan", f"{run.name} ({run.plan_source})"),
        ("status", run.status),
        (
            "host",
            f"{run.host}: {env.get('cpu.model', '?')}, {env.get('cpu.logical', '?')} CPUs, "
            f"kernel {env.get('os.kernel', '?')}, cgroup {env.get('cgroup.version', '?')}",
        ),
        ("trials", f"{n_ok} measured ok, {n_warm} warm-up, {n_bad} failed"),
    ]


def failure_lines(results: Results, limit: int = 10) -> list[str]:
    out = []
    for t in results.trials:
        if t.status != "ok":
            out.append(f"{t.cell_key} #{t.repeat_index}: {t.status}: {(t.error or '').splitlines()[0][:200]}")
    if len(out) > limit:
        out = [*out[:limit], f"… and {len(out) - limit} more"]
    return out


# --- doctor findings next to the losses they can explain ---------------------------------------------

# which kinds of loss a table shows, from its metric's name (see doctor.base.CheckInfo.explains)
_IO_MARKERS = ("bw_", "iops", "clat", "lat_", "read", "write", "fsync")
_NET_MARKERS = ("rtt", "gbps", "mbps", "bitrate", "latency", "pingpong", "allreduce")


def loss_kinds(metric: str) -> set[str]:
    name = metric.lower()
    kinds = {"variance", "cpu"}
    if any(m in name for m in _IO_MARKERS):
        kinds.add("io")
    if any(m in name for m in _NET_MARKERS):
        kinds.add("network")
    return kinds


def stored_findings(results: Results, min_severity: str = "info") -> list[dict[str, Any]]:
    """Findings ``nearmetal doctor --for RUN`` attached to this run, worst first (``ok`` ones left out)."""
    from nearmetal.doctor.base import SEVERITY_ORDER

    limit = SEVERITY_ORDER[min_severity]
    found = [
        f for f in results.store.findings(results.run_id) if SEVERITY_ORDER.get(f["severity"], 3) <= limit
    ]
    return sorted(found, key=lambda f: SEVERITY_ORDER.get(f["severity"], 3))


def finding_line(finding: dict[str, Any]) -> str:
    line = f"[{finding['severity']}] {finding['check_id']}: {finding['title']}"
    if finding.get("fix"):
        line += f" — fix: {finding['fix']}"
    return line


def attach_findings(tables: list[Table], results: Results) -> list[str]:
    """Put each stored doctor finding under the loss tables whose kind of loss it can explain (a CPU quota
    under throughput/time tables, a severed FUSE mount under I/O tables …); returns the findings that
    explain no table (failed trials, start-up), for a section of their own."""
    from nearmetal.doctor import CHECK_INFO

    findings = stored_findings(results)
    unplaced: list[str] = []
    for finding in findings:
        info = CHECK_INFO.get(finding["check_id"])
        explains = set(info.explains) if info and info.explains else None
        placed = False
        for table in tables:
            metric = table.title.rsplit(": ", 1)[-1]
            if explains is None or explains & loss_kinds(metric):
                table.findings.append(finding_line(finding))
                placed = True
        if not placed:
            unplaced.append(finding_line(finding))
    return unplaced


# --- energy and carbon ----------------------------------------------------------------------------------


def run_energy_config(results: Results) -> Any:
    """The run's ``energy:`` settings (PUE, carbon intensity) from its stored plan; environment variables
    ``NEARMETAL_PUE`` and ``NEARMETAL_CARBON_INTENSITY`` override them for a report."""
    import os

    from nearmetal.telemetry.energy import EnergyConfig

    values = dict(results.plan.get("energy") or {}) if isinstance(results.plan, dict) else {}
    if os.environ.get("NEARMETAL_PUE"):
        values["pue"] = float(os.environ["NEARMETAL_PUE"])
    if os.environ.get("NEARMETAL_CARBON_INTENSITY"):
        values["carbon_intensity_g_per_kWh"] = float(os.environ["NEARMETAL_CARBON_INTENSITY"])
    try:
        return EnergyConfig.model_validate(values)
    except ValueError:
        return EnergyConfig()


def energy_table(results: Results) -> Table | None:
    """Per cell: mean energy and power per trial, with where the figure comes from; the note gives the run's
    kWh × PUE × carbon intensity. None when no trial has energy metrics."""
    from nearmetal.telemetry.energy import footprint

    names = ("energy_J", "power_avg_W", "gpu_energy_J")
    sources: dict[tuple[str, str], set[str]] = {}
    totals = {"energy_J": 0.0, "gpu_energy_J": 0.0}
    trial_ids = {"energy_J": set(), "gpu_energy_J": set()}
    with results.store.session() as s:
        from sqlalchemy import select

        from nearmetal.store.schema import MetricRow, TrialRow

        rows = s.execute(
            select(TrialRow.cell_id, MetricRow.name, MetricRow.source, MetricRow.value, TrialRow.id)
            .join(TrialRow, TrialRow.id == MetricRow.trial_id)
            .where(TrialRow.run_id == results.run_id, MetricRow.name.in_(names))
        ).all()
    if not rows:
        return None
    for cell_id, name, source, value, trial_id in rows:
        sources.setdefault((cell_id, name), set()).add(str(source).removeprefix("energy:"))
        if name in totals:  # every trial the run spent, warm-ups and failed ones too
            totals[name] += float(value)
            trial_ids[name].add(trial_id)
    has_gpu = bool(trial_ids["gpu_energy_J"])
    headers = ["variant", "n", "energy per trial (J)", "power avg (W)", "source"]
    if has_gpu:
        headers[4:4] = ["GPU energy (J)"]
    out_rows = []
    for cell in results.cells:
        energy = results.analysis.metric(cell.cell_id, "energy_J")
        if energy is None:
            continue
        power = results.analysis.metric(cell.cell_id, "power_avg_W")
        gpu = results.analysis.metric(cell.cell_id, "gpu_energy_J")
        label = f"{cell.workload}/{cell.variant}" + (f" ({cell.point_label})" if cell.point else "")
        row = [
            label,
            str(energy.summary.n),
            fmt_number(energy.summary.mean),
            fmt_number(power.summary.mean if power else None),
            ", ".join(sorted(sources.get((cell.cell_id, "energy_J"), set()))),
        ]
        if has_gpu:
            row[4:4] = [fmt_number(gpu.summary.mean if gpu else None)]
        out_rows.append(row)
    config = run_energy_config(results)
    total = totals["energy_J"] + totals["gpu_energy_J"]
    fp = footprint(total, config)
    all_sources = sorted(
        {src for (_, name), srcs in sources.items() if name != "power_avg_W" for src in srcs}
    )
    notes = [
        f"run total: {total:,.1f} J = {fp.it_kWh:.3g} kWh × PUE {config.pue:g} = {fp.facility_kWh:.3g} kWh × "
        f"{config.carbon_intensity_g_per_kWh:g} gCO2e/kWh = {fp.carbon_g:.3g} gCO2e "
        f"({len(trial_ids['energy_J'])} trials, warm-ups and failed ones included)",
        "sources: " + ", ".join(all_sources),
    ]
    if "estimated" in all_sources:
        notes.append(
            "estimated = the trial's CPU seconds × watts per busy core (TDP ÷ cores of the CPU family); no idle "
            "or platform power: a floor, not a measurement"
        )
    if "rapl" in all_sources:
        notes.append("rapl measures the whole socket: other processes' load during a trial is included")
    return Table("Energy and carbon", headers, out_rows, notes, [None] * len(out_rows))
