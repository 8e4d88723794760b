"""A whole run's analysis: per-cell summaries and every variant's loss against the baseline.

The input is a ``MeasuredTable``: every metric of every trial as numpy columns (the store fills it with one
SQL query per table). Summaries of every (cell, metric) come from a few sorts over all values at once;
intervals come from one batched bootstrap for all comparisons (see ``bootstrap.py``). By default only each
workload's primary metric gets an interval (that is the figure every table leads with); ``interval_metrics``
asks for more, or ``"all"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nearmetal.analysis.bootstrap import Interval, Sample, statistic_intervals
from nearmetal.analysis.estimate import loss_intervals, paired_loss_intervals
from nearmetal.analysis.family import family_adjust
from nearmetal.analysis.floor import own_floor_interval
from nearmetal.analysis.loss import LossEstimate
from nearmetal.analysis.paired import infer_resolution
from nearmetal.analysis.summary import DEFAULT_OUTLIER_K, Summary, grouped_statistics
from nearmetal.analysis.variance import VarianceComponents, variance_components
from nearmetal.labels import cell_key, point_label


@dataclass(frozen=True)
class CellInfo:
    cell_id: str
    workload: str
    kind: str
    variant: str
    point: dict[str, Any]
    comparison_key: str
    is_baseline: bool
    primary_metric: str = "wall_s"

    @property
    def point_label(self) -> str:
        return point_label(self.point)

    @property
    def key(self) -> str:
        return cell_key(self.workload, self.variant, self.point)


@dataclass
class CellMetric:
    cell: CellInfo
    metric: str
    unit: str
    direction: str
    values: np.ndarray  # one value per measured trial (the trial's mean when it has several), trial order
    summary: Summary
    trial_ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    outlier_trial_ids: list[int] = field(default_factory=list)  # flagged by median ± k·MAD, kept
    sample: Sample | None = None  # what the bootstrap resamples (two levels when values per trial exist)
    variance: VarianceComponents | None = None  # within vs between trials, for multi-valued metrics
    interval: Interval | None = None  # interval of the cell's own statistic (cells with no comparison)
    blocks: np.ndarray | None = None  # the block of each value (None when the run's blocks are unknown)

    @property
    def relative_half_width(self) -> float | None:
        """Half-width of the cell's own interval relative to its estimate (for cells not compared)."""
        iv = self.interval
        if iv is None or iv.low is None or iv.high is None or iv.estimate == 0:
            return None
        return (iv.high - iv.low) / 2 / abs(iv.estimate)


@dataclass
class Comparison:
    """A variant's loss against the baseline for one metric at one matrix point."""

    cell: CellInfo
    baseline: CellInfo
    metric: str
    unit: str
    direction: str
    variant_summary: Summary
    baseline_summary: Summary
    loss: LossEstimate


@dataclass(frozen=True)
class AnalysisConfig:
    confidence: float = 0.95
    resamples: int = 9999
    seed: int = 0
    statistic: str = "mean"  # mean | median | floor (ratio of the cells' 10th percentiles: ``floor.py``)
    outlier_k: float = DEFAULT_OUTLIER_K
    cv_warning: float = 0.05
    # metrics that get an interval: None = each cell's primary metric; "all"; or names (plus the primary)
    interval_metrics: tuple[str, ...] | str | None = None
    # compare a variant with its baseline block by block (interleaved or random order); False: sequential
    paired: bool = True
    # adaptive repeats: the blocks run before the stop rule could act (the paired interval is then hulled
    # with Stein's, whose spread comes from those blocks only); None for a fixed number of repeats
    first_stage: int | None = None
    # family-wise control of the verdicts: "variants" (the rows of one table: every variant against the
    # same baseline), "all" (every row of a metric in the run) or "none" (each row alone)
    family: str = "variants"
    # metric name → the quantum its values are printed at (else inferred from the values)
    resolution: dict[str, float] = field(default_factory=dict)


