"""Generators of hostile and broken plans, and the check every one of them must pass.

Four families of documents:
- ``mutated``: a valid plan built from the registries (every workload kind, every layer's example
  configuration), then 1-4 values replaced, keys dropped or added, with hostile values (path traversal,
  shell metacharacters, control characters, huge and non-finite numbers, wrong types, nested junk);
- ``aliased``: the same, dumped so YAML anchors and aliases appear (shared sub-trees), plus alias bombs and
  deep nesting;
- ``edited``: a valid plan's text with random characters inserted, deleted or replaced;
- ``soup``: YAML tokens and plan words in random order, and arbitrary text.

The outcome of each must be a plan (``valid``), a list of one-line problems each naming the field
(``field error``) or the document position (``document error``: YAML syntax, duplicate keys, alias bombs),
and never any other exception. Used by tests/test_hostile_plans.py (a few hundred documents in CI) and
benchmarks/fuzz_plans.py (10,000+, for the numbers in the notes).
"""

from __future__ import annotations

import copy
import random
import re
from typing import Any

import yaml
from hypothesis import strategies as st

from nearmetal.errors import NearmetalError, PlanError
from nearmetal.layers import all_layer_classes
from nearmetal.plan import parse_plan_text
from nearmetal.plan.paths import check_plan_paths
from nearmetal.run.runner import schedule
from nearmetal.workloads import all_workload_classes

SOURCE = "fuzz.yaml"
# file:line field.path: message   |   file[:line]: message (a problem of the document, not of a field)
FIELD_PROBLEM = re.compile(rf"^{re.escape(SOURCE)}(?::\d+)? (?P<field>[^\s:][^\n]*?): \S[^\n]*$")
DOCUMENT_PROBLEM = re.compile(rf"^{re.escape(SOURCE)}(?::\d+)?: \S[^\n]*$")
MAX_LINE = 400

HOSTILE_STRINGS = [
    "../../etc/passwd",
    "../../../../etc",
    "/etc",
    "/etc/shadow",
    "/dev/sda",
    "/proc/sys/kernel/panic",
    "$(touch /tmp/nearmetal-fuzz-pwned)",
    "`touch /tmp/nearmetal-fuzz-pwned`",
    "; touch /tmp/nearmetal-fuzz-pwned",
    "| sh",
    "a\nb",
    "\x1b]52;c;cHduZWQ=\x07",
    "\x1b[2J",
    "[bold red]markup[/]",
    "",
    " ",
    "~",
    "null",
    "NaN",
    "-1",
    "1e309",
    "0x10",
    "300s",
    "5m",
    "-3s",
    "±2%",
    "200%",
    "\u202e\u0000",
    "x" * 300,
    "*",
    "&",
    "!!python/object/apply:os.system",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_STRINGS),
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["layer", "kind", "params", "argv"]), children, max_size=4
        )
    ),
    max_leaves=10,
)

WORKLOADS = all_workload_classes()
LAYERS = all_layer_classes()
EXTRA_PARAMS: dict[str, dict[str, Any]] = {"command": {"argv": ["true"]}}


def fresh(value: Any) -> Any:
    """A copy of a drawn value: the plan is mutated afterwards, and hypothesis may hand out the same object
    again when it replays a test case (mutating it would make generation depend on earlier cases)."""
    return copy.deepcopy(value)


def base_plan(kinds: list[str], layer_kinds: list[str]) -> dict[str, Any]:
    """A valid plan with these workload kinds and one variant per layer (example configurations)."""
    # deep copies: mutations must never reach the module's own data (hypothesis replays generation)
    workloads = {
        f"w{i}-{kind}": {"kind": kind, "params": copy.deepcopy(EXTRA_PARAMS.get(kind, {}))}
        for i, kind in enumerate(kinds)
    }
    variants: dict[str, Any] = {"bare": []}
    for kind in layer_kinds:
        example = LAYERS[kind].example_config()
        if example is not None:
            variants[f"with-{kind}"] = [copy.deepcopy(example)]
    return {"name": "fuzz", "workloads": workloads, "variants": variants, "repeats": 2}


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


