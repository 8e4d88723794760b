"""Read a plan file: YAML (safely) → the Plan model → cells, with every problem reported as
``file:line field.path: message`` and nothing run."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nearmetal.errors import PlanError
from nearmetal.plan.expand import Cell, Loc, expand_cells
from nearmetal.plan.messages import describe_error, one_line, shorten
from nearmetal.plan.models import plan_model
from nearmetal.plan.suggest import allowed_keys, cross_reference_problems, did_you_mean

MAX_PLAN_BYTES = 1 << 20
# a plan is a short declaration: more values than this once YAML aliases are expanded is an alias bomb
# ("billion laughs"), and deeper nesting than this is not a plan either
MAX_PLAN_NODES = 100_000
MAX_PLAN_DEPTH = 64
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
# the document is parsed once, into nodes, and the values are built from those nodes (no second parse).
# PyYAML's own parser, not libyaml's (CSafeLoader, ten times faster): they differ at the edges (libyaml
# takes a tab after "key:", so /proc/self/status parses as a mapping), and a plan means one thing
_COMPOSE_LOADER: Any = yaml.SafeLoader


def compose_plan(text: str) -> yaml.Node | None:
    """The YAML node tree of a plan, with the safe loader (no tags that build objects)."""
    return yaml.compose(text, Loader=_COMPOSE_LOADER)


def construct_plan(root: yaml.Node | None) -> Any:
    """The plan's values built from its checked node tree (the safe constructor: plain data only)."""
    if root is None:
        return None
    return yaml.constructor.SafeConstructor().construct_document(root)


@dataclass
class LoadedPlan:
    plan: Any  # an instance of plan_model()
    cells: list[Cell]
    text: str
    source: str
    path: Path | None = None  # the plan file, when it came from one (its directory's git commit is recorded)

    @property
    def name(self) -> str:
        return str(self.plan.name)


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
            parts.append(_key_text(part, bool(parts)))
        elif isinstance(children, list) and isinstance(part, int) and 0 <= part < len(children):
            node = children[part]
            parts.append(f"[{part}]")
        elif last or children is None:
            if isinstance(part, int):
                parts.append(f"[{part}]")
            else:
                parts.append(_key_text(part, bool(parts)))
        # else: a structural part of the model that the document does not spell out
    line = node.start_mark.line + 1 if node is not None else None
    return line, "".join(parts) or "(plan)"


def _key_text(part: object, dotted: bool) -> str:
    """A key as it appears in a field path; keys that are not plain names are quoted (and so can never
    break the one-line form of a problem)."""
    text = str(part)
    if text == "[key]":  # pydantic's name for "the key itself" of a mapping entry
        return text
    if _PLAIN_KEY.match(text):
        return f".{text}" if dotted else text
    return f"[{shorten(text, 40)}]"


def format_problem(source: str, root: yaml.Node | None, loc: Loc, message: str) -> str:
    line, path = locate(root, loc)
    where = f"{source}:{line}" if line else source
    return one_line(f"{where} {path}: {message}")


def flow_depth_problem(text: str, source: str) -> str | None:
    """Brackets nested deeper than MAX_PLAN_DEPTH, found by a quick scan before the YAML parser (whose
    time grows with the square of the depth: 3 s at 1,000 levels). Quoted text and comments are skipped;
    a bracket inside a plain scalar may count, which only matters for absurd documents."""
    depth = line = 0
    quote = ""
    comment = False
    previous = "\n"
    for char in text:
        if char == "\n":
            line += 1
            comment = False
        elif comment:
            pass
        elif quote:
            if char == quote:
                quote = ""
        elif char in "'\"" and previous in " \t\n[{,:":
            quote = char
        elif char == "#" and previous in " \t\n":
            comment = True
        elif char in "[{":
            depth += 1
            if depth > MAX_PLAN_DEPTH:
                return f"{source}:{line + 1}: nested more than {MAX_PLAN_DEPTH} levels deep"
        elif char in "]}":
            depth = max(0, depth - 1)
        previous = char
    return None


