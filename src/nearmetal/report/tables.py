"""The tables every report format shows, built once from a run's results.

Each loss figure comes with its interval and each row with the reason its cell stopped getting trials
(target met / max reached / budget / fixed count); terminal, Markdown and HTML reports render these
``Table`` objects as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nearmetal.analysis import Comparison, LossEstimate
from nearmetal.analysis.floor import FLOOR_QUANTILE, shown_value, statistic_label
from nearmetal.analysis.loss import fmt_interval, fmt_slowdown, loss_definition
from nearmetal.api import Results
from nearmetal.registry import Registry

# extra columns shown beside the primary metric when a run has them: (metric, header)
CONTEXT_COLUMNS: list[tuple[str, str]] = [
    ("lammps_cpu_use_pct", "CPU use %"),
    ("cpu_util_pct", "CPU util %"),
    ("throttled_pct", "throttled %"),
    ("disk_used_MiB", "disk MiB"),
    # the noise evidence of each cell (telemetry.contention): CPU that processes outside the run used while
    # its trials ran, in % of one CPU; what made a cell contended is named in the notes
    ("outside_cpu_pct", "outside CPU %"),
    # the trial's own wait for a CPU, % of its runnable time (telemetry.schedwait): what the verdict uses
    ("cpu_wait_pct", "CPU wait %"),
]
# columns shown for cells of one workload kind only: (metric, header)
KIND_COLUMNS: dict[str, list[tuple[str, str]]] = {
    # image-builds promises peak memory: the builder's process tree, summed (telemetry.process.TreeSampler)
    "image-build": [("tree_rss_peak_MiB", "peak memory MiB")],
}
# shown in the tables only (no figure): which I/O mode a fio figure used
# (1 = O_DIRECT / caches dropped before every trial, 0 = buffered / not permitted; disk read % = the share
# of fio's bytes the disk really read, measured: ~100 direct, ~0 served by the page cache)
MODE_COLUMNS: list[tuple[str, str]] = [
    ("direct_io", "O_DIRECT"),
    ("caches_dropped", "caches dropped"),
    ("disk_read_share_pct", "disk read %"),
    ("disk_write_share_pct", "disk write %"),
    ("cpu_emulated", "emulated CPU"),  # a VM guest on TCG (no useful KVM): not representative
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


def fmt_pct(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value * 100:.1f}"


def fmt_estimate(est: LossEstimate) -> str:
    """'+20.5% [+14.9, +25.0]', or the point with why there is no interval."""
    if est.low is None or est.high is None:
        if not math.isfinite(est.loss):
            return f"– [{est.reason or 'no data'}]"
        return f"{est.loss * 100:+.1f}% [no interval: {est.reason or 'n too small'}]"
    # a bound gets more digits rather than round to 0 (or across it) against the verdict
    return f"{est.loss * 100:+.1f}% [{fmt_interval(est.low, est.high)}]"


def fmt_factor(comp: Comparison | None) -> str:
    """'×2.12 slower' beside a loss: the same figure as a factor a reader can multiply by."""
    if comp is None:
        return "–"
    return fmt_slowdown(comp.loss)


def fmt_loss(comp: Comparison | None) -> str:
    if comp is None:
        return "baseline"
    return fmt_estimate(comp.loss)


def verdict_of(est: LossEstimate) -> str:
    """The table's wording; a difference is significant only when its interval excludes 0."""
    sig = est.significant
    if sig is None:
        return "no interval"
    if not sig:
        # Holm over the table's rows: this row's own interval excludes 0, the family's reading does not
        return (
            "no significant difference (family-wise)" if est.row_significant else "no significant difference"
        )
    return "significant loss" if est.loss > 0 else "significant gain"


def short_verdict(comp: Comparison) -> str:
    return verdict_of(comp.loss)


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


