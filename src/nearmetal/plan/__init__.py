"""Plans: YAML → validated models → cells and trials."""

from nearmetal.plan.expand import Cell, Trial, canonical_json, expand_cells
from nearmetal.plan.load import LoadedPlan, load_plan, parse_plan_text
from nearmetal.plan.models import parse_duration, parse_target, plan_json_schema, plan_model

__all__ = [
    "Cell",
    "LoadedPlan",
    "Trial",
    "canonical_json",
    "expand_cells",
    "load_plan",
    "parse_duration",
    "parse_plan_text",
    "parse_target",
    "plan_json_schema",
    "plan_model",
]