def check_structure(root: yaml.Node | None, source: str) -> list[str]:
    """Problems of the document's shape before any value is built: duplicate keys (YAML keeps the last one
    silently: a second variant with the same name would replace the first), nesting deeper than
    MAX_PLAN_DEPTH, and more than MAX_PLAN_NODES values once aliases are expanded (an alias bomb)."""
    if root is None:
        return []
    problems: list[str] = []
    expanded: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
    # iterative post-order walk (no recursion: the document may be deep); a node reached again through an
    # alias is counted again (that is the expansion) but walked once
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if depth > MAX_PLAN_DEPTH:
            return [f"{source}:{node.start_mark.line + 1}: nested more than {MAX_PLAN_DEPTH} levels deep"]
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            expanded[id(node)] = 1
            continue
        if children_done:
            expanded[id(node)] = 1 + sum(expanded.get(id(c), 1) for c in children)
            if expanded[id(node)] > MAX_PLAN_NODES:
                return [
                    f"{source}:{node.start_mark.line + 1}: the plan expands to more than {MAX_PLAN_NODES:,} "
                    "values (YAML aliases repeating aliases?); a plan is a short declaration"
                ]
            continue
        if id(node) in expanded:
            continue
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen and key.tag != "tag:yaml.org,2002:merge":
                        problems.append(
                            one_line(
                                f"{source}:{key.start_mark.line + 1} {_key_text(key.value, False)}: duplicate "
                                f"key (first at line {seen[key.value]}); YAML would keep only the last one"
                            )
                        )
                    seen.setdefault(key.value, key.start_mark.line + 1)
        stack.append((node, depth, True))
        stack += [(child, depth + 1, False) for child in children if id(child) not in expanded]
    return problems


def parse_plan_text(text: str, source: str = "plan.yaml") -> LoadedPlan:
    if len(text.encode(errors="replace")) > MAX_PLAN_BYTES:
        raise PlanError(
            [
                f"{source}: the plan is larger than {MAX_PLAN_BYTES // 1024} KiB; a plan is a short "
                "declaration, not data"
            ]
        )
    deep = flow_depth_problem(text, source)
    if deep:
        raise PlanError([deep])
    try:
        root = compose_plan(text)
        structure = check_structure(root, source)
        if structure:
            raise PlanError(structure)
        data = construct_plan(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise PlanError([f"{source}{line}: YAML syntax error: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise PlanError([f"{source}: YAML error: {str(exc).splitlines()[0]}"]) from None
    except RecursionError:
        raise PlanError([f"{source}: the YAML is nested too deeply"]) from None
    except (ValueError, OverflowError) as exc:
        # PyYAML's scanner lets these through, e.g. chr() of a "\U00110000" escape past the last code point
        raise PlanError(
            [f"{source}: YAML error: {str(exc).splitlines()[0]} (an escape beyond U+10FFFF?)"]
        ) from None
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
            message = describe_error(dict(err))
            if err.get("type") == "extra_forbidden" and err["loc"]:
                message += did_you_mean(err["loc"][-1], allowed_keys(data, tuple(err["loc"])))
            problem = format_problem(source, root, tuple(err["loc"]), message)
            if problem not in problems:
                problems.append(problem)
        # the cross-references too, in the same pass: a wrong baseline is not left for after the fields
        for loc, message in cross_reference_problems(data):
            problem = format_problem(source, root, loc, message)
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


def _read_plan_file(path: Path) -> str:
    """The plan's text; a directory, device, FIFO or socket, or a file over MAX_PLAN_BYTES, is refused
    before it is read (``/dev/zero`` would be read until memory ran out, a FIFO would block forever)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PlanError([f"{path}: no such plan file"]) from None
    except IsADirectoryError:
        raise PlanError([f"{path}: is a directory, not a plan file"]) from None
    except OSError as exc:
        raise PlanError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise PlanError([f"{path}: is a directory, not a plan file"])
        if not stat.S_ISREG(info.st_mode):
            raise PlanError([f"{path}: not a regular file (a device, FIFO or socket); a plan is a YAML file"])
        if info.st_size > MAX_PLAN_BYTES:
            raise PlanError(
                [f"{path}: the plan is larger than {MAX_PLAN_BYTES // 1024} KiB; a plan is a short YAML file"]
            )
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_PLAN_BYTES:  # /proc files report size 0: read at most one byte past the limit
            chunk = os.read(fd, MAX_PLAN_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise PlanError([f"{path}: cannot read: {exc.strerror}"]) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_PLAN_BYTES:
        raise PlanError(
            [f"{path}: the plan is larger than {MAX_PLAN_BYTES // 1024} KiB; a plan is a short YAML file"]
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PlanError([f"{path}: not a text file (a plan is UTF-8 YAML)"]) from None


def load_plan(path: str | Path) -> LoadedPlan:
    path = Path(path)
    text = _read_plan_file(path)
    try:
        loaded = parse_plan_text(text, source=path.name)
    except PlanError as exc:
        if path.is_symlink():
            # the link may lead to a file the person running nearmetal can read and its author cannot
            # (/etc/shadow): name the problem count, never the lines
            target = os.path.realpath(path)
            raise PlanError(
                [
                    f"{path} (a link to {target}): not a valid plan ({len(exc.problems)} problem(s)); its "
                    "content is not shown because the plan is a symbolic link: run the file itself to see them"
                ]
            ) from None
        raise
    loaded.path = path.resolve()
    return loaded
