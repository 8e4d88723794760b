"""Tables in the fs-layers study's shape (seed 002, Kata Containers I/O), for any run with fio cells: per
scenario (workload × matrix point), every variant's bandwidth and p99 completion ("commit") latency side by
side, each with its loss against the baseline and interval, the I/O mode measured per trial and the CPU the
trials ran on.

I/O mode: the share of fio's bytes the disk under the data really moved during the trial
(``disk_read_share_pct`` / ``disk_write_share_pct``, from the disk's own counters; see
``telemetry.diskio``): "direct" when about all of them, "cached" when the page cache served them (a FUSE
daemon or a 9p server that drops O_DIRECT), "memory" when the data is on tmpfs. CPU: "emulated" when a
trial carries the VM layer's caveat (no useful KVM: the guest ran on TCG), so those rows are read as such.

Runs with other workloads whose trials carry caveats get a short table naming them per variant, so a caveat
stored with the trials is seen in every report format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nearmetal.analysis.floor import shown_value, statistic_label
from nearmetal.report.tables import Table, fmt_loss, fmt_number, short_verdict, study_table
from nearmetal.telemetry.diskio import io_mode

if TYPE_CHECKING:
    from nearmetal.analysis import CellInfo
    from nearmetal.api import Results

KIND = "fio"
BANDWIDTH = "bw_MiBps"
P99 = "clat_p99_us"
SHARES = (("disk_read_share_pct", "read"), ("disk_write_share_pct", "write"))
EMULATED_PREFIX = "emulated CPU"


def _trial_info(results: Results) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Per cell: the caveats of its measured trials (each once, in order), and where fio's data was
    (``fio_data.kind`` of the trials' placement: disk, memory, unknown)."""
    from sqlalchemy import select

    from nearmetal.store.schema import TrialRow

    caveats: dict[str, list[str]] = {}
    data_kinds: dict[str, set[str]] = {}
    with results.store.session() as s:
        rows = s.execute(
            select(TrialRow.cell_id, TrialRow.caveats, TrialRow.placement).where(
                TrialRow.run_id == results.run_id, TrialRow.is_warmup.is_(False), TrialRow.status == "ok"
            )
        ).all()
    for cell_id, trial_caveats, placement in rows:
        for caveat in trial_caveats or []:
            seen = caveats.setdefault(cell_id, [])
            if caveat not in seen:
                seen.append(caveat)
        data = (placement or {}).get("fio_data")
        if isinstance(data, dict) and data.get("kind"):
            data_kinds.setdefault(cell_id, set()).add(str(data["kind"]))
    return caveats, data_kinds


def mode_text(results: Results, cell: CellInfo, data_kinds: set[str]) -> str:
    """ "direct 100%", "cached 2%", "read direct 99%, write cached 0%", "memory", "varies: 1/2 direct 55%"."""
    if data_kinds == {"memory"}:
        return "memory (tmpfs)"
    parts = []
    for metric, side in SHARES:
        cm = results.analysis.metric(cell.cell_id, metric)
        if cm is None or cm.summary.n == 0:
            continue
        modes = [io_mode(float(v)) for v in np.asarray(cm.values, dtype=float)]
        mean = cm.summary.mean
        if len(set(modes)) == 1:
            text = f"{modes[0]} {mean:.0f}%"
        else:
            text = f"varies: {modes.count('direct')}/{len(modes)} direct, {mean:.0f}% on average"
        parts.append((side, text))
    if not parts:
        return "not measured"
    if len(parts) == 1:
        return parts[0][1]
    return ", ".join(f"{side} {text}" for side, text in parts)


def cpu_text(caveats: list[str]) -> str:
    return "emulated" if any(c.startswith(EMULATED_PREFIX) for c in caveats) else "host"


def _estimate(results: Results, cell: CellInfo, metric: str) -> tuple[str, str, Any]:
    cm = results.analysis.metric(cell.cell_id, metric)
    if cm is None:
        return "–", "–", None
    value = shown_value(cm.summary.mean, cm.summary.median, cm.values, results.statistic)
    if cell.is_baseline:
        return fmt_number(value), "baseline", None
    comp = results.analysis.comparison(cell.cell_id, metric)
    return fmt_number(value), fmt_loss(comp) if comp else "no baseline value", comp


