"""What a report says, in the order every format shows it: the terminal, Markdown and HTML renderers draw
this one assembly (a format leaves out what it cannot show — the terminal has no figures — but never
reorders).

Order: the run's header; per workload its loss tables and the study tables of that workload (then its
figures); study tables across workloads; energy; levels of variation; figures of the whole run; failed
trials; doctor findings that explain no table; the environment; the plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nearmetal.report.doctor_findings import attach_findings
from nearmetal.report.energy import energy_table
from nearmetal.report.header import failure_lines, run_header
from nearmetal.report.tables import Table, loss_tables, study_tables, variance_tables

if TYPE_CHECKING:
    from nearmetal.api import Results


@dataclass
class Section:
    """The tables of one workload (``workload``), or study tables across workloads (``workload`` None)."""

    title: str
    workload: str | None
    tables: list[Table] = field(default_factory=list)


@dataclass
class ReportContent:
    header: list[tuple[str, str]]
    sections: list[Section]
    energy: Table | None
    variance: list[Table]
    failures: list[str]
    other_findings: list[str]
    environment: dict[str, str]
    workloads: list[str]

    @property
    def tables(self) -> list[Table]:
        """Every table of the sections, in order."""
        return [t for s in self.sections for t in s.tables]


def assemble(results: Results, metric: str | None = None, failure_limit: int = 10) -> ReportContent:
    tables = loss_tables(results, metric)
    other_findings = attach_findings(tables, results)
    tables += study_tables(results)
    workloads = list(dict.fromkeys(c.workload for c in results.cells))
    sections = [Section(w, w, [t for t in tables if t.workload == w]) for w in workloads]
    across = [t for t in tables if t.workload not in workloads]
    if across:
        sections.append(Section("Study tables", None, across))
    return ReportContent(
        header=run_header(results),
        sections=[s for s in sections if s.tables or s.workload is not None],
        energy=energy_table(results),
        variance=variance_tables(results, metric),
        failures=failure_lines(results, limit=failure_limit),
        other_findings=other_findings,
        environment=dict(sorted(results.environment.items())),
        workloads=workloads,
    )
