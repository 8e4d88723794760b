"""Reports: terminal tables, Markdown (and, later, HTML and exports) from a stored run."""

from nearmetal.report.markdown import markdown_report
from nearmetal.report.tables import Table, loss_tables
from nearmetal.report.terminal import print_report

__all__ = ["Table", "loss_tables", "markdown_report", "print_report"]
