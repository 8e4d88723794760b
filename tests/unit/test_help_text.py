"""``--help`` of every command (issue 30): the defaults it names are shown (not eaten as rich markup), values
are named by words (TEXT, N, PATH, PLAN), never Python types (``<list[str]>``, ``<int range>``), required
arguments not as ``{plan}``, ranges in words rather than ``0<=x<=…``."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from nearmetal.cli import app

COMMANDS = sorted(
    c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands if not c.hidden
)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_words_not_python_types(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert not re.search(r"<(str|int|float|path|list\[[^>]*\]|int range|float range)>", text), text
    assert not re.search(r"\{[a-z_]+\}", text), text  # typer's {plan} for a required argument
    assert "<=x" not in text and "x>=" not in text and "x<=" not in text, text
    if "--db" in text:
        assert "[default: ./nearmetal.db]" in text, text
    if "--workdir" in text and command in ("run", "study", "try", "check", "resume"):
        assert "[default: ./nearmetal-runs" in text, text


def test_there_are_commands() -> None:
    assert {"run", "study", "try", "report", "export", "site", "compare", "check", "schema"} <= set(COMMANDS)
