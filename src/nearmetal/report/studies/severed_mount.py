"""The severed-mount study's tables (``studies/severed-mount.yaml``, seed 001: a FUSE mount whose daemon is killed: left severed, remounted, or healed by a watchdog):
availability and recovery of its ``io-probe`` cells with intervals over repeats (``report/availability.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nearmetal.report.availability import availability_tables
from nearmetal.report.tables import Table, study_table

if TYPE_CHECKING:
    from nearmetal.api import Results


@study_table
def tables(results: Results) -> list[Table]:
    return availability_tables(results, "io-probe")
