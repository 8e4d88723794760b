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


def shares_text(placements: list[dict[str, Any]]) -> str:
    """The pod cgroup's CPU weight as the trials saw it: ``cpu.shares`` 819 (v1), ``weight`` 32 (v2)."""
    seen: set[str] = set()
    for p in placements:
        source = p.get("cpu_quota") or {}
        pod = (p.get("kubernetes") or {}).get("pod_cgroup") or {}
        shares = source.get("cpu_shares", pod.get("cpu_shares"))
        weight = source.get("cpu_weight", pod.get("cpu_weight"))
        if shares is not None:
            seen.add(str(shares))
        elif weight is not None:
            seen.add(f"weight {weight}")
    return " | ".join(sorted(seen)) or "–"


def outside_text(placements: list[dict[str, Any]]) -> str:
    """The node's outside CPU over the cell's pods, mean % of one CPU, and the cluster's part of it:
    ``31 (cluster 12)``; ``–`` without evidence."""
    outs = [p["outside"] for p in placements if isinstance(p.get("outside"), dict)]
    values = [o["outside_cpu_pct"] for o in outs if o.get("outside_cpu_pct") is not None]
    if not values:
        return "–"
    cluster = [
        sum((o.get("split_pct") or {}).get(k, 0.0) for k in ("control_plane", "kubelet", "containerd"))
        for o in outs
        if o.get("split_pct")
    ]
    text = fmt_number(sum(values) / len(values), 3)
    if cluster:
        text += f" (cluster {fmt_number(sum(cluster) / len(cluster), 2)})"
    return text


def _mean_of(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


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
        qos = {str((p.get("kubernetes") or {}).get("qos_class")) for p in placements}
        qos.discard("None")
        ok = sum(t.status == "ok" for t in trials)
        use = next((v for m in CPU_USE_METRICS if (v := _mean(results, cell.cell_id, m)) is not None), None)
        throttled = _mean(results, cell.cell_id, "throttled_pct")
        teardown = _mean_of(
            [
                float(t["wait_s"])
                for p in placements
                if (t := (p.get("kubernetes") or {}).get("teardown")) and t.get("wait_s") is not None
            ]
        )
        rows.append(
            [
                cell.workload,
                cell.variant,
                " | ".join(sorted(qos)) or "–",
                (pod.get("requests") or {}).get("cpu", "none"),
                (pod.get("limits") or {}).get("cpu", "none"),
                shares_text(placements),
                " | ".join(sorted(quotas)) or "–",
                pod.get("runtime_class") or "default",
                f"{ok}/{len(trials)}",
                fmt_number(use, 3),
                fmt_number(throttled, 3),
                outside_text(placements),
                fmt_number(teardown, 2),
            ]
        )
    notes = [
        "QoS: the pod's class as the API server gave it; shares: the pod cgroup's cpu.shares (v1; requests × "
        "1024, 2 for BestEffort) or cpu.weight (v2) — what the pod gets against other work when the CPU is "
        "short; a limit is what caps it (Burstable does not lift a limit, seed 000)",
        "quota: what the kubelet wrote for the pod's CPU limit (cgroup v1 cpu.cfs_quota_us / cpu.cfs_period_us, "
        "v2 cpu.max), read from the "
        + (" and ".join(sorted(s for s in sources if s)) or "pod's cgroup")
        + "; CPU use: LAMMPS' own figure where it gives one, else the container cgroup's CPU time over the "
        "program's wall time (100% = one CPU); throttled: % of CFS periods the pod was throttled",
        "outside CPU: the node's CPU not used by the pod (nor by kernel threads) while it ran, % of one CPU "
        "(the local backend's outside_cpu_pct; above the plan's max_outside_cpu_pct a trial is contended); "
        "cluster: the part the control plane, the kubelet and containerd took; teardown: seconds waited after "
        "each pod until it and its cgroup were gone, before the next trial (not measured)",
    ]
    headers = [
        "workload",
        "variant",
        "QoS",
        "CPU request",
        "CPU limit",
        "shares",
        "quota (kubelet)",
        "runtime class",
        "pods ok",
        "CPU use %",
        "throttled %",
        "outside CPU %",
        "teardown s",
    ]
    return [
        Table("Kubernetes pods: the CPU quota the kubelet wrote", headers, rows, notes, [None] * len(rows))
    ]