def method_note(results: Results, direction: str, estimates: list[LossEstimate] | None = None) -> str:
    """How the table's losses were made: the definition for the metric's direction, then the interval."""
    conf = f"{results.confidence:.0%}"
    estimates = [e for e in (estimates or []) if e.method != "none"]
    parts = [f"{loss_definition(direction)}; positive = the variant costs"]
    paired = [e for e in estimates if e.design == "paired"]
    unpaired = [e for e in estimates if e.design != "paired"]
    if paired:
        methods = sorted({e.method for e in paired})
        low, high = min(e.pairs for e in paired), max(e.pairs for e in paired)
        blocks = f"{low}" if low == high else f"{low}–{high}"
        if results.statistic == "median":
            how = (
                f"{conf} interval on the median per-block ratio of trials run side by side (paired,"
                f" {blocks} blocks; sign test)"
            )
        elif results.statistic == "floor":
            how = (
                f"loss and {conf} interval on the ratio of the cells' floors — their {FLOOR_QUANTILE:.0%}"
                " quantiles, the best-case times, not the means — from trials run side by side (paired,"
                f" {blocks} blocks; bootstrap over blocks, percentile on the log scale"
            )
        else:
            how = (
                f"{conf} interval on the ratio of means from trials run side by side (paired, {blocks}"
                " blocks; delta method on the log ratio of means, Student's t over blocks"
            )
        if any("stage-1" in m for m in methods):
            how += "; hulled with Stein's first-stage interval, since repeats stopped adaptively"
        if results.statistic != "median":
            how += ")"
        parts.append(how)
        coarse = sorted({e.resolution for e in paired if "resolution" in e.method})
        if coarse:
            parts.append(
                "values printed at a resolution of "
                + ", ".join(f"{q:g}" for q in coarse)
                + " (tied or coarse): bounds widened by what rounding can do to each mean"
            )
    if unpaired or not estimates:
        of = {"mean": "means", "median": "medians"}.get(results.statistic, "")
        how = (
            f"{conf} BCa bootstrap over trials on the ratio of {of} ({results.resamples} resamples, seed"
            f" {results.config.seed}), hulled with Welch's t on the logs below 4 trials"
        )
        if results.statistic == "floor":
            how = (
                f"loss and {conf} interval on the ratio of the cells' floors ({FLOOR_QUANTILE:.0%} quantiles,"
                f" the best-case times, not the means): percentile bootstrap over trials (seed"
                f" {results.config.seed})"
            )
        parts.append(
            how
            + (
                " (" + "; ".join(sorted({e.note for e in unpaired if e.note})) + ")"
                if any(e.note for e in unpaired)
                else ""
            )
        )
    if any(e.hierarchical for e in estimates):
        parts.append("a trial with several values counts as its mean")
    parts.append("bounds are computed on the log scale, so always physically possible")
    families = sorted({e.family for e in estimates if e.family > 1})
    if families:
        k = "/".join(str(f) for f in families)
        parts.append(
            f"{k} rows; family-wise {conf} (Holm): a row is significant only when Holm's step-down test over"
            " its family rejects; the interval shown is the row's own"
        )
    else:
        parts.append("significant only when the interval excludes 0")
    return "; ".join(parts)


def loss_tables(results: Results, metric: str | None = None) -> list[Table]:
    """One table per workload × matrix point, in the seeds' shape: variant, value, loss % [CI], context,
    verdict and why the cell stopped."""
    results.with_intervals(metric)
    analysis = results.analysis
    warnings_by_cell: dict[str, list[str]] = {}
    for cell, line in results.cell_warnings(metric):
        warnings_by_cell.setdefault(cell.cell_id, []).append(line)
    groups: dict[tuple[str, str], list[Any]] = {}
    for cell in results.cells:
        groups.setdefault((cell.workload, cell.point_label), []).append(cell)
    position = {c.cell_id: i for i, c in enumerate(results.cells)}
    tables = []
    conf = f"{results.confidence:.0%}"
    for (workload, point), cells in groups.items():
        cells.sort(key=lambda c: (not c.is_baseline, position[c.cell_id]))
        name = metric or cells[0].primary_metric
        present_ctx = [
            (m, h)
            for m, h in [*CONTEXT_COLUMNS, *KIND_COLUMNS.get(cells[0].kind, []), *MODE_COLUMNS]
            if m != name and any(analysis.metric(c.cell_id, m) for c in cells)
        ]
        # show the workload's own CPU-use figure when it has one, the rusage one otherwise
        if any(m == "lammps_cpu_use_pct" for m, _ in present_ctx):
            present_ctx = [(m, h) for m, h in present_ctx if m != "cpu_util_pct"]
        unit = next((cm.unit for c in cells if (cm := analysis.metric(c.cell_id, name))), "")
        of = statistic_label(results.statistic)
        headers = [
            "variant",
            "n",
            (f"{name} ({unit})" if unit else name) + of,
            "± sd",
            "CV %",
            f"loss % [{conf} CI]",
            "factor",
            *[h for _, h in present_ctx],
            "stop",
            "verdict",  # last: renderers style a row by its verdict
        ]
        rows, sig = [], []
        estimates: list[LossEstimate] = []
        for cell in cells:
            cm = analysis.metric(cell.cell_id, name)
            comp = analysis.comparison(cell.cell_id, name)
            failed = analysis.failed.get(cell.cell_id, 0)
            n = f"{cm.summary.n if cm else 0}" + (f" (+{failed} failed)" if failed else "")
            if cm is not None and cm.variance is not None:
                n += f" × {cm.variance.values_per_trial:.3g}"
            ctx_values = []
            for m, _ in present_ctx:
                ccm = analysis.metric(cell.cell_id, m)
                ctx_values.append(fmt_number(ccm.summary.mean, 3) if ccm else "–")
            if cell.is_baseline:
                verdict = "baseline"
            elif comp is None:
                verdict = "no baseline value to compare"
            else:
                # the guard of CPU studies: outside work, not the layer, may have made the difference
                contended = results.contention_verdict(cell)
                verdict = contended or short_verdict(comp)
                estimates.append(comp.loss)
            value = None
            if cm is not None:
                value = shown_value(cm.summary.mean, cm.summary.median, cm.values, results.statistic)
            rows.append(
                [
                    cell.variant,
                    n,
                    fmt_number(value),
                    fmt_number(cm.summary.stdev if cm else None, 2),
                    fmt_pct(cm.summary.cv if cm else None),
                    fmt_loss(comp) if not cell.is_baseline else "baseline",
                    fmt_factor(comp) if not cell.is_baseline else "–",
                    *ctx_values,
                    results.stop(cell.cell_id).label,
                    verdict,
                ]
            )
            sig.append(None if comp is None or verdict.startswith("contended") else comp.loss.significant)
        title = f"{workload}" + (f" ({point})" if point else "") + f": {name}"
        if results.shield:
            title += " · shielded (every trial in a top-weight cgroup)"
        direction = next((cm.direction for c in cells if (cm := analysis.metric(c.cell_id, name))), "")
        notes = [method_note(results, direction, estimates)]
        for cell in cells:
            notes += warnings_by_cell.get(cell.cell_id, [])
        tables.append(Table(title, headers, rows, notes, sig, workload=workload))
    return tables


