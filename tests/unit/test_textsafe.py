"""Issue 26, case 10: text from plans, workloads, stores and children is printed as text, never as rich
markup or terminal control sequences."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from nearmetal.report.progress import RichProgress
from nearmetal.textsafe import SafeConsole, plain, strip_controls


@pytest.mark.parametrize(
    "raw",
    ["\x1b[2J", "\x1b]52;c;cHduZWQ=\x07", "\x9b31m", "a\x00b", "\x08\x7f", "\u202egnp.exe"],
)
def test_control_characters_are_shown_not_sent(raw: str) -> None:
    shown = strip_controls(f"name {raw} end")
    assert not any((ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\u202e" not in shown
    assert shown.startswith("name ") and shown.endswith(" end")
    assert "\\x" in shown or "\\u" in shown


def test_tab_and_line_feed_are_kept() -> None:
    assert strip_controls("a\tb\nc") == "a\tb\nc"


def test_data_with_markup_lookalikes_prints_as_text() -> None:
    buffer = io.StringIO()
    # no terminal: no styles, so any ESC in the output came from the data
    console = SafeConsole(file=buffer, force_terminal=False, width=200, highlight=False)
    # the case: a valid RE2 pattern with "[/]" inside an error printed with markup on
    console.print("[bold]error:[/bold] regex 'x[/]y=(\\d+)' matched nothing")
    console.print(f"[bold]error:[/bold] {plain('[red]not red[/red] [link=file:///etc/passwd]x[/link]')}")
    console.print("value \x1b[2J\x1b]0;title\x07 here", markup=False)
    out = buffer.getvalue()
    assert "x[/]y=" in out
    assert "[red]not red[/red]" in out and "[link=file:///etc/passwd]" in out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J" in out


def test_progress_prints_a_failed_trial_with_brackets_and_escapes_as_text() -> None:
    from types import SimpleNamespace

    buffer = io.StringIO()
    progress = RichProgress(Console(file=buffer, force_terminal=False, width=300))
    cell = SimpleNamespace(key="w/a[/]")
    record = SimpleNamespace(
        trial=SimpleNamespace(cell=cell, index=0),
        status="failed",
        error="metric x: regex 'x[/]y' matched nothing in \x1b[2Jstdout",
        wall_s=1.0,
    )
    progress.trial_finished(record, 0)  # type: ignore[arg-type]
    progress.note("plan [/] says \x1b]52;c;cHduZWQ=\x07")
    out = buffer.getvalue()
    assert "w/a[/] #0 failed" in out and "regex 'x[/]y' matched nothing in \\x1b[2Jstdout" in out
    assert "\x1b" not in out and "\x07" not in out
