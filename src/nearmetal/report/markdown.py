"""The same tables as Markdown, ready for a blog post or an issue (GitHub-flavoured: pipe tables,
``<details>`` for the long parts). With ``--png DIR`` the figures are linked in beside their tables."""

from __future__ import annotations

import os
from pathlib import Path

from nearmetal.api import Results
from nearmetal.redact import redact_config_text, redact_text
from nearmetal.report.assemble import assemble
from nearmetal.report.figures import FigureSpec
from nearmetal.report.tables import (
    Table,
)
from nearmetal.textsafe import strip_controls

# ASCII punctuation that starts a block when it opens a line (heading, quote, list, link definition …)
_LINE_START = set("#>-+=*_`~[|<!")


def _escape(cell: str, line_start: bool = False) -> str:
    """Text from a plan or a store as Markdown that shows it and does nothing else: no raw HTML (``<``,
    ``>``, ``&`` become entities: no ``<script>``, ``<img onerror>``), no link or image (``](`` is broken:
    no ``![](http://…)`` loaded by the reader's browser), no emphasis or code spans, no table cell
    boundary (``|``), one line, control characters (ESC …) shown as ``\\xNN``. ``line_start``: the text
    opens a line, where its first character could start a block."""
    text = strip_controls(str(cell)).replace("\r", " ").replace("\n", " ").replace("\t", " ")
    text = text.replace("\\", "\\\\")
    for char in "|`*":
        text = text.replace(char, "\\" + char)
    text = text.replace("](", "\\](")  # an inline link or image needs "](" (a reference one, a line start)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if line_start and text[:1] in _LINE_START:
        text = "\\" + text
    return text


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
    content = assemble(results, metric)
    lines = [f"# nearmetal run {_escape(run.id)}: {_escape(run.name)}", ""]
    if run.description:
        lines += [_escape(run.description.strip(), line_start=True), ""]
    for key, value in content.header:
        lines.append(f"- **{_escape(key)}**: {_escape(redact_text(value))}")
    images = images or []
    shown: set[Path] = set()

    def add_table(table: Table) -> None:
        nonlocal lines
        lines += ["", f"## {_escape(table.title)}", "", *markdown_table(table)]
        lines += [line for note in table.notes for line in ("", f"_{_escape(note)}_")]
        if table.findings:
            lines += ["", "Possible causes found by `nearmetal doctor`:", ""]
            lines += [f"- {_escape(f, line_start=True)}" for f in table.findings]

    def add_images(chosen: list[tuple[FigureSpec, Path]]) -> None:
        for spec, path in chosen:
            if path not in shown:
                shown.add(path)
                lines.extend(["", f"![{_escape(spec.title)}]({_link(path, relative_to)})"])

    for section in content.sections:
        for table in section.tables:
            add_table(table)
        # the workload's figures follow its tables
        add_images(
            [(spec, path) for spec, path in images if section.workload and spec.section == section.workload]
        )
    for table in [*([content.energy] if content.energy else []), *content.variance]:
        add_table(table)
    rest = [(spec, path) for spec, path in images if path not in shown]
    if rest:
        lines += ["", "## Figures"]
        add_images(rest)
    if content.failures:
        lines += [
            "",
            "## Failed trials",
            "",
            *[f"- {_escape(redact_text(f), line_start=True)}" for f in content.failures],
        ]
    if content.other_findings:
        lines += [
            "",
            "## Other doctor findings",
            "",
            *[f"- {_escape(f, line_start=True)}" for f in content.other_findings],
        ]
    if details:
        if content.environment:
            lines += ["", "<details><summary>Environment</summary>", "", "| key | value |", "| :--- | :--- |"]
            lines += [f"| {_escape(k)} | {_escape(v)} |" for k, v in content.environment.items()]
            lines += ["", "</details>"]
        lines += [
            "",
            f"<details><summary>Plan ({_escape(run.plan_source)})</summary>",
            "",
            "```yaml",
            # inside a fence nothing is markup; only a fence of its own could end it
            strip_controls(redact_config_text(run.plan_text)).rstrip("\n").replace("```", "'''"),
            "```",
            "",
            "</details>",
        ]
    return "\n".join(lines) + "\n"
