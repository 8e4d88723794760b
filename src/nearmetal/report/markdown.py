"""The same tables as Markdown, ready for a blog post or an issue (GitHub-flavoured: pipe tables,
``<details>`` for the long parts). With ``--png DIR`` the figures are linked in beside their tables."""

from __future__ import annotations

import os
from pathlib import Path

from nearmetal.api import Results
from nearmetal.redact import redact_config_text, redact_text
from nearmetal.report.figures import FigureSpec
from nearmetal.report.tables import (
    Table,
    attach_findings,
    energy_table,
    failure_lines,
    loss_tables,
    run_header,
    study_tables,
    variance_tables,
)


def _escape(cell: str) -> str:
    return cell.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_escape(h) for h in table.headers) + " |"]
    aligns = [":---" if i in (0, len(table.headers) - 1) else "---:" for i in range(len(table.headers))]
    lines.append("| " + " | ".join(aligns) + " |")
    significance = table.significance or [None] * len(table.rows)
    for row, significant in zip(table.rows, significance, strict=True):
        cells = [_escape(c) for c in row]
        if significant:  # the verdicts a reader should look at first, as in the terminal table
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _link(path: Path, relative_to: Path | None) -> str:
    if relative_to is None:
        return path.as_posix()
    return Path(os.path.relpath(path.resolve(), relative_to.resolve())).as_posix()


def markdown_report(
    results: Results,
    metric: str | None = None,
    images: list[tuple[FigureSpec, Path]] | None = None,
    relative_to: Path | None = None,
    details: bool = True,
) -> str:
    """The run as Markdown. ``images`` are (figure, PNG path) pairs, linked relative to ``relative_to``;
    ``details`` adds the environment and the plan in collapsed sections."""
    run = results.run
    lines = [f"# nearmetal run `{run.id}`: {run.name}", ""]
    if run.description:
        lines += [_escape(run.description.strip()), ""]
    for key, value in run_header(results):
        lines.append(f"- **{key}**: {_escape(redact_text(value))}")
    tables = loss_tables(results, metric)
    other_findings = attach_findings(tables, results)
    tables += study_tables(results)
    images = images or []
    shown: set[Path] = set()
    for table in tables:
        lines += ["", f"## {table.title}", "", *markdown_table(table)]
        for note in table.notes:
            lines += ["", f"_{note}_"]
        if table.findings:
            lines += ["", "Possible causes found by `nearmetal doctor`:", ""]
            lines += [f"- {_escape(f)}" for f in table.findings]
        if table is [t for t in tables if t.workload == table.workload][-1]:
            # the workload's figures follow its last table
            for spec, path in images:
                if spec.section == table.workload and path not in shown:
                    shown.add(path)
                    lines += ["", f"![{_escape(spec.title)}]({_link(path, relative_to)})"]
    for table in variance_tables(results, metric):
        lines += ["", f"## {table.title}", "", *markdown_table(table)]
        for note in table.notes:
            lines += ["", f"_{_escape(note)}_"]
    rest = [(spec, path) for spec, path in images if path not in shown]
    if rest:
        lines += ["", "## Figures"]
        for spec, path in rest:
            lines += ["", f"![{_escape(spec.title)}]({_link(path, relative_to)})"]
    energy = energy_table(results)
    if energy:
        lines += ["", f"## {energy.title}", "", *markdown_table(energy)]
        lines += [line for note in energy.notes for line in ("", f"_{_escape(note)}_")]
    if other_findings:
        lines += ["", "## Other doctor findings", "", *[f"- {_escape(f)}" for f in other_findings]]
    failures = failure_lines(results)
    if failures:
        lines += ["", "## Failed trials", "", *[f"- {_escape(redact_text(f))}" for f in failures]]
    if details:
        env = sorted(results.environment.items())
        if env:
            lines += ["", "<details><summary>Environment</summary>", "", "| key | value |", "| :--- | :--- |"]
            lines += [f"| `{_escape(k)}` | {_escape(v)} |" for k, v in env]
            lines += ["", "</details>"]
        lines += [
            "",
            f"<details><summary>Plan ({_escape(run.plan_source)})</summary>",
            "",
            "```yaml",
            redact_config_text(run.plan_text).rstrip("\n").replace("```", "'''"),
            "```",
            "",
            "</details>",
        ]
    return "\n".join(lines) + "\n"
