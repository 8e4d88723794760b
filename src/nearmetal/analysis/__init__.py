"""Analysis: pure functions over arrays (no I/O)."""

from nearmetal.analysis.run import CellInfo, CellMetric, Comparison, RunAnalysis, analyse
from nearmetal.analysis.stats import LossEstimate, Summary, describe_loss, loss_interval, summarize

__all__ = [
    "CellInfo",
    "CellMetric",
    "Comparison",
    "LossEstimate",
    "RunAnalysis",
    "Summary",
    "analyse",
    "describe_loss",
    "loss_interval",
    "summarize",
]