def variance_tables(results: Results, metric: str | None = None) -> list[Table]:
    """Levels of variation for metrics with several values per trial: within-trial vs between-trial
    variance, and the cheapest (trials × values per trial) expected to reach the target half-width."""
    rows_by_group: dict[tuple[str, str, str], list[Any]] = {}
    for row in results.variance_rows(metric):
        rows_by_group.setdefault((row.cell.workload, row.cell.point_label, row.metric), []).append(row)
    tables = []
    for (workload, point, name), vrows in rows_by_group.items():
        target = vrows[0].target
        headers = [
            "variant",
            "trials × values",
            "sd within",
            "sd between",
            "between share",
            f"cheapest for ±{target:.1%}",
            "expected cost",
        ]
        rows = []
        notes = []
        for r in vrows:
            design = r.design
            rows.append(
                [
                    r.cell.variant,
                    f"{r.trials} × {r.values_per_trial:.3g}",
                    fmt_number(math.sqrt(r.var_within), 3),
                    fmt_number(math.sqrt(r.var_between), 3),
                    fmt_pct(r.share_between) + "%" if not math.isnan(r.share_between) else "–",
                    f"{design.trials} trials × {design.values_per_trial} values" if design else "–",
                    f"{design.cost_s:,.0f} s" if design else "–",
                ]
            )
            if design and design.assumption and design.assumption not in notes:
                notes.append(f"costs {design.assumption}")
        notes.insert(
            0,
            "variance components from a one-way random-effects ANOVA over each trial's values; the design"
            " minimises trials × (start-up + values × time per value) (Kalibera & Jones 2013)",
        )
        title = f"{workload}" + (f" ({point})" if point else "") + f": levels of variation of {name}"
        tables.append(Table(title, headers, rows, notes, [None] * len(rows), workload=workload))
    return tables


StudyTables = Callable[["Results"], list[Table]]
# every module of nearmetal.report.studies registers its ``tables(results)`` with ``@study_table``
STUDY_TABLES: Registry[StudyTables] = Registry("study table", packages=("nearmetal.report.studies",))


def study_table(fn: StudyTables) -> StudyTables:
    """Register a study's ``tables(results) -> list[Table]`` (named by its module)."""
    return STUDY_TABLES.add(fn.__module__.rpartition(".")[2], fn)


def study_tables(results: Results) -> list[Table]:
    """Every registered study's tables for the run ([] from a study whose shape the run does not have).
    A study whose tables fail costs its own tables only."""
    import logging

    out: list[Table] = []
    for name, tables in STUDY_TABLES.items():
        try:
            out += tables(results)
        except Exception:  # a study table must never cost the report
            logging.getLogger(__name__).warning("study tables of %s failed", name, exc_info=True)
    return out
