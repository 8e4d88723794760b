""" "Did you mean …?" for plan problems: the closest known name (difflib) to a mistyped key, layer, workload
or variant, and the cross-references of a plan that does not validate yet (a wrong baseline, an override
naming an unknown workload), so ``check`` shows every problem in one pass."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from functools import cache
from typing import Any

Loc = tuple[str | int, ...]


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``"; did you mean 'repeats'?"`` when one of ``choices`` is close to ``word``, else ``""``."""
    if not isinstance(word, str) or not word:
        return ""
    names = [c for c in dict.fromkeys(choices) if c != word]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not close and len(word) >= 3:  # a name cut short: 'bare' for 'bare-metal'
        close = [n for n in names if n.lower().startswith(word.lower())][:2]
        close = close if len(close) == 1 else []
    return f"; did you mean {close[0]!r}?" if close else ""


def quoted_names(text: str) -> list[str]:
    """The names in pydantic's ``"'a', 'b' or 'c'"`` lists."""
    return re.findall(r"'([^']*)'", text)


@cache
def _schema() -> dict[str, Any]:
    from nearmetal.plan.models import plan_json_schema

    return plan_json_schema()


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    defs = _schema().get("$defs", {})
    seen = 0
    while "$ref" in node and seen < 20:
        node = defs.get(str(node["$ref"]).rsplit("/", 1)[-1], {})
        seen += 1
    return node


def _branches(node: dict[str, Any], value: Any) -> list[dict[str, Any]]:
    """The object schemas a value may match at ``node``: a discriminated union narrowed by the value's tag."""
    node = _resolve(node)
    options = node.get("oneOf") or node.get("anyOf")
    if not options:
        return [node]
    discriminator = node.get("discriminator") or {}
    tag = discriminator.get("propertyName")
    mapping = discriminator.get("mapping") or {}
    if tag and isinstance(value, dict) and value.get(tag) in mapping:
        return _branches({"$ref": mapping[value[tag]]}, value)
    out: list[dict[str, Any]] = []
    for option in options:
        out += _branches(option, value)
    return out


def allowed_keys(data: Any, loc: Loc) -> list[str]:
    """The keys the plan's schema allows where ``loc``'s last part (an unknown key) was written."""
    nodes = [_schema()]
    value = data
    for part in loc[:-1]:
        following: list[dict[str, Any]] = []
        in_data = (isinstance(value, dict) and part in value) or (
            isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        )
        if not in_data:
            continue  # a part of pydantic's location that the document does not spell out (a union tag)
        for node in nodes:
            for branch in _branches(node, value):
                if isinstance(part, int):
                    if isinstance(branch.get("items"), dict):
                        following.append(branch["items"])
                elif part in (branch.get("properties") or {}):
                    following.append(branch["properties"][part])
                elif isinstance(branch.get("additionalProperties"), dict):
                    following.append(branch["additionalProperties"])
                else:  # names checked by a pattern (workloads, variants)
                    following += [
                        v for v in (branch.get("patternProperties") or {}).values() if isinstance(v, dict)
                    ]
        value = value[part]
        nodes = following
    keys: list[str] = []
    for node in nodes:
        for branch in _branches(node, value):
            keys += list(branch.get("properties") or {})
    return keys


def cross_reference_problems(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Names a plan refers to that it does not define, found on the raw document (so they are reported
    with its field errors, not after them): the baseline, ``only`` lists and ``workload.param`` keys of
    variants' params and the matrix that name no workload."""
    problems: list[tuple[Loc, str]] = []
    workloads = data.get("workloads")
    variants = data.get("variants")
    workload_names = [str(k) for k in workloads] if isinstance(workloads, dict) else None
    variant_names = [str(k) for k in variants] if isinstance(variants, dict) else None
    baseline = data.get("baseline")
    if isinstance(baseline, str) and variant_names is not None and baseline not in variant_names:
        problems.append(
            (
                ("baseline",),
                f"{baseline!r} is not a variant (variants: {', '.join(variant_names)})"
                + did_you_mean(baseline, variant_names),
            )
        )
    if workload_names is None:
        return problems

    def unknown_workload(key: object) -> str | None:
        if not isinstance(key, str) or "." not in key:
            return None
        name = key.partition(".")[0]
        if name in workload_names:
            return None
        return f"no workload named {name!r} (workloads: {', '.join(workload_names)})" + did_you_mean(
            name, workload_names
        )

    matrix = data.get("matrix")
    if isinstance(matrix, dict):
        for key in matrix:
            if problem := unknown_workload(key):
                problems.append((("matrix", key), problem))
    for vname, variant in (variants or {}).items() if isinstance(variants, dict) else []:
        if not isinstance(variant, dict):
            continue
        params = variant.get("params")
        if isinstance(params, dict):
            for key in params:
                if problem := unknown_workload(key):
                    problems.append((("variants", vname, "params", key), problem))
        only = variant.get("only")
        if isinstance(only, list):
            for name in only:
                if isinstance(name, str) and name not in workload_names:
                    problems.append(
                        (
                            ("variants", vname, "only"),
                            f"no workload named {name!r}" + did_you_mean(name, workload_names),
                        )
                    )
    return problems