def _field_names(doc: dict[str, Any], path: tuple[Any, ...]) -> list[str]:
    """Real field names near a path, so mutations hit fields that exist (not only unknown keys)."""
    names = [
        "name",
        "workloads",
        "variants",
        "baseline",
        "matrix",
        "repeats",
        "warmup",
        "order",
        "timeout",
        "seed",
        "analysis",
        "min",
        "max",
        "target",
        "budget",
        "layers",
        "params",
        "only",
    ]
    for cls in WORKLOADS.values():
        names += list(cls.Params.model_fields)
    for cls in LAYERS.values():
        names += list(cls.Config.model_fields)
    return names


@st.composite
def mutated_plans(draw: st.DrawFn) -> dict[str, Any]:
    """Structural choices (which path, which action) come from one seeded ``random.Random`` and the values
    from hypothesis: the documents are as varied, and generation cannot depend on earlier test cases."""
    kinds = draw(st.lists(st.sampled_from(sorted(WORKLOADS)), min_size=1, max_size=3))
    layer_kinds = draw(st.lists(st.sampled_from(sorted(LAYERS)), max_size=3))
    # a plain Random seeded by one draw: hypothesis records the seed, and no structural choice can make
    # its record of later draws differ between a test case and its replay
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    pool = fresh(draw(st.lists(values, min_size=6, max_size=6)))
    texts = draw(st.lists(st.text(max_size=8), min_size=2, max_size=2))
    doc = base_plan(kinds, layer_kinds)
    names = _field_names(doc, ())
    for _ in range(rng.randint(0, 4)):
        path = rng.choice(_paths(doc))
        action = rng.choice(["replace", "replace", "drop", "add", "matrix", "override"])
        value = fresh(rng.choice(pool))
        key = rng.choice([*names, *texts])
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        if action == "replace" and path:
            parent[path[-1]] = value
        elif action == "drop" and path and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "add":
            target = doc
            for part in path:
                target = target[part]
            if isinstance(target, dict):
                target[key] = value
            elif isinstance(target, list):
                target.append(value)
        elif action == "matrix":
            doc.setdefault("matrix", {})
            if isinstance(doc["matrix"], dict):
                doc["matrix"][key] = [value, fresh(rng.choice(pool))][: rng.randint(0, 2)]
        elif action == "override" and isinstance(doc.get("variants"), dict):
            doc["variants"][rng.choice(["tuned", *texts])] = {
                "layers": [value][: rng.randint(0, 1)],
                "params": {key: fresh(rng.choice(pool))},
            }
    return doc


def dump(doc: Any, share: bool = False) -> str:
    """YAML text of a document; ``share`` reuses sub-trees so the dumper writes anchors and aliases."""
    if share and isinstance(doc, dict) and isinstance(doc.get("variants"), dict):
        variants = doc["variants"]
        values_ = list(variants.values())
        if values_:
            for key in list(variants)[1:]:
                variants[key] = values_[0]  # the same object: &id001 … *id001
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, RecursionError, ValueError):
        return str(doc)


def alias_bomb(width: int, depth: int, where: str) -> str:
    lines = ["name: bomb", f"l0: &l0 [{', '.join(['x'] * width)}]"]
    for i in range(1, depth):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    top = f"*l{depth - 1}"
    if where == "matrix":
        lines += ["workloads: {w: {kind: stress-ng}}", "variants: {a: []}", f"matrix: {{workers: {top}}}"]
    elif where == "layer":
        lines += [
            "workloads: {w: {kind: stress-ng}}",
            f"variants: {{a: [{{layer: colocate, copies: 1, neighbour_params: {{x: {top}}}}}]}}",
        ]
    return "\n".join(lines) + "\n"


def deep(depth: int, opener: str) -> str:
    closer = {"[": "]", "{a: ": "}"}[opener]
    return (
        "name: x\nworkloads: {w: {kind: command, params: {argv: [a], env: "
        + opener * depth
        + "1"
        + closer * depth
        + "}}}\n"
    )


