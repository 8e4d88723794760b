"""Doctor findings in a report: each stored finding under the loss tables whose kind of loss it can explain (a
CPU quota under throughput and time tables, a severed FUSE mount under I/O tables), the rest on their own."""

from __future__ import annotations

from typing import Any

from nearmetal.api import Results
from nearmetal.report.tables import Table

# which kinds of loss a table shows, from its metric's name (see doctor.base.CheckInfo.explains)
_IO_MARKERS = ("bw_", "iops", "clat", "lat_", "read", "write", "fsync")
_NET_MARKERS = ("rtt", "gbps", "mbps", "bitrate", "latency", "pingpong", "allreduce")


def loss_kinds(metric: str) -> set[str]:
    name = metric.lower()
    kinds = {"variance", "cpu"}
    if any(m in name for m in _IO_MARKERS):
        kinds.add("io")
    if any(m in name for m in _NET_MARKERS):
        kinds.add("network")
    return kinds


def stored_findings(results: Results, min_severity: str = "info") -> list[dict[str, Any]]:
    """Findings ``nearmetal doctor --for RUN`` attached to this run, worst first (``ok`` ones left out)."""
    from nearmetal.findings import SEVERITY_ORDER

    limit = SEVERITY_ORDER[min_severity]
    found = [
        f for f in results.store.findings(results.run_id) if SEVERITY_ORDER.get(f["severity"], 3) <= limit
    ]
    return sorted(found, key=lambda f: SEVERITY_ORDER.get(f["severity"], 3))


def finding_line(finding: dict[str, Any]) -> str:
    line = f"[{finding['severity']}] {finding['check_id']}: {finding['title']}"
    if finding.get("fix"):
        line += f" — fix: {finding['fix']}"
    return line


def attach_findings(tables: list[Table], results: Results) -> list[str]:
    """Put each stored doctor finding under the loss tables whose kind of loss it can explain (a CPU quota
    under throughput/time tables, a severed FUSE mount under I/O tables …); returns the findings that
    explain no table (failed trials, start-up), for a section of their own."""
    from nearmetal.doctor import CHECK_INFO

    findings = stored_findings(results)
    unplaced: list[str] = []
    for finding in findings:
        info = CHECK_INFO.get(finding["check_id"])
        explains = set(info.explains) if info and info.explains else None
        placed = False
        for table in tables:
            metric = table.title.rsplit(": ", 1)[-1]
            if explains is None or explains & loss_kinds(metric):
                table.findings.append(finding_line(finding))
                placed = True
        if not placed:
            unplaced.append(finding_line(finding))
    return unplaced
