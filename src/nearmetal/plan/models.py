"""The plan's models. Layer options and workload parameters come from each layer's and workload's own
pydantic model, joined here into discriminated unions so one validation pass (and one JSON Schema) covers
the whole plan."""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from nearmetal.plan.backend_options import BACKEND_OPTIONS, Resources
from nearmetal.telemetry.energy import EnergyConfig

DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
MAX_SEED = 2**31 - 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# what a plan may write where a validator converts text: the JSON Schema of the plan as written (what an
# editor checks) describes these inputs, not the float they become (json_schema_input_type)
DURATION_PATTERN = r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|min|h)?\s*$"
TARGET_PATTERN = r"^\s*(±|\+-|\+/-)?\s*([0-9]*\.?[0-9]+)\s*%\s*$"
DurationInput = Annotated[float, Field(gt=0)] | Annotated[str, Field(pattern=DURATION_PATTERN)]
TargetInput = Annotated[float, Field(gt=0, lt=1)] | Annotated[str, Field(pattern=TARGET_PATTERN)]


def parse_duration(value: Any) -> float:
    """``300``, ``"300s"``, ``"5m"``, ``"1.5h"``, ``"250ms"`` → seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 300s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|min|h)?\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 300s, 5m or 1h")
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    else:
        raise ValueError("must be a duration such as 300s, 5m or 1h")
    if not seconds > 0:
        raise ValueError("must be > 0")
    return seconds


def parse_target(value: Any) -> float:
    """``"±2%"``, ``"2%"``, ``0.02`` → 0.02: the relative precision of the ratio variant/baseline that adaptive
    repeats stop at — exp(half-width of the log ratio interval) − 1 — the same footing for a +90% rate loss
    and a +150% time loss."""
    if isinstance(value, bool):
        raise ValueError("must be a percentage such as ±2%")
    if isinstance(value, int | float):
        fraction = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(?:±|\+-|\+/-)?\s*([0-9]*\.?[0-9]+)\s*%\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a target such as ±2%")
        fraction = float(match.group(1)) / 100
    else:
        raise ValueError("must be a percentage such as ±2%")
    if not 0 < fraction < 1:
        raise ValueError("must be between 0% and 100%")
    return fraction


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Repeats(StrictModel):
    """How many measured trials per cell. A plain number fixes it; ``target`` makes it adaptive: blocks are
    added until every loss interval is at most ± target wide, or ``max`` / ``budget`` is reached."""

    min: int = Field(3, ge=1, le=100_000)
    max: int | None = Field(None, ge=1, le=100_000)
    target: float | None = Field(None, description="interval half-width to reach, e.g. '±2%'")
    budget: float | None = Field(None, description="wall-clock budget for the whole run, e.g. '30m'")

    @field_validator("target", mode="before", json_schema_input_type=TargetInput | None)
    @classmethod
    def _target(cls, value: Any) -> float | None:
        return None if value is None else parse_target(value)

    @field_validator("budget", mode="before", json_schema_input_type=DurationInput | None)
    @classmethod
    def _budget(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"min": value, "max": value}
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Repeats:
        if self.max is None:
            self.max = self.min if self.target is None else max(self.min, 30)
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be ≥ min ({self.min})")
        return self

    @property
    def adaptive(self) -> bool:
        return self.target is not None and (self.max or 0) > self.min


class Analysis(StrictModel):
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of every interval")
    bootstrap_resamples: int = Field(9999, ge=99, le=1_000_000)
    statistic: Literal["mean", "median", "floor"] = Field(
        "mean",
        description="compare means (ratio of means), medians (ratio of medians; paired: the median per-block"
        " ratio) or floors (ratio of the cells' 10th percentiles: the best-case times, which additive"
        " interference on a busy host disturbs least; a bootstrap interval from 20 blocks on)",
    )
    cv_warning: float = Field(
        0.05, gt=0, description="warn when a cell's coefficient of variation exceeds it"
    )
    outlier_mad_k: float = Field(
        3.5, gt=0, description="flag values outside median ± k·MAD (scaled MAD); flagged, never dropped"
    )
    interval_metrics: list[str] | Literal["all"] = Field(
        default_factory=list,
        description="metrics that get a loss interval besides each workload's primary one, or 'all'",
    )
    contention_guard: bool = Field(
        False,
        description="a comparison whose variant or baseline waited for the CPU more than max_cpu_wait_pct of"
        " its runnable time gets the verdict 'contended — not interpretable' (CPU studies)",
    )
    max_outside_cpu_pct: float = Field(
        25.0,
        gt=0,
        description="outside CPU use (plus steal), % of one CPU on average over a trial, above which the"
        " trial counts as contended when it has no wait evidence (records from before cpu_wait_pct)",
    )
    max_repaired_blocks: int = Field(
        0,
        ge=0,
        le=100,
        description="blocks in which one trial waited for a CPU far more than its partners (3× their median"
        " and 10 points more) are run again at the end, at most this many and a fifth of the blocks (0: never;"
        " the cpu-quota study: 2)",
    )
    max_cpu_wait_pct: float = Field(
        20.0,
        gt=0,
        le=100,
        description="share of a trial's runnable time its threads waited for a CPU (cpu_wait_pct, quota"
        " throttling excluded) above which the trial counts as contended (the verdict changes only with"
        " contention_guard)",
    )
    primary_metric: dict[str, str] = Field(
        default_factory=dict,
        description="workload name → the metric its tables lead with and adaptive repeats judge"
        " (default: the workload kind's own, e.g. wall_s for command)",
    )
    family: Literal["none", "variants", "all"] = Field(
        "variants",
        description="family-wise control of the verdicts (Holm): 'variants' = the rows of one table (every"
        " variant against the same baseline), 'all' = every row of a metric in the run, 'none' = each row"
        " alone (the per-row 95% interval is shown in every case)",
    )
    resolution: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="metric name → the quantum its values are printed at, in the metric's unit (e.g."
        " {loop_s: 0.01}); default: inferred from the values (the fewest decimals that write them all)",
    )


class BaseVariant(StrictModel):
    description: str = ""
    params: dict[str, Any] = Field(
        default_factory=dict, description="parameter overrides: 'workload.param' or 'param' for all"
    )
    only: list[str] | None = Field(None, description="workloads this variant applies to (default: all)")
    resources: Resources | None = Field(
        None, description="what a scheduler allocates for this variant's trials (Slurm, Kubernetes)"
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        # `name: [layer, layer]` is the short form of `name: {layers: [...]}`; `name: []` is bare metal
        if isinstance(value, list):
            return {"layers": value}
        if value is None:
            return {"layers": []}
        return value


@cache
def plan_model() -> type[BaseModel]:
    """Build the Plan model from the registered layers, workloads and backends' options (done once; a test
    that registers one clears the cache: ``plan_model.cache_clear()``)."""
    from nearmetal.layers import all_layer_classes
    from nearmetal.workloads import all_workload_classes

    layer_configs = tuple(cls.Config for cls in all_layer_classes().values())
    layer_union = (
        Annotated[Union[layer_configs], Field(discriminator="layer")]  # noqa: UP007
        if len(layer_configs) > 1
        else layer_configs[0]
    )

    workload_specs = []
    for kind, cls in all_workload_classes().items():
        workload_specs.append(
            create_model(
                f"{cls.__name__}Spec",
                __base__=StrictModel,
                kind=(Literal[kind], ...),  # type: ignore[arg-type]  # built from the registry
                params=(cls.Params, Field(default_factory=cls.Params)),
                timeout=(float | None, Field(None, description="per-trial timeout for this workload")),
                resources=(
                    Resources | None,
                    Field(None, description="what a scheduler allocates per trial (Slurm, Kubernetes)"),
                ),
                __validators__={
                    "_timeout": field_validator(
                        "timeout", mode="before", json_schema_input_type=DurationInput | None
                    )(lambda v: None if v is None else parse_duration(v))
                },
            )
        )
    workload_union = Annotated[Union[tuple(workload_specs)], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007

    variant = create_model(
        "Variant",
        __base__=BaseVariant,
        layers=(list[layer_union], Field(default_factory=list)),  # type: ignore[valid-type]
    )

    class Plan(StrictModel):
        """A nearmetal experiment: workloads × variants × parameter matrix × repeats."""

        name: str = Field(pattern=NAME_PATTERN)
        description: str = ""
        workloads: dict[Annotated[str, Field(pattern=NAME_PATTERN)], workload_union] = Field(  # type: ignore
            min_length=1
        )
        variants: dict[Annotated[str, Field(pattern=NAME_PATTERN)], variant] = Field(min_length=1)
        baseline: str | None = Field(
            None,
            description="the variant others are compared with (default: the "
            "first with no layers, else the first)",
        )
        matrix: dict[str, list[Any]] = Field(
            default_factory=dict, description="'workload.param' or 'param' → values to sweep"
        )
        repeats: Repeats = Field(default_factory=Repeats)
        warmup: int = Field(
            0, ge=0, le=1000, description="unmeasured trials per cell before the measured ones"
        )
        order: Literal["interleaved", "sequential", "random"] = "interleaved"
        timeout: float = Field(600.0, description="per-trial timeout, e.g. 300s or 5m")
        # the store keeps it in a 32-bit column (PostgreSQL INTEGER): refused here, not at the store
        seed: int | None = Field(
            None, ge=0, le=MAX_SEED, description="seed for trial order and resampling (recorded)"
        )
        analysis: Analysis = Field(default_factory=Analysis)
        shield: bool = Field(
            False,
            description="every trial (baseline included) in a cgroup of the highest CPU and I/O weight, above"
            " the layers' own cgroups (a quota still binds): conclusive on a busy host (local backend, root)",
        )
        energy: EnergyConfig = Field(
            default_factory=EnergyConfig,
            description="energy sources per trial and the carbon footprint's factors",
        )

        @field_validator("timeout", mode="before", json_schema_input_type=DurationInput)
        @classmethod
        def _timeout(cls, value: Any) -> float:
            return parse_duration(value)

        @field_validator("matrix")
        @classmethod
        def _matrix(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
            for key, values in value.items():
                if not values:
                    raise ValueError(f"matrix.{key} needs at least one value")
            return value

        @model_validator(mode="after")
        def _baseline(self) -> Plan:
            # an unknown baseline is reported by the loader, which knows its line
            if self.baseline is None:
                empty = [name for name, v in self.variants.items() if not v.layers]  # type: ignore[attr-defined]
                self.baseline = empty[0] if empty else next(iter(self.variants))
            return self

    # each backend's options, under its name (``slurm:``, ``kubernetes:`` …), from the backend registry
    sections: dict[str, Any] = {
        name: (options | None, Field(None, description=f"options for --backend {name}"))
        for name, options in BACKEND_OPTIONS.items()
    }
    return create_model("Plan", __base__=Plan, __doc__=Plan.__doc__, **sections)


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan *as written* (what ``nearmetal schema`` prints, what an editor's YAML
    language server checks): the inputs pydantic accepts before the validators convert them. Durations and
    targets are typed by the validators' ``json_schema_input_type``; the two model-level short forms are
    added here: ``repeats: 4`` (a number for ``{min: 4, max: 4}``) and a variant written as its list of
    layers (``bare-metal: []``, or empty for bare metal)."""
    schema = plan_model().model_json_schema(mode="validation")
    defs = schema.get("$defs", {})
    if "Repeats" in defs:
        defs["Repeats"] = {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 100_000, "description": "min = max = this"},
                defs["Repeats"],
            ]
        }
    if "Variant" in defs:
        layers = defs["Variant"]["properties"]["layers"]
        defs["Variant"] = {
            "anyOf": [
                {**layers, "description": "the variant's layers (short form); [] is bare metal"},
                {"type": "null", "description": "bare metal"},
                defs["Variant"],
            ]
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
    }
