"""The plan's JSON Schema describes plans as written (issue 30, item 1): every shipped plan and every plan in
the README validates against it, the copy shipped in the repo is the one ``nearmetal schema`` prints, and
on the short forms the schema and the loader agree."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from paths import REPO

from nearmetal.errors import PlanError
from nearmetal.plan import parse_plan_text, plan_json_schema

ROOT = REPO
SHIPPED_SCHEMA = ROOT / "schema" / "plan.schema.json"
SHIPPED_PLANS = sorted(
    [*(ROOT / "src/nearmetal/studies").glob("*.yaml"), *(ROOT / "examples").glob("*.yaml")]
)
MINIMAL = {"name": "p", "workloads": {"w": {"kind": "command", "params": {"argv": ["true"]}}}}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = plan_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(data)]


def test_the_shipped_schema_file_is_what_nearmetal_schema_prints() -> None:
    # regenerate with: nearmetal schema > schema/plan.schema.json
    assert json.loads(SHIPPED_SCHEMA.read_text()) == plan_json_schema()


def test_the_schema_names_nothing_of_this_machine() -> None:
    # a default such as the running interpreter's path made the shipped file differ in every checkout
    text = json.dumps(plan_json_schema())
    assert sys.executable not in text and str(REPO) not in text


def test_there_are_shipped_plans() -> None:
    assert len(SHIPPED_PLANS) >= 20


@pytest.mark.parametrize("path", SHIPPED_PLANS, ids=lambda p: p.name)
def test_every_shipped_plan_validates_and_points_at_the_schema(path: Path, validator: Any) -> None:
    text = path.read_text()
    first = text.splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, f"{path.name}: the first line should be the yaml-language-server schema line"
    assert (path.parent / match.group(1)).resolve() == SHIPPED_SCHEMA
    assert problems(validator, yaml.safe_load(text)) == []


def readme_plans() -> list[tuple[str, dict[str, Any]]]:
    """The README's YAML blocks; a fragment (``energy:`` …) is checked inside a minimal plan."""
    blocks = re.findall(r"```ya?ml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    plans = []
    for i, block in enumerate(blocks):
        data = yaml.safe_load(block)
        assert isinstance(data, dict), f"README YAML block {i} is not a mapping"
        if "workloads" not in data:
            data = {**MINIMAL, "variants": {"bare": []}, **data}
        plans.append((f"readme-{i}", data))
    return plans


def test_every_readme_plan_validates(validator: Any) -> None:
    plans = readme_plans()
    assert any("workloads" in block and "variants" in block for _, block in plans)
    for name, data in plans:
        assert problems(validator, data) == [], name
        parse_plan_text(yaml.safe_dump(data, allow_unicode=True), source=name)  # and the loader agrees


GOOD = [
    {"repeats": 4},
    {"repeats": {"min": 3, "target": "±2%", "budget": "20m"}},
    {"repeats": {"min": 3, "target": 0.02, "budget": 90}},
    {"timeout": "300s"},
    {"timeout": "1.5h"},
    {"timeout": 45},
    {"variants": {"bare-metal": None, "quota": [{"layer": "cpu-quota", "cpus": 0.8}]}},
    {"variants": {"bare-metal": {"layers": []}, "q": {"layers": [{"layer": "cpu-quota", "cpus": 1}]}}},
    {"workloads": {"w": {"kind": "command", "params": {"argv": ["true"]}, "timeout": "5m"}}},
    {
        "workloads": {
            "w": {"kind": "command", "params": {"argv": ["true"]}, "resources": {"memory_mib": "4G"}}
        }
    },
]
BAD = [
    {"repeats": 0},
    {"repaets": 3},
    {"timeout": "5 parsecs"},
    {"timeout": -1},
    {"repeats": {"target": "2 percent"}},
    {"variants": {"q": [{"layer": "cpu-qouta", "cpus": 0.8}]}},
    {"variants": {"q": "cpu-quota"}},
    {
        "workloads": {
            "w": {"kind": "command", "params": {"argv": ["true"]}, "resources": {"memory_mib": "lots"}}
        }
    },
]


def plan_with(change: dict[str, Any]) -> dict[str, Any]:
    return {**MINIMAL, "variants": {"bare": []}, **change}


@pytest.mark.parametrize("change", GOOD, ids=lambda c: json.dumps(c)[:60])
def test_short_forms_the_loader_takes_are_valid(change: dict[str, Any], validator: Any) -> None:
    data = plan_with(change)
    parse_plan_text(yaml.safe_dump(data, allow_unicode=True))
    assert problems(validator, data) == []


@pytest.mark.parametrize("change", BAD, ids=lambda c: json.dumps(c)[:60])
def test_what_the_loader_refuses_the_schema_refuses(change: dict[str, Any], validator: Any) -> None:
    data = plan_with(change)
    with pytest.raises(PlanError):
        parse_plan_text(yaml.safe_dump(data, allow_unicode=True))
    assert problems(validator, data) != []