def io_tables(results: Results, caveats: dict[str, list[str]], kinds: dict[str, set[str]]) -> list[Table]:
    groups: dict[tuple[str, str], list[CellInfo]] = {}
    for cell in results.cells:
        if cell.kind == KIND:
            groups.setdefault((cell.workload, cell.point_label), []).append(cell)
    conf = f"{results.confidence:.0%}"
    of = statistic_label(results.statistic)
    out = []
    position = {c.cell_id: i for i, c in enumerate(results.cells)}
    for (workload, point), cells in groups.items():
        cells.sort(key=lambda c: (not c.is_baseline, position[c.cell_id]))
        headers = [
            "variant",
            "n",
            f"bandwidth MiB/s{of}",
            f"bw loss % [{conf} CI]",
            f"p99 commit latency µs{of}",
            f"p99 loss % [{conf} CI]",
            "I/O mode (measured)",
            "CPU",
            "verdict",  # of the bandwidth; last: renderers style a row by its verdict
        ]
        rows, sig = [], []
        notes_caveats: list[str] = []
        for cell in cells:
            bw, bw_loss, bw_comp = _estimate(results, cell, BANDWIDTH)
            p99, p99_loss, _ = _estimate(results, cell, P99)
            cm = results.analysis.metric(cell.cell_id, BANDWIDTH)
            failed = results.analysis.failed.get(cell.cell_id, 0)
            n = f"{cm.summary.n if cm else 0}" + (f" (+{failed} failed)" if failed else "")
            cell_caveats = caveats.get(cell.cell_id, [])
            cpu = cpu_text(cell_caveats)
            for caveat in cell_caveats:
                line = f"{cell.variant}: {caveat}"
                if line not in notes_caveats:
                    notes_caveats.append(line)
            if cell.is_baseline:
                verdict = "baseline"
            elif bw_comp is None:
                verdict = "no baseline value to compare"
            else:
                verdict = short_verdict(bw_comp)
            variant = cell.variant + (" ⚠ emulated CPU" if cpu == "emulated" else "")
            mode = mode_text(results, cell, kinds.get(cell.cell_id, set()))
            rows.append([variant, n, bw, bw_loss, p99, p99_loss, mode, cpu, verdict])
            sig.append(None if bw_comp is None else bw_comp.loss.significant)
        notes = [
            "loss is direction-aware (higher bandwidth, lower latency is better); positive = the variant costs; "
            f"{conf} BCa bootstrap interval on the ratio; the verdict is the bandwidth's",
            "I/O mode: bytes the disk under fio's files moved during the trial as a share of fio's own (the "
            "disk's counters, /sys/dev/block/…/stat): direct ≥ 70 %, cached < 30 % (the page cache served "
            "them: a layer that drops O_DIRECT); other processes' I/O on the same disk counts too",
            *notes_caveats,
        ]
        title = f"I/O: {workload}" + (f" ({point})" if point else "") + ": bandwidth and p99 commit latency"
        out.append(Table(title, headers, rows, notes, sig, workload=workload))
    return out


def caveat_table(results: Results, caveats: dict[str, list[str]]) -> Table | None:
    """Variants of non-fio workloads whose trials carry caveats (the fio tables show their own)."""
    rows = []
    for cell in results.cells:
        if cell.kind == KIND or not caveats.get(cell.cell_id):
            continue
        label = f"{cell.workload}/{cell.variant}" + (f" ({cell.point_label})" if cell.point_label else "")
        rows.append([label, cpu_text(caveats[cell.cell_id]), "; ".join(caveats[cell.cell_id])])
    if not rows:
        return None
    return Table(
        "Caveats stored with the trials",
        ["cell", "CPU", "caveats"],
        rows,
        ["read these cells' losses with their caveats: an emulated CPU is not representative of production"],
        [None] * len(rows),
    )


@study_table
def tables(results: Results) -> list[Table]:
    """The report's fs-layers tables (``report.tables.study_tables`` calls this)."""
    if not results.cells:
        return []
    caveats, kinds = _trial_info(results)
    out = io_tables(results, caveats, kinds)
    extra = caveat_table(results, caveats)
    return [*out, *([extra] if extra else [])]