@dataclass
class RunAnalysis:
    cells: list[CellInfo]
    metrics: dict[tuple[str, str], CellMetric] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)  # cell_id -> failed trials
    config: AnalysisConfig = field(default_factory=AnalysisConfig)
    _by_comparison: dict[tuple[str, str], Comparison] = field(default_factory=dict, repr=False)
    # (cell_id, metric) pairs whose loss was computed (or found impossible): others are computed on demand
    _compared: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def metric(self, cell_id: str, name: str) -> CellMetric | None:
        return self.metrics.get((cell_id, name))

    def comparison(self, cell_id: str, name: str) -> Comparison | None:
        """The loss of a cell's metric against its baseline; metrics that got no interval up front (not the
        primary one) are computed on first request, for every cell at once."""
        if (cell_id, name) not in self._compared and (cell_id, name) in self.metrics:
            self.compare_metric(name)
        if len(self._by_comparison) != len(self.comparisons):
            self._by_comparison = {(c.cell.cell_id, c.metric): c for c in self.comparisons}
        return self._by_comparison.get((cell_id, name))

    def compare_metric(self, name: str) -> None:
        """Losses of ``name`` for every cell not compared yet (one batched bootstrap)."""
        _compare(self, self.cells, {c.cell_id: {name} for c in self.cells})

    def metric_names(self, cell_id: str) -> list[str]:
        return sorted(name for cid, name in self.metrics if cid == cell_id)


@dataclass
class MeasuredTable:
    """A run's measured values as numpy columns.

    Trials: ``trial_id`` (sorted), ``trial_cell`` (index into ``cell_ids``), ``trial_ok`` (status ok),
    ``trial_warmup``. Metrics: ``metric_trial``, ``metric_code`` (index into ``names``/``units``/
    ``directions``), ``metric_value``, in trial order. Multi-valued metrics: ``series_trial``,
    ``series_code``, ``series_value``, ordered by trial, metric and position."""

    cell_ids: list[str]
    trial_id: np.ndarray
    trial_cell: np.ndarray
    trial_ok: np.ndarray
    trial_warmup: np.ndarray
    names: list[str]
    units: list[str]
    directions: list[str]
    metric_trial: np.ndarray
    metric_code: np.ndarray
    metric_value: np.ndarray
    series_trial: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    series_code: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    series_value: np.ndarray = field(default_factory=lambda: np.array([], dtype=float))
    # the block each trial ran in (interleaved order: one trial of every cell per block); None = unknown
    trial_block: np.ndarray | None = None

    @classmethod
    def from_columns(cls, table: dict[str, np.ndarray]) -> MeasuredTable:
        """From ``Store.metric_table``'s older shape (one row per metric with object columns)."""
        if table["value"].size == 0:
            empty = np.array([], dtype=np.int64)
            return cls([], empty, empty, empty.astype(bool), empty.astype(bool), [], [], [], empty, empty,
                       empty.astype(float))  # fmt: skip
        trial_ids, first = np.unique(table["trial_id"], return_index=True)
        cell_ids, trial_cell = np.unique(table["cell_id"][first].astype(str), return_inverse=True)
        names, codes = np.unique(table["name"].astype(str), return_inverse=True)
        _, name_first = np.unique(codes, return_index=True)
        return cls(
            cell_ids=[str(c) for c in cell_ids],
            trial_id=trial_ids.astype(np.int64),
            trial_cell=trial_cell.astype(np.int64),
            trial_ok=(table["status"][first] == "ok").astype(bool),
            trial_warmup=table["is_warmup"][first].astype(bool),
            names=[str(n) for n in names],
            units=[str(table["unit"][i]) for i in name_first],
            directions=[str(table["direction"][i]) for i in name_first],
            metric_trial=table["trial_id"].astype(np.int64),
            metric_code=codes.astype(np.int64),
            metric_value=table["value"].astype(float),
        )

    def trial_index(self, trial_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.trial_id, trial_ids)


def _interval_metric_names(
    cells: Sequence[CellInfo], names: list[str], wanted: tuple[str, ...] | str | None
) -> dict[str, set[str]]:
    """cell_id → metric names that get an interval."""
    out = {}
    for cell in cells:
        chosen = {cell.primary_metric}
        if wanted == "all":
            chosen |= set(names)
        elif wanted:
            chosen |= set(wanted)
        out[cell.cell_id] = chosen
    return out


