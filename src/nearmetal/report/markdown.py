"""The same tables as Markdown, ready for a blog post or an issue."""

from __future__ import annotations

from nearmetal.api import Results
from nearmetal.report.tables import attach_findings, failure_lines, loss_tables, run_header


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def markdown_report(results: Results, metric: str | None = None) -> str:
    lines = [f"# nearmetal run `{results.run.id}`: {results.run.name}", ""]
    for key, value in run_header(results):
        lines.append(f"- **{key}**: {_escape(value)}")
    tables = loss_tables(results, metric)
    other_findings = attach_findings(tables, results)
    for table in tables:
        lines += ["", f"## {table.title}", ""]
        lines.append("| " + " | ".join(_escape(h) for h in table.headers) + " |")
        aligns = ["---" if i in (0, len(table.headers) - 1) else "---:" for i in range(len(table.headers))]
        lines.append("| " + " | ".join(aligns) + " |")
        for row in table.rows:
            lines.append("| " + " | ".join(_escape(c) for c in row) + " |")
        for note in table.notes:
            lines += ["", f"_{note}_"]
        if table.findings:
            lines += ["", "Possible causes found by `nearmetal doctor`:", ""]
            lines += [f"- {_escape(f)}" for f in table.findings]
    if other_findings:
        lines += ["", "## Other doctor findings", "", *[f"- {_escape(f)}" for f in other_findings]]
    failures = failure_lines(results)
    if failures:
        lines += ["", "## Failed trials", "", *[f"- {_escape(f)}" for f in failures]]
    return "\n".join(lines) + "\n"
