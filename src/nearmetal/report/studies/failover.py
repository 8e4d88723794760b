"""The failover study's tables (``studies/failover.yaml``, seed 001: two clusters behind a load balancer, one killed or scaled to zero):
availability and recovery of its ``http-load`` cells with intervals over repeats (``report/availability.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nearmetal.report.availability import availability_tables
from nearmetal.report.tables import Table, study_table

if TYPE_CHECKING:
    from nearmetal.api import Results


@study_table
def tables(results: Results) -> list[Table]:
    return availability_tables(results, "http-load")
