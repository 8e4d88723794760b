"""Rich tables for the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable

from nearmetal.api import Results
from nearmetal.report.assemble import assemble
from nearmetal.report.tables import (
    Table,
)
from nearmetal.textsafe import SafeConsole, plain, strip_controls


def print_table(table: Table, console: Console) -> None:
    rich_table = RichTable(title=plain(table.title), title_justify="left", show_lines=False)
    last = len(table.headers) - 1
    for i, header in enumerate(table.headers):
        # the verdict and the loss with its interval are what a reader scans for: never broken in two
        # the first column (variant, cell) is a name: never broken either ("bare-met / al")
        keep_whole = i in (0, last) or header.startswith(("loss %", "B vs A loss %"))
        rich_table.add_column(
            plain(header), justify="left" if i in (0, last) else "right", overflow="fold", no_wrap=keep_whole
        )
    for row, sig in zip(table.rows, table.significance, strict=True):
        style = "bold red" if sig else None
        # cells are text, not markup: "[n too small]" would otherwise vanish as an unknown style
        rich_table.add_row(*(plain(cell) for cell in row), style=style)
    console.print()
    if _narrowest(table) > console.width:
        print_vertical(table, console)  # too narrow for the columns (COLUMNS=60, a phone): one block a row
    else:
        console.print(rich_table)
    for note in table.notes:
        console.print(f"[dim]{plain(note)}[/dim]", highlight=False)


def _narrowest(table: Table) -> int:
    """The fewest columns the table takes with no word broken: the first and last columns and the loss
    whole, the others wrapped at spaces (rich folds words mid-way below that: "bare-met / al")."""
    last = len(table.headers) - 1
    width = 1
    for i, header in enumerate(table.headers):
        cells = [header, *(row[i] for row in table.rows if i < len(row))]
        whole = i in (0, last) or header.startswith(("loss %", "B vs A loss %"))
        if whole:
            need = max(len(c) for c in cells[1:]) if len(cells) > 1 else 0
            need = max(need, max((len(w) for w in header.split()), default=0))
        else:
            need = max((len(w) for c in cells for w in c.split()), default=0)
        width += need + 3  # padding and the border
    return width


def print_vertical(table: Table, console: Console) -> None:
    """The narrow form of a table: each row as its name, then one ``header: value`` line per column."""
    console.print(f"[bold]{plain(table.title)}[/bold]", highlight=False)
    for row, sig in zip(table.rows, table.significance, strict=True):
        console.print(plain(row[0]), style="bold red" if sig else "bold", highlight=False)
        for header, cell in zip(table.headers[1:], row[1:], strict=True):
            console.print(f"  {plain(header)}: {plain(cell)}", highlight=False)


def print_report(results: Results, console: Console | None = None, metric: str | None = None) -> None:
    console = console or SafeConsole()
    content = assemble(results, metric)
    for key, value in content.header:
        console.print(f"[bold]{key}[/bold]: {plain(value)}", highlight=False)
    for table in content.tables:
        print_table(table, console)
        print_findings(console, "possible causes (nearmetal doctor)", table.findings)
    for table in [*([content.energy] if content.energy else []), *content.variance]:
        print_table(table, console)
    if content.failures:
        console.print(
            "\n[bold yellow]failed trials[/bold yellow] (kept in the store, left out of the statistics):"
        )
        for line in content.failures:
            console.print(f"  {strip_controls(line)}", highlight=False, markup=False)
    print_findings(console, "other doctor findings", content.other_findings)


def print_findings(console: Console, heading: str, lines: list[str]) -> None:
    if not lines:
        return
    console.print(f"[bold]{heading}[/bold]:", highlight=False)
    for line in lines:
        style = (
            "red" if line.startswith("[critical]") else "yellow" if line.startswith("[warning]") else "cyan"
        )
        console.print(f"  {strip_controls(line)}", style=style, highlight=False, markup=False)
