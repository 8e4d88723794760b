"""Pydantic's error records turned into short phrases a plan author can act on."""

from __future__ import annotations

from typing import Any

# one problem is one line of at most this many characters (a value quoted in it is shortened)
MAX_PROBLEM_CHARS = 400


def shorten(value: object, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters: problems quote values, never whole documents."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: str, limit: int = MAX_PROBLEM_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_error(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    inp = err.get("input")
    simple = {
        "missing": "required",
        "int_parsing": "must be an integer",
        "int_type": "must be an integer",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "finite_number": "must be a finite number",
    }
    if kind == "string_type" and (isinstance(inp, bool | int | float) or inp is None):
        # YAML turns true/yes/on/null/1.0 into non-strings before nearmetal sees them
        if isinstance(inp, bool):
            shown, what = str(inp).lower(), "boolean"
        elif inp is None:
            shown, what = "null", "null"
        else:
            shown, what = repr(inp), "number"
        return f"must be a string (YAML read {shown} as a {what}: put it in quotes)"
    if kind in simple:
        return simple[kind]
    if kind == "greater_than":
        return f"must be > {_num(ctx.get('gt'))}"
    if kind == "greater_than_equal":
        return f"must be ≥ {_num(ctx.get('ge'))}"
    if kind == "less_than":
        return f"must be < {_num(ctx.get('lt'))}"
    if kind == "less_than_equal":
        return f"must be ≤ {_num(ctx.get('le'))}"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {shorten(inp)})"
    if kind == "union_tag_invalid":
        from nearmetal.plan.suggest import did_you_mean, quoted_names

        expected = str(ctx.get("expected_tags"))
        return (
            f"unknown {ctx.get('discriminator', 'kind').strip(chr(39))} {ctx.get('tag')!r}; use one of "
            f"{expected}{did_you_mean(ctx.get('tag'), quoted_names(expected))}"
        )
    if kind == "union_tag_not_found":
        return f"needs a {ctx.get('discriminator', 'kind').strip(chr(39))!s} field"
    if kind == "string_pattern_mismatch":
        return "must be a name of letters, digits, '.', '_' or '-' (at most 63 characters, no leading symbol)"
    if kind in ("too_short", "too_long"):
        return (
            f"must have {'at least' if kind == 'too_short' else 'at most'} "
            f"{ctx.get('min_length', ctx.get('max_length'))} item(s)"
        )
    if kind == "value_error":
        return str(ctx.get("error", err.get("msg", ""))).removeprefix("Value error, ")
    msg = str(err.get("msg", kind))
    return msg[:1].lower() + msg[1:]
