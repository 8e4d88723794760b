"""The shapes of seed 001's GPU-sharing tables, as pure functions over arrays (no I/O).

- time slicing (part 4): per-process and aggregate (per process × k) value for passthrough and shared ×k,
  loss vs passthrough, and the "expected ×2k = 2 × ×k" table;
- partitions (part 5): value per partition, the ratio between neighbouring partitions next to the ideal
  ratio of their resources, and "partitioning enabled with one full-size partition" vs disabled;
- distributed scaling (part 6): time per epoch vs workers, T(n)/T(2n) next to the ideal 2;
- topology (part 6): placements canonicalised ("0 0 2 1 1 1 3" and "3 2 1 1 1" are both "1 1 1 2 3"), per
  topology n, mean, spread and interval, ranked by mean and by stability, and the variance split into
  within-job (epochs) and between-job parts.

Every ratio comes with the bootstrap interval of ``estimate.loss_interval`` (ratio of means, BCa).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from nearmetal.analysis.bootstrap import Sample
from nearmetal.analysis.estimate import loss_interval
from nearmetal.analysis.loss import LossEstimate
from nearmetal.analysis.summary import Summary, summarize
from nearmetal.analysis.variance import VarianceComponents, variance_components

# re-exported: the topology tables (report/studies) find them here
from nearmetal.topology import canonical_topology as canonical_topology
from nearmetal.topology import topology_of as topology_of


# --- ratios with intervals ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RatioEstimate:
    """mean(numerator) / mean(denominator) with its interval (None when too few values)."""

    ratio: float
    low: float | None
    high: float | None
    confidence: float
    method: str


def ratio_interval(
    numerator: np.ndarray,
    denominator: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> RatioEstimate:
    """The ratio of means with the same bootstrap interval the loss tables use (a "lower is better" loss
    is exactly ratio − 1, so the interval is shifted back by one)."""
    est = loss_interval(numerator, denominator, "lower", confidence, resamples, seed)
    low = None if est.low is None else est.low + 1.0
    high = None if est.high is None else est.high + 1.0
    return RatioEstimate(est.loss + 1.0, low, high, est.confidence, est.method)


def speedup_interval(
    bigger: np.ndarray,
    smaller: np.ndarray,
    direction: str,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> RatioEstimate:
    """How many times better ``bigger`` performs than ``smaller``: throughput(big)/throughput(small) when
    higher is better, time(small)/time(big) when lower is better (the seed's "3g.20gb / 7g.40gb")."""
    if direction == "higher":
        return ratio_interval(bigger, smaller, confidence, resamples, seed)
    return ratio_interval(smaller, bigger, confidence, resamples, seed)


def _finite(values: Iterable[float]) -> np.ndarray:
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    return np.asarray(v[np.isfinite(v)])


# --- time slicing --------------------------------------------------------------------------------------
@dataclass
class SharingLevel:
    """The measured copy's values at one sharing level: passthrough, or shared by ``copies`` processes."""

    copies: int
    values: np.ndarray
    passthrough: bool = False

    @property
    def label(self) -> str:
        return "passthrough" if self.passthrough else f"shared ×{self.copies}"


def aggregate_factor(copies: int, direction: str) -> float:
    """Per process → all processes: a throughput multiplies by k; a time for a fixed amount of work divides
    by k (k jobs done in that time)."""
    return float(copies) if direction == "higher" else 1.0 / copies


@dataclass
class SlicingRow:
    level: SharingLevel
    per_process: Summary
    aggregate: float  # per process × k (throughput) or per process / k (time)
    loss: LossEstimate | None  # aggregate vs passthrough; None for the passthrough row itself


def time_slicing_rows(
    levels: Sequence[SharingLevel],
    direction: str,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> list[SlicingRow]:
    """Seed part 4's table: per process, aggregate, and the aggregate's loss vs passthrough (direction-aware,
    positive = sharing costs). Without a passthrough level the ×1 level is the reference."""
    ordered = sorted(levels, key=lambda lv: (not lv.passthrough, lv.copies))
    if not ordered:
        return []
    reference = next((lv for lv in ordered if lv.passthrough), None) or ordered[0]
    ref_values = _finite(reference.values) * aggregate_factor(reference.copies, direction)
    rows = []
    for level in ordered:
        values = _finite(level.values)
        factor = aggregate_factor(level.copies, direction)
        summary = summarize(values)
        loss = None
        if level is not reference:
            loss = loss_interval(values * factor, ref_values, direction, confidence, resamples, seed)
        rows.append(SlicingRow(level, summary, summary.mean * factor, loss))
    return rows


@dataclass
class DoublingRow:
    """Shared ×k → ×2k: what ×2k would be if sharing cost nothing more (2 × the ×k time, half the ×k
    throughput) against what it was."""

    copies: int
    doubled: int
    base: Summary
    expected: float
    actual: Summary
    loss: LossEstimate


def doubling_rows(
    levels: Sequence[SharingLevel],
    direction: str,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> list[DoublingRow]:
    """The "expected ×2k = 2 × ×k" table for every k whose 2k was measured too."""
    shared = {lv.copies: lv for lv in levels if not lv.passthrough}
    rows = []
    for k in sorted(shared):
        if 2 * k not in shared:
            continue
        base = _finite(shared[k].values)
        actual = _finite(shared[2 * k].values)
        expected_values = base * 2.0 if direction == "lower" else base / 2.0
        loss = loss_interval(actual, expected_values, direction, confidence, resamples, seed)
        rows.append(
            DoublingRow(k, 2 * k, summarize(base), float(np.mean(expected_values)), summarize(actual), loss)
        )
    return rows


# --- partitions ----------------------------------------------------------------------------------------
@dataclass
class Partition:
    """One partition size: a MIG profile (resources = compute slices) or a cpuset (resources = CPUs)."""

    label: str
    resources: float
    values: np.ndarray


@dataclass
class PartitionRatioRow:
    bigger: Partition
    smaller: Partition
    speedup: RatioEstimate  # how many times better the bigger partition performs
    ideal: float  # ratio of resources (7/3, 3/2, 2/1 for MIG; CPU counts for cpusets)

    @property
    def efficiency(self) -> float:
        """Measured speed-up as a fraction of the ideal (1.0 = perfectly linear)."""
        return self.speedup.ratio / self.ideal


def partition_ratios(
    partitions: Sequence[Partition],
    direction: str,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> list[PartitionRatioRow]:
    """Ratios between neighbouring partition sizes (largest first), each next to its ideal ratio."""
    ordered = sorted(partitions, key=lambda p: -p.resources)
    rows = []
    for bigger, smaller in itertools.pairwise(ordered):
        if bigger.resources == smaller.resources:
            continue
        speedup = speedup_interval(
            _finite(bigger.values), _finite(smaller.values), direction, confidence, resamples, seed
        )
        rows.append(PartitionRatioRow(bigger, smaller, speedup, bigger.resources / smaller.resources))
    return rows


@dataclass
class EnabledVsDisabled:
    """ "Partitioning enabled with one full-size partition" vs "disabled": measured loss and the loss the
    lost resources predict (A100-40GB: 10 of 108 SMs = 9.26%; a cpuset of every CPU: 0%)."""

    loss: LossEstimate
    theoretical: float


def enabled_vs_disabled(
    enabled_full: np.ndarray,
    disabled: np.ndarray,
    direction: str,
    theoretical: float,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> EnabledVsDisabled:
    loss = loss_interval(_finite(enabled_full), _finite(disabled), direction, confidence, resamples, seed)
    return EnabledVsDisabled(loss, theoretical)


# --- distributed scaling -------------------------------------------------------------------------------
@dataclass
class ScalingPoint:
    """Time per epoch at one worker count (one value per job/trial); ``failure`` when it could not run
    (the seed's OOM at 96 MIG workers)."""

    workers: int
    values: np.ndarray
    failure: str | None = None


@dataclass
class ScalingRow:
    workers: int
    next_workers: int
    time: Summary
    next_time: Summary | None
    ratio: RatioEstimate | None  # T(n) / T(next n); None when either side failed
    ideal: float  # next n / n: 2 for doublings
    note: str = ""

    @property
    def efficiency(self) -> float | None:
        return None if self.ratio is None else self.ratio.ratio / self.ideal


def scaling_rows(
    points: Sequence[ScalingPoint], confidence: float = 0.95, resamples: int = 9999, seed: int = 0
) -> list[ScalingRow]:
    """T(n)/T(n') for consecutive worker counts (n' = 2n in the seed), next to the ideal n'/n."""
    ordered = sorted(points, key=lambda p: p.workers)
    rows = []
    for point, nxt in itertools.pairwise(ordered):
        time = summarize(_finite(point.values))
        next_time = None if nxt.failure else summarize(_finite(nxt.values))
        ratio = None
        note = ""
        if point.failure or nxt.failure:
            note = point.failure or nxt.failure or ""
        elif time.n and next_time is not None and next_time.n:
            ratio = ratio_interval(_finite(point.values), _finite(nxt.values), confidence, resamples, seed)
        rows.append(
            ScalingRow(point.workers, nxt.workers, time, next_time, ratio, nxt.workers / point.workers, note)
        )
    return rows


# --- topology ------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One job (trial): its topology and its epoch times."""

    topology: str
    values: np.ndarray


@dataclass
class TopologyRow:
    topology: str
    jobs: int
    epochs: int
    mean: float  # mean of the job means (jobs are the unit: between-job variation dominates)
    stdev: float  # between-job standard deviation of job means: the (in)stability
    minimum: float  # over every epoch, the seed's "range from 120 to 160 seconds"
    maximum: float
    low: float | None  # interval of the mean (Student t over job means); None with one job
    high: float | None
    rank_by_mean: int = 0
    rank_by_stability: int = 0  # 1 = the most uniform; jobs < 2 rank last (stability unknown)


def topology_rows(
    jobs: Sequence[Job], direction: str = "lower", confidence: float = 0.95
) -> list[TopologyRow]:
    """Per topology: n, mean, spread, interval; ranked by mean and by stability (spread of job means)."""
    groups: dict[str, list[np.ndarray]] = {}
    for job in jobs:
        values = _finite(job.values)
        if values.size:
            groups.setdefault(canonical_topology(job.topology), []).append(values)
    rows = []
    for topo, job_values in groups.items():
        means = np.array([v.mean() for v in job_values])
        every = np.concatenate(job_values)
        n = means.size
        stdev = float(means.std(ddof=1)) if n > 1 else float("nan")
        low = high = None
        if n > 1:
            half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * stdev / math.sqrt(n)
            low, high = float(means.mean() - half), float(means.mean() + half)
        rows.append(
            TopologyRow(
                topo,
                n,
                int(every.size),
                float(means.mean()),
                stdev,
                float(every.min()),
                float(every.max()),
                low,
                high,
            )
        )
    sign = 1.0 if direction == "lower" else -1.0
    for rank, row in enumerate(sorted(rows, key=lambda r: sign * r.mean), start=1):
        row.rank_by_mean = rank
    for rank, row in enumerate(
        sorted(rows, key=lambda r: (math.isnan(r.stdev), r.stdev if not math.isnan(r.stdev) else 0.0)),
        start=1,
    ):
        row.rank_by_stability = rank
    return sorted(rows, key=lambda r: r.rank_by_mean)


def variance_split(jobs: Sequence[np.ndarray]) -> VarianceComponents | None:
    """Within-job (epoch to epoch) and between-job (job to job, same inputs) variance of epoch times, from
    ``variance.variance_components`` (one-way random effects); None with fewer than two jobs or one value
    per job. Seed 001 part 6: "the epoch times at the job level do not vary significantly. The main
    distinction is seen between jobs"."""
    return variance_components(Sample.nested([_finite(j) for j in jobs]))
