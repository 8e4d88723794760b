"""The GPU-sharing shapes of seed 001 in a stored run, as plain data: time slicing, partitions, scaling,
topology — and what the three studies' tables (``report/studies/time_slicing.py``, ``partitions.py``,
``scaling.py``) share.

``sharing_data(results)`` finds in a run what each shape needs — cells with the ``colocate`` layer (shared
×k) next to cells without (passthrough); cells with a ``cpuset`` or ``gpu`` (MIG) partition next to cells
without (partitioning disabled); ``ddp`` cells at several worker counts; ``ddp`` jobs with several
placements — and returns plain data (``nearmetal.analysis.sharing`` rows) that the studies' tables and the
figures in ``report/figures/sharing.py`` are drawn from, and that a notebook can use directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nearmetal.analysis import CellInfo
from nearmetal.analysis.sharing import (
    DoublingRow,
    EnabledVsDisabled,
    Job,
    Partition,
    PartitionRatioRow,
    ScalingPoint,
    ScalingRow,
    SharingLevel,
    SlicingRow,
    TopologyRow,
    doubling_rows,
    enabled_vs_disabled,
    partition_ratios,
    scaling_rows,
    time_slicing_rows,
    topology_of,
    topology_rows,
    variance_split,
)
from nearmetal.analysis.variance import VarianceComponents
from nearmetal.api import Results
from nearmetal.host import cgroups
from nearmetal.layers import layer_kinds
from nearmetal.report.tables import Table

GPU_COMPUTE_SLICES = 7


# --- what the run holds --------------------------------------------------------------------------------
def _trials_of(results: Results) -> dict[str, list[Any]]:
    """cell id -> its trials; built once per Results (the helpers below ask for every cell)."""
    cached = getattr(results, "_sharing_trials", None)
    if cached is None:
        cached = {}
        for trial in results.trials:
            cached.setdefault(trial.cell_id, []).append(trial)
        results._sharing_trials = cached  # type: ignore[attr-defined]
    return cached


def _layers(results: Results, cell: CellInfo) -> list[dict[str, Any]]:
    trials = _trials_of(results).get(cell.cell_id)
    return [c for c in (trials[0].layers or []) if isinstance(c, dict)] if trials else []


def _params(results: Results, cell: CellInfo) -> dict[str, Any]:
    trials = _trials_of(results).get(cell.cell_id)
    return dict(trials[0].params or {}) if trials else {}


def _placements(results: Results, cell: CellInfo) -> list[dict[str, Any]]:
    return [
        dict(t.placement or {})
        for t in _trials_of(results).get(cell.cell_id, [])
        if t.status == "ok" and not t.is_warmup
    ]


def _layer(layers: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((c for c in layers if c.get("layer") == kind), None)


def _values(results: Results, cell: CellInfo, metric: str) -> np.ndarray:
    cm = results.analysis.metric(cell.cell_id, metric)
    return np.asarray(cm.values, dtype=float) if cm is not None else np.array([])


def _metric_meta(results: Results, cells: list[CellInfo], metric: str) -> tuple[str, str]:
    for cell in cells:
        cm = results.analysis.metric(cell.cell_id, metric)
        if cm is not None:
            return cm.unit, cm.direction
    return "", "lower"


def _groups(results: Results) -> dict[tuple[str, str], list[CellInfo]]:
    out: dict[tuple[str, str], list[CellInfo]] = {}
    for cell in results.cells:
        out.setdefault((cell.workload, cell.point_label), []).append(cell)
    return out


def shape_title(workload: str, point: str) -> str:
    return workload + (f" ({point})" if point else "")


# --- time slicing --------------------------------------------------------------------------------------
@dataclass
class SlicingGroup:
    workload: str
    point: str
    metric: str
    unit: str
    direction: str
    variants: dict[int, str]  # copies (0 = passthrough) -> variant name
    rows: list[SlicingRow]
    doubling: list[DoublingRow]
    # measured shared trials whose neighbours all ran from before the measured copy started until it ended
    overlapped: int = 0
    shared_trials: int = 0


def time_slicing_groups(results: Results) -> list[SlicingGroup]:
    out = []
    partition_kinds = layer_kinds("partition")
    for (workload, point), cells in _groups(results).items():
        levels: list[SharingLevel] = []
        names: dict[int, str] = {}
        for cell in sorted(cells, key=lambda c: (not c.is_baseline, results.cells.index(c))):
            layers = _layers(results, cell)
            colocate = _layer(layers, "colocate")
            if colocate is None and any(c.get("layer") in partition_kinds for c in layers):
                continue  # a partition, not a sharing level
            copies = int(colocate["copies"]) if colocate else 0
            if copies in names:
                continue
            names[copies] = cell.variant
            levels.append(
                SharingLevel(max(copies, 1), _values(results, cell, cell.primary_metric), copies == 0)
            )
        if not any(not lv.passthrough for lv in levels) or len(levels) < 2:
            continue
        metric = cells[0].primary_metric
        unit, direction = _metric_meta(results, cells, metric)
        rows = time_slicing_rows(
            levels, direction, results.confidence, results.resamples, results.run.seed or 0
        )
        doubling = doubling_rows(
            levels, direction, results.confidence, results.resamples, results.run.seed or 0
        )
        group = SlicingGroup(workload, point, metric, unit, direction, names, rows, doubling)
        for cell in cells:
            if cell.variant in names.values() and _layer(_layers(results, cell), "colocate"):
                for placement in _placements(results, cell):
                    if placement.get("overlap"):
                        group.shared_trials += 1
                        group.overlapped += bool(placement["overlap"].get("all_overlapped"))
        out.append(group)
    return out


# --- partitions ----------------------------------------------------------------------------------------
@dataclass
class PartitionGroup:
    workload: str
    point: str
    metric: str
    unit: str
    direction: str
    resource: str  # "CPUs" or "compute slices"
    partitions: list[Partition]
    variants: dict[str, str]  # partition label -> variant
    ratios: list[PartitionRatioRow]
    enabled_full: EnabledVsDisabled | None = None
    full_label: str | None = None
    theoretical_source: str = ""


def _partition_of(results: Results, cell: CellInfo) -> tuple[str, float, str, float | None, str] | None:
    """(label, resources, resource name, theoretical loss of this partition at full size, source) of a
    partitioned cell; None when the cell has no partition layer (or is a time-slicing level)."""
    layers = _layers(results, cell)
    if _layer(layers, "colocate") is not None:
        return None
    placements = _placements(results, cell)
    cpuset = _layer(layers, "cpuset")
    if cpuset is not None:
        placed = next((p["cpuset"] for p in placements if "cpuset" in p), None)
        if placed:
            count, host = int(placed["cpu_count"]), int(placed["host_cpu_count"])
            cpus = str(placed["cpus"])
        else:
            wanted = cpuset.get("cpus")
            count = int(wanted) if isinstance(wanted, int) else len(cgroups.parse_cpu_list(str(wanted)))
            host, cpus = 0, str(wanted)
        full_loss = (1.0 - count / host) if host and count == host else None
        label = f"{count} CPU{'s' if count != 1 else ''} ({cpus})"
        return label, float(count), "CPUs", full_loss, "CPUs in the partition vs the host's"
    gpu = _layer(layers, "gpu")
    if gpu is not None:
        placed = next((p["gpu"] for p in placements if "gpu" in p), None)
        profile = (placed or {}).get("mig_profile") or gpu.get("profile")
        if not profile or profile == "disabled":
            return None
        from nearmetal.host.gpu_profiles import compute_slices, gpu_model

        slices = compute_slices(profile)
        full_loss = None
        source = ""
        if slices == GPU_COMPUTE_SLICES and placed:
            model = gpu_model(str(placed.get("gpu_name", "")))
            if model is not None:
                full_loss, source = (
                    model.mig_sm_loss,
                    f"SMs of {model.full_profile.name} vs the whole {model.name}",
                )
        return profile, float(slices), "compute slices", full_loss, source
    return None


def partition_groups(results: Results) -> list[PartitionGroup]:
    out = []
    seed = results.run.seed or 0
    for (workload, point), cells in _groups(results).items():
        metric = cells[0].primary_metric
        unit, direction = _metric_meta(results, cells, metric)
        partitions: list[Partition] = []
        variants: dict[str, str] = {}
        disabled: CellInfo | None = None
        full: tuple[Partition, float, str] | None = None
        resource = ""
        for cell in cells:
            found = _partition_of(results, cell)
            if found is None:
                shared = _layer(_layers(results, cell), "colocate") is not None
                if not shared and (disabled is None or cell.is_baseline):
                    disabled = cell
                continue
            label, amount, resource, full_loss, source = found
            if label in variants:
                continue
            part = Partition(label, amount, _values(results, cell, metric))
            partitions.append(part)
            variants[label] = cell.variant
            if full_loss is not None:
                full = (part, full_loss, source)
        if not partitions:
            continue
        group = PartitionGroup(
            workload,
            point,
            metric,
            unit,
            direction,
            resource,
            sorted(partitions, key=lambda p: -p.resources),
            variants,
            partition_ratios(partitions, direction, results.confidence, results.resamples, seed),
        )
        if disabled is not None and full is not None:
            part, theoretical, source = full
            group.enabled_full = enabled_vs_disabled(
                part.values,
                _values(results, disabled, metric),
                direction,
                theoretical,
                results.confidence,
                results.resamples,
                seed,
            )
            group.full_label = part.label
            group.theoretical_source = source
            group.variants["disabled"] = disabled.variant
        out.append(group)
    return out


# --- distributed scaling and topology ------------------------------------------------------------------
@dataclass
class ScalingGroup:
    workload: str
    series: str  # what the cells of this curve share (variant-level differences other than workers)
    variants: dict[int, str]
    points: list[ScalingPoint]
    rows: list[ScalingRow]


def _ddp_key(results: Results, cell: CellInfo) -> tuple[str, str]:
    params = {k: v for k, v in _params(results, cell).items() if k not in ("workers", "pin")}
    layers = _layers(results, cell)
    return cell.workload, json.dumps([params, layers], sort_keys=True, default=str)


def _first_failure(results: Results, cell: CellInfo) -> str:
    trial = next((t for t in _trials_of(results).get(cell.cell_id, []) if t.status != "ok"), None)
    return (trial.error or trial.status).splitlines()[0][:80] if trial else "no measurement"


def scaling_groups(results: Results) -> list[ScalingGroup]:
    series: dict[tuple[str, str], list[CellInfo]] = {}
    for cell in results.cells:
        if cell.kind == "ddp":
            series.setdefault(_ddp_key(results, cell), []).append(cell)
    out = []
    for (workload, _), cells in series.items():
        by_workers: dict[int, list[CellInfo]] = {}
        for cell in cells:
            by_workers.setdefault(int(_params(results, cell).get("workers", 1)), []).append(cell)
        if len(by_workers) < 2:
            continue
        points, variants = [], {}
        for workers, group in sorted(by_workers.items()):
            # unpinned cells are the plain scaling curve; pinned ones are placements (topology) of it
            chosen = [c for c in group if _params(results, c).get("pin") is None] or group
            values = np.concatenate([_values(results, c, "epoch_s") for c in chosen])
            failure = None if values.size else _first_failure(results, chosen[0])
            points.append(ScalingPoint(workers, values, failure))
            variants[workers] = ", ".join(c.variant for c in chosen)
        names = sorted({c.variant for c in cells})
        rows = scaling_rows(points, results.confidence, results.resamples, results.run.seed or 0)
        out.append(ScalingGroup(workload, " / ".join(names), variants, points, rows))
    return out


@dataclass
class TopologyGroup:
    workload: str
    workers: int
    level: str  # "host" or "cpu": what a node of the topology is
    jobs: list[Job]
    rows: list[TopologyRow]
    split: VarianceComponents | None


def topology_groups(results: Results) -> list[TopologyGroup]:
    from nearmetal.workloads.ddp import rank_nodes

    trial_ids, epoch_values = results.store.metric_values(results.run_id, "epoch_s")
    epochs: dict[int, list[float]] = {}
    for tid, value in zip(trial_ids.tolist(), epoch_values.tolist(), strict=True):
        epochs.setdefault(tid, []).append(value)
    groups: dict[tuple[str, int], list[tuple[Any, dict[str, Any]]]] = {}
    for trial in results.trials:
        ddp = (trial.placement or {}).get("ddp")
        if trial.kind != "ddp" or trial.status != "ok" or trial.is_warmup or not ddp or not ddp.get("ranks"):
            continue
        groups.setdefault((trial.workload, int(ddp.get("world_size") or len(ddp["ranks"]))), []).append(
            (trial, ddp)
        )
    out = []
    for (workload, workers), trials in groups.items():
        hosts = {r.get("host") for _, ddp in trials for r in ddp["ranks"]}
        level = "host" if len(hosts) > 1 else "cpu"
        jobs = []
        for trial, ddp in trials:
            values = epochs.get(trial.id)
            if not values:
                continue
            if level == "cpu" and any(len(r.get("cpus", [])) != 1 for r in ddp["ranks"]):
                continue  # unpinned ranks on one host have no CPU-level placement to compare
            jobs.append(Job(topology_of(rank_nodes(ddp["ranks"], level)), np.asarray(values, dtype=float)))
        if len({j.topology for j in jobs}) < 2:
            continue  # one placement only: nothing to compare
        rows = topology_rows(jobs, "lower", results.confidence)
        out.append(
            TopologyGroup(workload, workers, level, jobs, rows, variance_split([j.values for j in jobs]))
        )
    return out


@dataclass
class SharingData:
    time_slicing: list[SlicingGroup] = field(default_factory=list)
    partitions: list[PartitionGroup] = field(default_factory=list)
    scaling: list[ScalingGroup] = field(default_factory=list)
    topology: list[TopologyGroup] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.time_slicing or self.partitions or self.scaling or self.topology)


def _names_a_layer(node: Any, kinds: frozenset[str]) -> bool:
    if isinstance(node, dict):
        if node.get("layer") in kinds:
            return True
        return any(_names_a_layer(v, kinds) for v in node.values())
    if isinstance(node, list):
        return any(_names_a_layer(v, kinds) for v in node)
    return False


def may_hold_sharing(results: Results) -> bool:
    """Can the run have a sharing shape at all? Time slicing and partitions need a colocate, cpuset or gpu
    layer in the plan, scaling and topology a ddp workload; the answer comes from the plan, so a run of
    another shape never loads its trials here (100,000 trials cost seconds)."""
    kinds = frozenset(layer_kinds("sharing", "partition"))
    return any(c.kind == "ddp" for c in results.cells) or _names_a_layer(results.plan, kinds)


def sharing_data(results: Results) -> SharingData:
    """Every GPU-sharing shape the run holds (empty lists for the shapes it does not)."""
    if not may_hold_sharing(results):
        return SharingData()
    return SharingData(
        time_slicing_groups(results),
        partition_groups(results),
        scaling_groups(results),
        topology_groups(results),
    )


# --- what the studies' tables share ------------------------------------------------------------------
def pct_text(est: Any) -> str:
    if est is None:
        return "–"
    if est.low is None or est.high is None:
        return f"{est.loss * 100:+.1f}% [n too small]"
    return f"{est.loss * 100:+.1f}% [{est.low * 100:+.1f}, {est.high * 100:+.1f}]"


def ratio_text(est: Any) -> str:
    if est is None:
        return "–"
    if est.low is None or est.high is None:
        return f"{est.ratio:.2f} [n too small]"
    return f"{est.ratio:.2f} [{est.low:.2f}, {est.high:.2f}]"


def with_unit(metric: str, unit: str) -> str:
    return f"{metric} ({unit})" if unit else metric


def conf_label(results: Results) -> str:
    return f"{results.confidence:.0%} CI"


def guarded(results: Results, tables: list[Table]) -> list[Table]:
    """With the plan's contention guard on, a table of a workload whose cells ran beside outside work says
    so in its title and first note, and marks no row significant (issue 17: physically backwards ratios
    were printed as findings on a busy host)."""
    guard = getattr(results, "contention_guard", False)
    noise = getattr(results, "contention", {}) if guard else {}
    if not noise:
        return tables
    for table in tables:
        cells = [c for c in results.cells if c.workload == table.workload and c.cell_id in noise]
        hit = [c for c in cells if noise[c.cell_id].is_contended]
        if not hit:
            continue
        worst = max(hit, key=lambda c: noise[c.cell_id].mean_outside_pct)
        table.title += " — contended, not interpretable"
        table.notes.insert(
            0,
            f"contended — not interpretable: {len(hit)} of {len(cells)} cells ran beside outside work;"
            f" {worst.variant}: {noise[worst.cell_id].describe()}",
        )
        table.significance = [None] * len(table.rows)
    return tables
