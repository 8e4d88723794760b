"""colocate: time slicing ×k — the measured process shares its CPU (or GPU) with k−1 copies of itself.

The method of seed 001 part 4: processes cannot be started at the same instant, so k−1 copies of the
workload start first, set to run longer (``neighbour_params``), each waited for until it prints that its
steady state began; then the measured copy starts, and it must start and finish while all k−1 are still
running. The local backend checks that: a trial where a neighbour ended before the measured copy is
marked invalid, and the trial's placement records when each process started, was ready and whether it
was still running when the measured copy ended.

On CPUs, ``cpus`` confines all k copies to the same cpuset (the CPU analog of one GPU) so they really take
turns; stacking the ``cpuset`` layer does the same. On a GPU all copies use the same device (with the
``gpu`` layer, every copy gets its CUDA_VISIBLE_DEVICES). Per-process and aggregate (per process × k)
values come from the analysis (``nearmetal.analysis.sharing``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from nearmetal.errors import NearmetalError
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.layers.cpuset import CpusetConfig, CpusetLayer
from nearmetal.workloads.base import ProcessSpec


class ColocateConfig(LayerConfig):
    layer: Literal["colocate"] = "colocate"
    copies: int = Field(
        ge=1, le=256, description="processes sharing the device: the measured one and k−1 neighbours"
    )
    # generous: the measured copy's start-up (interpreter, imports) is not scaled, and under k-way sharing
    # everything takes k times longer; neighbours are stopped when the measured copy ends anyway
    neighbour_length: float = Field(
        100.0,
        ge=1.0,
        le=100_000,
        description="neighbours get this many times the measured copy's work (they are stopped when it "
        "ends); the workload says which parameter that changes",
    )
    neighbour_params: dict[str, Any] = Field(
        default_factory=dict,
        description="workload parameters for the neighbours, over neighbour_length (e.g. {duration_s: 60})",
    )
    cpus: str | int | None = Field(
        None, description="confine every copy to this cpuset (a CPU list or count)"
    )
    ready_delay_s: float = Field(
        1.0, ge=0, le=600, description="wait after starting a neighbour whose workload prints no ready line"
    )


@register_layer
class ColocateLayer(Layer[ColocateConfig]):
    kind = "colocate"
    family = "sharing"
    Config = ColocateConfig
    description = "time slicing ×k: k−1 longer-running copies of the workload share its CPU set or GPU"
    needs_root = False

    def __init__(self, config: ColocateConfig) -> None:
        super().__init__(config)
        self.cpuset: CpusetLayer | None = None
        if config.cpus is not None:
            self.cpuset = CpusetLayer(CpusetConfig(cpus=config.cpus))
            self.needs_root = True  # type: ignore[misc]  # this instance writes a cgroup

    @classmethod
    def example_config(cls) -> dict[str, object]:
        return {"layer": "colocate", "copies": 2}

    def neighbours(self, ctx: TrialContext) -> list[ProcessSpec]:
        if ctx.render_processes is None:
            raise NearmetalError(
                "colocate needs the workload's processes for its neighbours, and this backend gives none",
                fix="run the plan with the local backend",
            )
        longer = ctx.longer_params(self.config.neighbour_length) if ctx.longer_params else {}
        overrides = {**longer, **self.config.neighbour_params}
        if self.config.copies > 1 and not overrides:
            ctx.caveats.append(
                "colocate: this workload cannot be told to run longer and no neighbour_params were given, "
                "so neighbours run as long as the measured copy and may end first (the trial is then invalid)"
            )
        out: list[ProcessSpec] = []
        for index in range(1, self.config.copies):
            try:
                specs = ctx.render_processes(overrides)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
                raise NearmetalError(
                    f"colocate.neighbour_params do not fit the workload: {problems}",
                    fix="give parameters the workload has (nearmetal schema lists them)",
                ) from None
            for spec in specs:
                if spec.role != "main":
                    continue  # a workload's own servers are not copied: only what is measured competes
                spec.role = "neighbour"
                spec.name = f"neighbour-{index}"
                if not spec.ready_pattern:
                    spec.ready_delay_s = max(spec.ready_delay_s, self.config.ready_delay_s)
                out.append(spec)
        return out

    def setup(self, ctx: TrialContext) -> None:
        if self.cpuset is not None:
            self.cpuset.setup(ctx)
        neighbours = self.neighbours(ctx)
        ctx.background.extend(neighbours)
        ctx.placement["colocate"] = {
            "copies": self.config.copies,
            "neighbours": len(neighbours),
            "neighbour_params": (
                {**ctx.longer_params(self.config.neighbour_length), **self.config.neighbour_params}
                if ctx.longer_params
                else self.config.neighbour_params
            ),
            "cpus": ctx.placement.get("cpuset", {}).get("cpus") if self.cpuset else None,
        }

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        if self.cpuset is not None:
            return self.cpuset.wrap(process, ctx)
        return process

    def teardown(self, ctx: TrialContext) -> None:
        if self.cpuset is not None:
            self.cpuset.teardown(ctx)