def analyse(
    table: MeasuredTable | dict[str, np.ndarray],
    cells: list[CellInfo],
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
    metrics: list[str] | str | None = None,
    statistic: str = "mean",
    outlier_k: float = DEFAULT_OUTLIER_K,
    cv_warning: float = 0.05,
    own_intervals: bool = True,
    paired: bool = True,
    first_stage: int | None = None,
    family: str = "variants",
    resolution: dict[str, float] | None = None,
) -> RunAnalysis:
    """Summaries of every cell and metric; losses of every non-baseline cell against the baseline cell with
    the same workload and matrix point, with intervals for each cell's primary metric plus ``metrics``
    (names, or "all"). ``own_intervals``: cells nothing is compared with get an interval on their own
    statistic (the stop rule of single-variant plans uses its relative half-width). ``paired``: compare
    block by block where the table knows the blocks; ``first_stage``, ``family``, ``resolution``: see
    ``AnalysisConfig``."""
    if isinstance(table, dict):
        table = MeasuredTable.from_columns(table)
    wanted: tuple[str, ...] | str | None = (
        metrics if isinstance(metrics, str) or metrics is None else tuple(metrics)
    )
    config = AnalysisConfig(
        confidence, resamples, seed, statistic, outlier_k, cv_warning, wanted, paired, first_stage, family,
        dict(resolution or {}),
    )  # fmt: skip
    result = RunAnalysis(cells=cells, config=config)
    if table.trial_id.size == 0:
        return result

    # failed trials per cell (warm-ups are never counted)
    bad = ~table.trial_ok & ~table.trial_warmup
    for code, count in zip(*np.unique(table.trial_cell[bad], return_counts=True), strict=True):
        result.failed[table.cell_ids[int(code)]] = int(count)

    # measured values: successful, non-warm-up trials
    trial_pos = table.trial_index(table.metric_trial)
    keep = table.trial_ok[trial_pos] & ~table.trial_warmup[trial_pos]
    trial_pos = trial_pos[keep]
    cell_code = table.trial_cell[trial_pos]
    metric_code = table.metric_code[keep]
    values = table.metric_value[keep]
    trial_ids = table.metric_trial[keep]
    value_blocks = table.trial_block[trial_pos] if table.trial_block is not None else None
    n_names = len(table.names)
    keys = cell_code * n_names + metric_code
    group_keys, groups = np.unique(keys, return_inverse=True)
    n_groups = group_keys.size
    stats = grouped_statistics(values, groups, n_groups, outlier_k)
    order = np.argsort(groups, kind="stable")  # keeps trial order within each group
    bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))
    flagged = stats["outlier"]

    by_id = {c.cell_id: c for c in cells}
    # plain Python numbers once for all groups: one Summary per (cell, metric), no numpy scalar per field
    columns = [
        stats[k].tolist() for k in ("n", "mean", "median", "stdev", "cv", "min", "max", "mad", "outliers")
    ]
    starts, ends = bounds[:-1].tolist(), bounds[1:].tolist()
    has_outliers = (stats["outliers"] > 0).tolist()
    for g, key in enumerate(group_keys.tolist()):
        cid = table.cell_ids[key // n_names]
        code = key % n_names
        cell = by_id.get(cid)
        if cell is None:
            continue
        idx = order[starts[g] : ends[g]]
        summary = Summary(*(col[g] for col in columns))
        outlier_ids = [int(t) for t in trial_ids[idx][flagged[idx]]] if has_outliers[g] else []
        result.metrics[(cid, table.names[code])] = CellMetric(
            cell,
            table.names[code],
            table.units[code],
            table.directions[code],
            values[idx],
            summary,
            trial_ids[idx],
            outlier_ids,
            blocks=value_blocks[idx] if value_blocks is not None else None,
        )

    interval_names = _interval_metric_names(cells, table.names, wanted)
    _attach_samples(result, table)
    _compare(result, cells, interval_names)
    if own_intervals:
        _own_intervals(result, cells)
    return result


def _attach_samples(result: RunAnalysis, table: MeasuredTable) -> None:
    """What the bootstrap resamples: trial values, or values within trials for multi-valued metrics."""
    series: dict[tuple[str, str], Sample] = {}
    if table.series_value.size:
        pos = table.trial_index(table.series_trial)
        keep = table.trial_ok[pos] & ~table.trial_warmup[pos]
        s_trial, s_code, s_value = table.series_trial[keep], table.series_code[keep], table.series_value[keep]
        s_cell = table.trial_cell[pos[keep]]
        n_names = len(table.names)
        # rows arrive ordered by trial, metric, position: group by (cell, metric) keeping that order
        keys = s_cell * n_names + s_code
        group_keys, groups = np.unique(keys, return_inverse=True)
        order = np.argsort(groups, kind="stable")
        bounds = np.searchsorted(groups[order], np.arange(group_keys.size + 1))
        for g, key in enumerate(group_keys):
            cid = table.cell_ids[int(key) // n_names]
            name = table.names[int(key) % n_names]
            idx = order[bounds[g] : bounds[g + 1]]
            _, sizes = np.unique(s_trial[idx], return_counts=True)  # trial ids ascending = trial order
            series[(cid, name)] = Sample.of(s_value[idx], sizes)
    for (cid, name), cm in result.metrics.items():
        nested = series.get((cid, name))
        if nested is not None and nested.n_trials == cm.summary.n:
            cm.variance = variance_components(nested)
            if nested.hierarchical:
                cm.sample = nested
                continue
        cm.sample = Sample.of(cm.values)


# a paired comparison needs at least this many blocks with both trials, and at least this share of the
# trials of the smaller side (else the unpaired form uses every trial, and says why)
MIN_PAIRS = 3
MIN_PAIRED_SHARE = 0.5


def _per_block(cm: CellMetric) -> tuple[np.ndarray, np.ndarray]:
    """(blocks, mean value per block) of a cell; a block normally holds one trial of each cell."""
    assert cm.blocks is not None
    blocks, inverse = np.unique(cm.blocks, return_inverse=True)
    sums = np.bincount(inverse, weights=cm.values, minlength=blocks.size)
    return blocks, sums / np.bincount(inverse, minlength=blocks.size)


def block_pairs(
    variant: CellMetric, baseline: CellMetric
) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """(variant, baseline) values of the blocks that hold both, in block order, or None and why the pair
    is not paired."""
    if variant.blocks is None or baseline.blocks is None:
        return None, "the trials' blocks are not known"
    if (variant.values <= 0).any() or (baseline.values <= 0).any():
        return None, "values ≤ 0 have no log ratio"
    v_blocks, v_values = _per_block(variant)
    b_blocks, b_values = _per_block(baseline)
    common, v_at, b_at = np.intersect1d(v_blocks, b_blocks, return_indices=True)
    smaller = min(v_blocks.size, b_blocks.size)
    if common.size < MIN_PAIRS or common.size < MIN_PAIRED_SHARE * smaller:
        return None, f"only {common.size} of {smaller} blocks have a trial of both cells"
    return (v_values[v_at], b_values[b_at]), ""


def block_log_ratios(variant: CellMetric, baseline: CellMetric) -> tuple[np.ndarray | None, str]:
    """Per-block log ratios variant/baseline in block order, or None and why the pair is not paired."""
    pair, why = block_pairs(variant, baseline)
    if pair is None:
        return None, why
    return np.log(pair[0]) - np.log(pair[1]), ""


def comparison_resolution(variant: CellMetric, baseline: CellMetric, stated: float | None = None) -> float:
    """The quantum a comparison's values were printed at: the plan's ``analysis.resolution`` for the metric,
    else inferred from the values of both cells (``paired.infer_resolution``)."""
    if stated is not None:
        return float(stated)
    return infer_resolution(np.concatenate([variant.values, baseline.values]))


def baseline_of_own_blocks(variant: CellMetric, baseline: CellMetric) -> tuple[Sample, str]:
    """The baseline's values from the blocks the variant ran in (its first to its last): a variant that
    stopped early is never compared with baseline trials run after it stopped."""
    base = baseline.sample or Sample.of(baseline.values)
    if variant.blocks is None or baseline.blocks is None or not variant.blocks.size:
        return base, ""
    first, last = int(variant.blocks.min()), int(variant.blocks.max())
    inside = (baseline.blocks >= first) & (baseline.blocks <= last)
    if inside.all() or inside.sum() < 2:
        return base, ""
    note = f"baseline trials of blocks {first}–{last} only (the variant's)"
    return Sample.of(baseline.values[inside]), note


def _compare(result: RunAnalysis, cells: list[CellInfo], interval_names: dict[str, set[str]]) -> None:
    baselines = {c.comparison_key: c for c in cells if c.is_baseline}
    pairs: list[tuple[CellInfo, CellInfo, CellMetric, CellMetric]] = []
    for cell in cells:
        base = baselines.get(cell.comparison_key)
        for name in sorted(interval_names.get(cell.cell_id, ())):
            if (cell.cell_id, name) in result._compared:
                continue
            result._compared.add((cell.cell_id, name))
            if cell.is_baseline or base is None:
                continue
            var_m = result.metrics.get((cell.cell_id, name))
            base_m = result.metrics.get((base.cell_id, name))
            if var_m is None or base_m is None:
                continue
            pairs.append((cell, base, var_m, base_m))
    if not pairs:
        return
    cfg = result.config
    paired_idx: list[int] = []
    block_values: list[tuple[np.ndarray, np.ndarray]] = []
    unpaired_idx: list[int] = []
    variants, bases, notes, quanta = [], [], [], []
    for i, (_, _, vm, bm) in enumerate(pairs):
        d, why = block_pairs(vm, bm) if cfg.paired else (None, "sequential order")
        if d is not None:
            paired_idx.append(i)
            block_values.append(d)
            continue
        unpaired_idx.append(i)
        base_sample, restricted = baseline_of_own_blocks(vm, bm)
        variants.append(vm.sample or Sample.of(vm.values))
        bases.append(base_sample)
        notes.append("; ".join(x for x in (f"unpaired: {why}", restricted) if x))
        quanta.append(comparison_resolution(vm, bm, cfg.resolution.get(vm.metric)))
    estimates: dict[int, LossEstimate] = {}
    if paired_idx:
        found = paired_loss_intervals(
            block_values,
            [pairs[i][2].direction for i in paired_idx],
            cfg.confidence,
            cfg.first_stage,
            [pairs[i][2].variance is not None or pairs[i][3].variance is not None for i in paired_idx],
            statistic=cfg.statistic,
            resolutions=[
                comparison_resolution(pairs[i][2], pairs[i][3], cfg.resolution.get(pairs[i][2].metric))
                for i in paired_idx
            ],
            seed=cfg.seed,
        )
        estimates.update(zip(paired_idx, found, strict=True))
    if unpaired_idx:
        found = loss_intervals(
            variants,
            bases,
            [pairs[i][2].direction for i in unpaired_idx],
            cfg.confidence,
            cfg.resamples,
            cfg.seed,
            cfg.statistic,
            notes=notes,
            resolutions=quanta,
        )
        estimates.update(zip(unpaired_idx, found, strict=True))
    # family-wise control: Holm over the rows a reader reads together (``analysis.family``)
    if cfg.family != "none":
        families: dict[tuple[str, str], list[int]] = {}
        for i, (_, base, vm, _) in enumerate(pairs):
            key = (vm.metric, base.cell_id if cfg.family == "variants" else "")
            families.setdefault(key, []).append(i)
        for members in families.values():
            adjusted = family_adjust([estimates[i] for i in members])
            estimates.update(zip(members, adjusted, strict=True))
    for i, (cell, base, vm, bm) in enumerate(pairs):
        result.comparisons.append(
            Comparison(cell, base, vm.metric, vm.unit, vm.direction, vm.summary, bm.summary, estimates[i])
        )


def _own_intervals(result: RunAnalysis, cells: list[CellInfo]) -> None:
    compared = {c.cell.cell_id for c in result.comparisons} | {c.baseline.cell_id for c in result.comparisons}
    todo = [
        cm
        for cell in cells
        if cell.cell_id not in compared
        and (cm := result.metrics.get((cell.cell_id, cell.primary_metric))) is not None
    ]
    if not todo:
        return
    cfg = result.config
    if cfg.statistic == "floor":
        for cm in todo:
            cm.interval = own_floor_interval(cm.values, cfg.confidence, cfg.seed, cfg.resamples)
        return
    intervals = statistic_intervals(
        [Sample.of(cm.values) for cm in todo],
        cfg.statistic,
        cfg.confidence,
        cfg.resamples,
        cfg.seed,
    )
    for cm, iv in zip(todo, intervals, strict=True):
        cm.interval = iv
