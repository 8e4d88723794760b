"""The Kubernetes backend's pod table: per cell, the pod's CPU limit, QoS class and runtime class, the CFS
quota the kubelet wrote (read from the pod's cgroup on the node, or from inside the container), how many
trials were pods that Succeeded, and the CPU use and throttling that quota caused — seed 000's story told by
the pods themselves. A run has this shape when its trials ran with ``--backend kubernetes``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nearmetal.report.tables import Table, fmt_number, study_table

if TYPE_CHECKING:
    from nearmetal.api import Results

CPU_USE_METRICS = ("lammps_cpu_use_pct", "cpu_util_pct")


def quota_text(quota: dict[str, Any] | None) -> str:
    """``80000 / 100000 µs (0.8 CPU)``; ``none (max)`` for a pod without a CPU limit; ``–`` when unknown."""
    if not quota or not quota.get("period_us"):
        return "–"
    if quota.get("quota_us") is None:
        return "none (max)"
    cpus = quota["quota_us"] / quota["period_us"]
    return f"{quota['quota_us']} / {quota['period_us']} µs ({fmt_number(cpus, 3)} CPU)"


def _mean(results: Results, cell_id: str, metric: str) -> float | None:
    cm = results.analysis.metric(cell_id, metric)
    return float(cm.values.mean()) if cm is not None and len(cm.values) else None


@study_table
def tables(results: Results) -> list[Table]:
    trials_by_cell: dict[str, list[Any]] = {}
    for trial in results.trials:
        if (trial.placement or {}).get("backend") == "kubernetes" and not trial.is_warmup:
            trials_by_cell.setdefault(trial.cell_id, []).append(trial)
    if not trials_by_cell:
        return []
    rows: list[list[str]] = []
    sources: set[str] = set()
    for cell in results.cells:
        trials = trials_by_cell.get(cell.cell_id)
        if not trials:
            continue
        placements = [t.placement or {} for t in trials]
        pod = next((p.get("kubernetes") or {} for p in placements if p.get("kubernetes")), {})
        quotas = {quota_text(p.get("cpu_quota")) for p in placements if p.get("cpu_quota")}
        sources |= {p["cpu_quota"].get("read_from", "") for p in placements if p.get("cpu_quota")}
        ok = sum(t.status == "ok" for t in trials)
        use = next((v for m in CPU_USE_METRICS if (v := _mean(results, cell.cell_id, m)) is not None), None)
        throttled = _mean(results, cell.cell_id, "throttled_pct")
        rows.append(
            [
                cell.workload,
                cell.variant,
                (pod.get("limits") or {}).get("cpu", "none"),
                pod.get("qos_class") or "–",
                pod.get("runtime_class") or "default",
                " | ".join(sorted(quotas)) or "–",
                f"{ok}/{len(trials)}",
                fmt_number(use, 3),
                fmt_number(throttled, 3),
            ]
        )
    notes = [
        "quota: what the kubelet wrote for the pod's CPU limit (cgroup v1 cpu.cfs_quota_us / cpu.cfs_period_us, "
        "v2 cpu.max), read from the "
        + (" and ".join(sorted(s for s in sources if s)) or "pod's cgroup")
        + "; CPU use: LAMMPS' own figure where it gives one, else the container cgroup's CPU time over the "
        "program's wall time (100% = one CPU); throttled: % of CFS periods the pod was throttled",
    ]
    headers = [
        "workload",
        "variant",
        "CPU limit",
        "QoS",
        "runtime class",
        "quota (kubelet)",
        "pods ok",
        "CPU use %",
        "throttled %",
    ]
    return [
        Table("Kubernetes pods: the CPU quota the kubelet wrote", headers, rows, notes, [None] * len(rows))
    ]
