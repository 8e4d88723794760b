"""The report's energy and carbon table: energy and power per trial of each cell with where the figures come
from, and the run's kWh × PUE × carbon intensity."""

from __future__ import annotations

from typing import Any

from nearmetal.api import Results
from nearmetal.report.tables import Table, fmt_number


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
    trial_ids: dict[str, set[int]] = {"energy_J": set(), "gpu_energy_J": set()}
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
