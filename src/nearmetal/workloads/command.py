"""Any program, given as an argv list; metrics from wall time and, optionally, regexes or JSON paths."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nearmetal.metrics import NAME_MAX_CHARS, UNIT_MAX_CHARS, Metric
from nearmetal.workloads.base import (
    ParseError,
    ProcessSpec,
    Requirement,
    TrialOutput,
    Workload,
    WorkloadContext,
    WorkloadParams,
    register_workload,
)


@functools.cache
def compile_metric_regex(value: str) -> Any:
    """A plan's metric regex compiled with RE2, which matches in time linear in the text: a pattern with
    catastrophic backtracking in Python's ``re`` (``^(a+)+$``) cannot hang the runner. RE2 has no
    backreferences or lookaround; such a pattern is refused at plan load. ``^``/``$`` match at line ends."""
    import re2

    options = re2.Options()
    options.log_errors = False  # its C++ logger would print to stderr; the message goes in the ValueError
    try:
        return re2.compile(f"(?m){value}", options)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"not a regular expression nearmetal can match in linear time (RE2 syntax: no backreferences "
            f"or lookaround): {detail}"
        ) from None


class MetricRule(BaseModel):
    """How to find one metric in the output: a regex whose first group (or group ``value``) is the number,
    or a dotted JSON path into stdout parsed as JSON."""

    model_config = ConfigDict(extra="forbid")
    # as long as the store keeps (it refuses longer ones, which would only show after the trials ran)
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=NAME_MAX_CHARS)
    regex: str | None = None
    json_path: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\[\]-]+$")
    unit: str = Field("", max_length=UNIT_MAX_CHARS)
    direction: Literal["higher", "lower"]
    stream: Literal["stdout", "stderr"] = "stdout"
    all: bool = Field(False, description="every match is a value of the trial (iterations, windows)")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            pattern = compile_metric_regex(value)
            if pattern.groups == 0:
                raise ValueError("the regex needs a capturing group around the number")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> MetricRule:
        if (self.regex is None) == (self.json_path is None):
            raise ValueError("give exactly one of regex or json_path")
        return self


class CommandParams(WorkloadParams):
    argv: list[str] = Field(min_length=1, description="program and arguments (no shell)")
    env: dict[str, str] = Field(default_factory=dict)
    metrics: list[MetricRule] = Field(default_factory=list)
    tool_package: str | None = Field(
        None,
        # shown in an `apt-get install` command a user may paste: a package name and nothing else
        pattern=r"^[a-z0-9][a-z0-9+.-]{0,99}$",
        description="Debian package that has argv[0], for the error message",
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env(value)

    @field_validator("argv")
    @classmethod
    def _no_empty(cls, value: list[str]) -> list[str]:
        if any(a == "" or "\0" in a for a in value[:1]):
            raise ValueError("argv[0] must be a program name")
        if any("\0" in a for a in value):
            raise ValueError("arguments cannot contain NUL bytes")
        return value


ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_env(value: dict[str, str]) -> dict[str, str]:
    """Environment variable names a process (or a VM guest) can carry as data: letters, digits and _,
    not starting with a digit; values without NUL bytes."""
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            # what execve refuses at spawn time, after the plan check (the run was left failed)
            raise ValueError(
                f"environment variable name {key!r} cannot be empty or contain '=' or a NUL byte"
            )
        if not ENV_NAME_RE.match(key):
            raise ValueError(
                f"{key!r} is not an environment variable name (letters, digits and _, not starting with a digit)"
            )
        if "\0" in item:
            raise ValueError(f"the value of {key} holds a NUL byte")
    return value


def _json_get(doc: Any, path: str) -> Any:
    cur = doc
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        cur = cur[int(part[1:-1])] if part.startswith("[") else cur[part]
    return cur


@register_workload
class CommandWorkload(Workload[CommandParams]):
    kind = "command"
    Params = CommandParams
    description = "any argv; wall time plus metrics found by regex or JSON path"
    primary_metric = "wall_s"

    def requires(self, params: CommandParams) -> list[Requirement]:
        tool = params.argv[0]
        if os.path.isabs(tool):
            # checked before anything runs: a missing program made every trial fail and the run "finish"
            return [
                Requirement(
                    tool,
                    "argv[0] must name an executable file; check the path",
                    manager="manual",
                    purpose="the command",
                )
            ]
        if "/" in tool:  # relative to the trial's directory, which does not exist yet
            return []
        return [Requirement(tool, params.tool_package or tool, purpose="the command")]

    def processes(self, params: CommandParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        argv = list(params.argv)
        resolved = shutil.which(argv[0])
        if resolved:
            argv[0] = resolved
        return [ProcessSpec(argv=argv, env=dict(params.env), cwd=ctx.trial_dir)]

    def parse(self, output: TrialOutput, params: CommandParams | None = None) -> list[Metric]:
        metrics: list[Metric] = []
        rules = params.metrics if params is not None else []
        json_doc: Any = None
        for rule in rules:
            text = output.stdout if rule.stream == "stdout" else output.stderr
            if rule.regex is not None:
                values = []
                for match in compile_metric_regex(rule.regex).finditer(text):
                    raw = match.groupdict().get("value") or match.group(1)
                    values.append(float(raw))
                if not values:
                    raise ParseError(
                        f"metric {rule.name}: regex {rule.regex!r} matched nothing in {rule.stream}"
                    )
                if rule.all and len(values) > 1:
                    metrics.append(Metric.series(rule.name, values, rule.unit, rule.direction))
                else:
                    metrics.append(Metric(rule.name, values[-1], rule.unit, rule.direction))
            else:
                if json_doc is None:
                    try:
                        json_doc = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise ParseError(f"metric {rule.name}: {rule.stream} is not JSON ({exc})") from None
                try:
                    value = _json_get(json_doc, rule.json_path or "")
                except (KeyError, IndexError, TypeError):
                    raise ParseError(
                        f"metric {rule.name}: no {rule.json_path!r} in the JSON output"
                    ) from None
                if isinstance(value, list):
                    metrics.append(
                        Metric.series(rule.name, [float(v) for v in value], rule.unit, rule.direction)
                    )
                else:
                    metrics.append(Metric(rule.name, float(value), rule.unit, rule.direction))
        return metrics
