"""Analysis: pure functions over arrays (no I/O)."""

from nearmetal.analysis.bootstrap import Interval, Sample, ratio_intervals, statistic_intervals
from nearmetal.analysis.estimate import fieller_ratio, loss_interval, loss_intervals
from nearmetal.analysis.loss import LossEstimate, describe_loss
from nearmetal.analysis.run import (
    AnalysisConfig,
    CellInfo,
    CellMetric,
    Comparison,
    MeasuredTable,
    RunAnalysis,
    analyse,
)
from nearmetal.analysis.summary import Summary, outlier_mask, summarize
from nearmetal.analysis.variance import Design, VarianceComponents, cheapest_design, variance_components

__all__ = [
    "AnalysisConfig",
    "CellInfo",
    "CellMetric",
    "Comparison",
    "Design",
    "Interval",
    "LossEstimate",
    "MeasuredTable",
    "RunAnalysis",
    "Sample",
    "Summary",
    "VarianceComponents",
    "analyse",
    "cheapest_design",
    "describe_loss",
    "fieller_ratio",
    "loss_interval",
    "loss_intervals",
    "outlier_mask",
    "ratio_intervals",
    "statistic_intervals",
    "summarize",
    "variance_components",
]
