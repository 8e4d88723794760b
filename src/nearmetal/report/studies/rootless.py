"""The rootless tax (issue 22; seeds 000 and 001): each rootless row against the same stack run by root.

A cell whose layers start with ``rootless`` is paired with its *rootful twin*: the cell of the same workload,
matrix point and parameters whose layers are the same without the ``rootless`` layer (``rootless-bindfs`` ↔
``bindfs``, ``rootless-buildah-vfs`` ↔ ``buildah-vfs``, ``rootless`` ↔ the bare baseline). The table shows
both values of the workload's primary metric and the rootless row's loss against its twin with an interval
(paired block by block when the run was interleaved, as every loss table), next to the evidence the trials
recorded that the row really ran rootless: the uid the measured process (or builder) had on the host, and
for builds the storage driver and whether overlay mounted through fuse-overlayfs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from nearmetal.analysis.bootstrap import Sample
from nearmetal.analysis.estimate import loss_intervals, paired_loss_intervals
from nearmetal.analysis.run import baseline_of_own_blocks, block_pairs, comparison_resolution
from nearmetal.layers import layer_kinds
from nearmetal.report.tables import Table, fmt_estimate, fmt_number, study_table, verdict_of

if TYPE_CHECKING:
    from nearmetal.analysis import CellInfo
    from nearmetal.api import Results

ROOTLESS = "rootless"


def _cell_settings(results: Results) -> tuple[dict[str, tuple[str, str]], dict[str, dict[str, Any]]]:
    """Per cell: (its layers without the rootless layer, its params) as comparable text, and what its first
    measured trial recorded about running rootless."""
    settings: dict[str, tuple[str, str]] = {}
    evidence: dict[str, dict[str, Any]] = {}
    for trial in results.trials:
        if trial.cell_id in settings or trial.is_warmup or trial.status != "ok":
            continue
        layers = list(trial.layers or [])
        rootless = bool(layers) and layers[0].get("layer") == ROOTLESS
        rest = [layer for layer in layers if layer.get("layer") != ROOTLESS]
        settings[trial.cell_id] = (
            ("rootless " if rootless else "rootful ") + json.dumps(rest, sort_keys=True),
            json.dumps(trial.params or {}, sort_keys=True),
        )
        evidence[trial.cell_id] = dict(trial.placement or {})
    return settings, evidence


def twins(results: Results) -> list[tuple[CellInfo, CellInfo]]:
    """(rootless cell, its rootful twin) for every rootless cell that has one."""
    settings, _ = _cell_settings(results)
    by_setting: dict[tuple[str, str, str, str], CellInfo] = {}
    for cell in results.cells:
        if cell.cell_id in settings:
            layers, params = settings[cell.cell_id]
            by_setting[(cell.workload, json.dumps(cell.point, sort_keys=True), layers, params)] = cell
    out = []
    for cell in results.cells:
        layers, params = settings.get(cell.cell_id, ("", ""))
        if not layers.startswith("rootless "):
            continue
        twin = by_setting.get(
            (cell.workload, json.dumps(cell.point, sort_keys=True), "rootful " + layers[9:], params)
        )
        if twin is not None:
            out.append((cell, twin))
    return out


def _evidence(placement: dict[str, Any]) -> str:
    """Who ran the trial and, for builds, with which storage: what the trial itself recorded, briefly."""
    parts = []
    build = placement.get("build") or {}
    rootless = placement.get(ROOTLESS) or {}
    uid = rootless.get("workload_uid_host", build.get("uid_host", build.get("uid", rootless.get("uid_host"))))
    if uid is not None:
        parts.append(f"uid {uid}")
    if rootless.get("inside"):
        parts.append("userns")
    if build.get("storage_driver"):
        parts.append(build["storage_driver"] + ("+fuse-overlayfs" if build.get("mount_program") else ""))
    # filesystem layers that mount in the user namespace (their placement says so)
    for kind in layer_kinds("filesystem", rootless_form=True):
        info = placement.get(kind)
        if isinstance(info, dict) and info.get("user_namespace"):
            daemon = f" (daemon uid {info['daemon_uid_host']})" if "daemon_uid_host" in info else ""
            parts.append(f"{info.get('fstype', kind)}{daemon}")
    usernet = placement.get("usernet") or {}
    if usernet.get("stack"):
        tap = usernet.get("client_tap") or {}
        counted = "rx_packets" in tap and "tx_packets" in tap
        # packets through the stack's TAP device into and out of the namespace (pasta splices forwarded
        # loopback traffic past it: few in, as when root runs it)
        parts.append(
            usernet["stack"] + (f" ({tap['rx_packets']} in/{tap['tx_packets']} out)" if counted else "")
        )
    return " · ".join(parts) or "–"


@study_table
def tables(results: Results) -> list[Table]:
    pairs = twins(results)
    if not pairs:
        return []
    _, evidence = _cell_settings(results)
    analysis = results.analysis
    cfg = analysis.config
    found: list[tuple[CellInfo, CellInfo, Any, Any]] = []
    for rootless, rootful in pairs:
        vm = analysis.metric(rootless.cell_id, rootless.primary_metric)
        bm = analysis.metric(rootful.cell_id, rootless.primary_metric)
        if vm is not None and bm is not None:
            found.append((rootless, rootful, vm, bm))
    if not found:
        return []
    estimates = []
    for _, _, vm, bm in found:
        d, why = block_pairs(vm, bm) if cfg.paired else (None, "sequential order")
        if d is not None:
            q = comparison_resolution(vm, bm, cfg.resolution.get(vm.metric))
            est = paired_loss_intervals(
                [d],
                [vm.direction],
                cfg.confidence,
                cfg.first_stage,
                statistic=cfg.statistic,
                resolutions=[q],
                seed=cfg.seed,
            )
        else:
            base, _ = baseline_of_own_blocks(vm, bm)
            est = loss_intervals(
                [vm.sample or Sample.of(vm.values)], [base], [vm.direction], cfg.confidence, cfg.resamples,
                cfg.seed, cfg.statistic, notes=[f"unpaired: {why}"],
            )  # fmt: skip
        estimates.append(est[0])
    rows, significance = [], []
    for (rootless, rootful, vm, bm), estimate in zip(found, estimates, strict=True):
        scenario = rootless.workload + (f" {rootless.point_label}" if rootless.point else "")
        rows.append(
            [
                scenario,
                rootless.variant,
                rootful.variant,
                f"{vm.metric} ({vm.unit})",
                fmt_number(bm.summary.mean),
                fmt_number(vm.summary.mean),
                fmt_estimate(estimate),
                verdict_of(estimate),
                _evidence(evidence.get(rootless.cell_id, {})),
            ]
        )
        significance.append(estimate.significant)
    return [
        Table(
            "Rootless tax: each rootless row against the same stack run by root",
            [
                "scenario",
                "rootless row",
                "rootful twin",
                "metric",
                "rootful",
                "rootless",
                "rootless tax % [CI]",
                "verdict",
                "evidence (rootless trial)",
            ],
            rows,
            notes=[
                "the rootless row's loss against its twin (same workload, parameters and layers without the "
                "rootless layer): positive = running rootless costs; interval paired block by block when the run "
                "was interleaved, as in the loss tables",
                "evidence: the uid on the host the measured process (or the builder; for MPI the trial) ran as, "
                "recorded by the trial itself; userns = as root of the user's own user namespace; storage driver "
                "(+fuse-overlayfs: overlay.mount_program) read from the build's own storage; the FUSE mount's "
                "type and daemon uid, and the packets through the user-mode stack's TAP device, read inside it",
            ],
            significance=significance,
        )
    ]
