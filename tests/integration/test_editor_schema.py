"""The plan schema in a real editor's YAML language server (issue 30): every shipped plan, which names
schema/plan.schema.json in its first line, opens with no diagnostic; a mistyped key or a bad duration is
marked. Needs yaml-language-server (npm); skipped without it (tests/unit/test_plan_schema.py checks the
same schema with jsonschema everywhere)."""

from __future__ import annotations

import pytest
from lsp import LanguageServer, yaml_language_server
from paths import REPO

PLANS = sorted([*(REPO / "src/nearmetal/studies").glob("*.yaml"), *(REPO / "examples").glob("*.yaml")])


@pytest.fixture(scope="module")
def server():
    program = yaml_language_server()
    if program is None:
        pytest.skip("yaml-language-server is not installed (npm install -g yaml-language-server)")
    ls = LanguageServer(program)
    yield ls
    ls.close()


def test_every_shipped_plan_opens_clean_in_the_editor(server) -> None:
    marked = {p.name: server.diagnostics(p) for p in PLANS}
    assert {name: d for name, d in marked.items() if d} == {}
    assert len(marked) >= 20


def test_a_mistyped_plan_is_marked(server) -> None:
    plan = REPO / "src/nearmetal/studies/cpu-quota.yaml"
    text = (
        plan.read_text().replace("repeats:", "repaets:", 1).replace("timeout: ", "timeout: five-minutes-", 1)
    )
    found = server.diagnostics(plan.with_name("mistyped-copy.yaml"), text)  # opened, never written
    messages = " | ".join(d["message"] for d in found)
    assert "repaets" in messages and len(found) >= 2, messages
