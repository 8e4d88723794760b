"""Read a plan file: YAML (safely) → the Plan model → cells, with every problem reported as
``file:line field.path: message`` and nothing run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nearmetal.errors import PlanError
from nearmetal.plan.expand import Cell, Loc, expand_cells
from nearmetal.plan.messages import describe_error
from nearmetal.plan.models import plan_model

MAX_PLAN_BYTES = 1 << 20


@dataclass
class LoadedPlan:
    plan: Any  # an instance of plan_model()
    cells: list[Cell]
    text: str
    source: str
    path: Path | None = None  # the plan file, when it came from one (its directory's git commit is recorded)

    @property
    def name(self) -> str:
        return self.plan.name


def _node_children(node: yaml.Node) -> dict[Any, yaml.Node] | list[yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return None


def locate(root: yaml.Node | None, loc: Loc) -> tuple[int | None, str]:
    """Walk a pydantic error location through the YAML node tree. Location parts that are not in the
    document (union tags, the ``layers`` of a short-form variant) are skipped; a missing last part (a
    required field) is kept in the path and the line is its parent's."""
    node = root
    parts: list[str] = []
    for i, part in enumerate(loc):
        children = _node_children(node) if node is not None else None
        last = i == len(loc) - 1
        if isinstance(children, dict) and str(part) in children:
            node = children[str(part)]
            parts.append(f".{part}" if parts else str(part))
        elif isinstance(children, list) and isinstance(part, int) and 0 <= part < len(children):
            node = children[part]
            parts.append(f"[{part}]")
        elif last or children is None:
            if isinstance(part, int):
                parts.append(f"[{part}]")
            else:
                parts.append(f".{part}" if parts else str(part))
        # else: a structural part of the model that the document does not spell out
    line = node.start_mark.line + 1 if node is not None else None
    return line, "".join(parts) or "(plan)"


def format_problem(source: str, root: yaml.Node | None, loc: Loc, message: str) -> str:
    line, path = locate(root, loc)
    where = f"{source}:{line}" if line else source
    return f"{where} {path}: {message}"


def parse_plan_text(text: str, source: str = "plan.yaml") -> LoadedPlan:
    if len(text.encode(errors="replace")) > MAX_PLAN_BYTES:
        raise PlanError(
            [
                f"{source}: the plan is larger than {MAX_PLAN_BYTES // 1024} KiB; a plan is a short "
                "declaration, not data"
            ]
        )
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise PlanError([f"{source}{line}: YAML syntax error: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise PlanError([f"{source}: YAML error: {str(exc).splitlines()[0]}"]) from None
    except RecursionError:
        raise PlanError([f"{source}: the YAML is nested too deeply"]) from None
    if not isinstance(data, dict):
        raise PlanError(
            [f"{source}:1 (plan): must be a mapping with at least 'name', 'workloads' and 'variants'"]
        )
    model = plan_model()
    try:
        plan: BaseModel = model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            problem = format_problem(source, root, tuple(err["loc"]), describe_error(dict(err)))
            if problem not in problems:
                problems.append(problem)
        raise PlanError(problems) from None
    except RecursionError:
        raise PlanError([f"{source}: the plan is nested too deeply"]) from None
    expansion = expand_cells(plan)
    if expansion.problems:
        raise PlanError([format_problem(source, root, loc, msg) for loc, msg in expansion.problems])
    if not expansion.cells:
        raise PlanError([f"{source} variants: no variant applies to any workload; nothing to run"])
    return LoadedPlan(plan=plan, cells=expansion.cells, text=text, source=source)


def load_plan(path: str | Path) -> LoadedPlan:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PlanError([f"{path}: no such plan file"]) from None
    except UnicodeDecodeError:
        raise PlanError([f"{path}: not a text file (a plan is UTF-8 YAML)"]) from None
    except OSError as exc:
        raise PlanError([f"{path}: cannot read: {exc.strerror}"]) from None
    loaded = parse_plan_text(text, source=path.name)
    loaded.path = path.resolve()
    return loaded