@st.composite
def aliased_plans(draw: st.DrawFn) -> str:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return alias_bomb(
            draw(st.integers(2, 12)),
            draw(st.integers(2, 9)),
            draw(st.sampled_from(["top", "matrix", "layer"])),
        )
    if choice == 1:
        return deep(draw(st.integers(1, 3000)), draw(st.sampled_from(["[", "{a: "])))
    return dump(draw(mutated_plans()), share=True)


@st.composite
def edited_plans(draw: st.DrawFn) -> str:
    text = dump(draw(mutated_plans()))
    for _ in range(draw(st.integers(1, 6))):
        if not text:
            break
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(
            st.sampled_from(
                [
                    "\n",
                    " ",
                    ":",
                    "-",
                    "{",
                    "}",
                    "[",
                    "]",
                    "&a ",
                    "*a",
                    "!!str ",
                    "'",
                    '"',
                    "#",
                    "\t",
                    "|",
                    ">",
                    "? ",
                    "%YAML 1.1\n",
                    "---\n",
                    "...",
                ]
            )
            | st.text(max_size=3)
        )
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 10)) :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    return text


TOKENS = [
    "name:",
    "workloads:",
    "variants:",
    "kind:",
    "params:",
    "layer:",
    "matrix:",
    "repeats:",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\n",
    "\n  ",
    "\n    ",
    "&a",
    "*a",
    "<<:",
    "!!set",
    "!!binary",
    "!!python/name:os.system",
    "cpu-quota",
    "stress-ng",
    "command",
    "lammps",
    "fio",
    "x",
    "1",
    "-1",
    "1.5",
    "~",
    "true",
    "'q'",
    '"\\x00"',
    "? ",
    "%TAG ! tag:x,2000:\n",
    "--- ",
    "|\n  text\n",
]


@st.composite
def soup(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=200))
    return "".join(draw(st.lists(st.sampled_from(TOKENS), max_size=60)))


def check(text: str) -> str:
    """Load one document; return its outcome class, or raise AssertionError for an outcome that is not
    allowed (a traceback, a problem of several lines, a problem that names nothing)."""
    try:
        loaded = parse_plan_text(text, SOURCE)
    except PlanError as exc:
        return _problem_class(exc.problems)
    # a valid plan: every cell distinct, its schedule well-formed, its written paths checked
    keys = [c.key for c in loaded.cells]
    assert len(keys) == len(set(keys)), keys
    trials = schedule(
        loaded.cells, loaded.plan.order, loaded.plan.warmup, 0, min(loaded.plan.repeats.min, 3), 1
    )
    assert len({t.key for t in trials}) == len(trials)
    try:
        check_plan_paths(loaded)
    except PlanError as exc:
        _problem_class(exc.problems)
        return "valid, a written path refused"
    except NearmetalError as exc:  # pragma: no cover - only PlanError is expected here
        raise AssertionError(f"path check raised {type(exc).__name__}: {exc}") from None
    return "valid"


def _problem_class(problems: list[str]) -> str:
    assert problems, "a PlanError with no problem"
    kinds = set()
    for problem in problems:
        assert isinstance(problem, str) and "\n" not in problem and "\r" not in problem, repr(problem)
        assert len(problem) <= MAX_LINE, f"{len(problem)} characters: {problem[:200]!r}"
        assert "Traceback" not in problem
        if FIELD_PROBLEM.match(problem) and not DOCUMENT_PROBLEM.match(problem):
            kinds.add("field error")
        elif DOCUMENT_PROBLEM.match(problem):
            kinds.add("document error")
        else:
            raise AssertionError(f"a problem that names no field or position: {problem!r}")
    return "field error" if "field error" in kinds else "document error"


FAMILIES = {
    "mutated": mutated_plans().map(dump),
    "aliased": aliased_plans(),
    "edited": edited_plans(),
    "soup": soup(),
}
