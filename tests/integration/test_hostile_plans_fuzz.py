"""Fuzzed plans at the depth CI runs them: ``NEARMETAL_FUZZ_EXAMPLES`` documents per family (default 150) end
in a plan or one-line problems. The unit tier runs the same check on 30 per family (tests/unit/
test_hostile_plans.py); ``benchmarks/fuzz_plans.py`` runs 10,000+."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from plan_fuzz import FAMILIES, check

EXAMPLES = int(os.environ.get("NEARMETAL_FUZZ_EXAMPLES", "150"))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_generated_document_is_a_plan_or_one_line_problems(family: str) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(FAMILIES[family])
    def one(text: str) -> None:
        check(text)

    one()
