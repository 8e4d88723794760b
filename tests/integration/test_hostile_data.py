"""Issue 26: data that a hostile plan, workload or store file controls stays data. Each test reproduces one
of the issue's cases through the real ``nearmetal`` command and checks that it now ends in one line (or a
skipped row), never a traceback, a hang, rich markup or raw terminal escapes."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import write_plan

PY = sys.executable


def _no_traceback(proc) -> None:  # type: ignore[no-untyped-def]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert "MarkupError" not in proc.stderr + proc.stdout


def test_a_regex_with_a_closing_tag_that_matches_nothing_is_a_normal_failure(tmp_path: Path, run_cli) -> None:
    """Case 10: ``x[/]y`` is valid RE2; its 'matched nothing' error was printed with markup on."""
    script = tmp_path / "noisy.py"
    script.write_text(
        "import sys\nprint('x=1')\nsys.stderr.write('boom \\x1b[2J \\x1b]52;c;cHduZWQ=\\x07 \\x9b31m')\n"
    )
    plan = write_plan(
        tmp_path,
        f"""
        name: markup
        workloads:
          w:
            kind: command
            params:
              argv: [{PY!r}, {str(script)!r}]
              metrics: [{{name: x_s, regex: 'x[/]y=(\\d+)', direction: lower}}]
          e:
            kind: command
            params:
              argv: [{PY!r}, {str(script)!r}]
              metrics: [{{name: y_s, regex: "\\e[2J\\e]52;c;cHduZWQ=\\a(\\\\d+)", direction: lower}}]
        variants: {{a: []}}
        repeats: 1
        """,
    )
    proc = run_cli("run", str(plan), "--no-html", timeout=120)
    _no_traceback(proc)
    assert proc.returncode == 1
    assert "regex 'x[/]y=(\\\\d+)' matched nothing in stdout" in proc.stderr.replace("\n", " ")
    report = run_cli("report", "--format", "terminal", timeout=120)
    _no_traceback(report)
    for out in (proc.stderr, report.stdout):  # the regex with escapes in the error, shown as text
        assert "\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07" in out.replace("\n", "")
    for out in (proc.stdout, proc.stderr, report.stdout, report.stderr):
        assert "\x1b" not in out and "\x07" not in out
