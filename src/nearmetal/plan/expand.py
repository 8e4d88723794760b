"""From a validated plan to cells (workload × matrix point × variant) and trials (repeats of a cell)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from nearmetal.labels import cell_key, point_label
from nearmetal.layers.base import LayerConfig
from nearmetal.plan.messages import describe_error
from nearmetal.plan.suggest import did_you_mean
from nearmetal.workloads import workload_class
from nearmetal.workloads.base import WorkloadParams

Loc = tuple[str | int, ...]
# the most cells a plan may have: each cell is validated and becomes at least one trial, and a run has at
# most run.preflight.MAX_TRIALS (20,000) trials unless --allow-large; the count is computed from the
# matrix's value counts before any cell is built (10⁴ × 10³ values are refused at once, not expanded)
MAX_CELLS = 20_000


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Cell:
    """One combination the study measures; trials are its repeats."""

    workload: str
    kind: str
    variant: str
    point: dict[str, Any]
    params: WorkloadParams
    layers: tuple[LayerConfig, ...]
    timeout: float
    is_baseline: bool

    @property
    def point_label(self) -> str:
        return point_label(self.point)

    @property
    def key(self) -> str:
        return cell_key(self.workload, self.variant, self.point)

    @property
    def cell_id(self) -> str:
        digest = hashlib.sha256(canonical_json([self.workload, self.variant, self.point]).encode())
        return digest.hexdigest()[:10]

    @property
    def comparison_key(self) -> str:
        """Cells with the same workload and matrix point are compared across variants."""
        return canonical_json([self.workload, self.point])


@dataclass(frozen=True)
class Trial:
    cell: Cell
    index: int
    warmup: bool = False
    block: int = 0

    @property
    def key(self) -> str:
        return f"{self.cell.cell_id}-{'w' if self.warmup else 'r'}{self.index}"


@dataclass
class Expansion:
    cells: list[Cell] = field(default_factory=list)
    problems: list[tuple[Loc, str]] = field(default_factory=list)


def _param_fields(kind: str) -> set[str]:
    return set(workload_class(kind).Params.model_fields)


def resolve_key(plan: BaseModel, key: str) -> tuple[list[tuple[str, str]], str | None]:
    """``'lammps.steps'`` → [('lammps', 'steps')]; ``'steps'`` → every workload with a ``steps`` param."""
    workloads: dict[str, Any] = plan.workloads  # type: ignore[attr-defined]
    if "." in key:
        name, _, param = key.partition(".")
        if name not in workloads:
            return [], f"no workload named {name!r} (workloads: {', '.join(workloads)})" + did_you_mean(
                name, workloads
            )
        kind = workloads[name].kind
        if param not in _param_fields(kind):
            fields = ", ".join(sorted(_param_fields(kind)))
            return [], (
                f"workload {name!r} ({kind}) has no parameter {param!r} (parameters: {fields})"
                + did_you_mean(param, _param_fields(kind))
            )
        return [(name, param)], None
    targets = [(name, key) for name, spec in workloads.items() if key in _param_fields(spec.kind)]
    if not targets:
        every = {p for spec in workloads.values() for p in _param_fields(spec.kind)}
        return [], f"no workload has a parameter {key!r}; write it as 'workload.param'" + did_you_mean(
            key, sorted(every)
        )
    return targets, None


def expand_cells(plan: BaseModel) -> Expansion:
    """Every cell of the plan with its parameters validated; problems carry the plan path they come from."""
    out = Expansion()
    workloads: dict[str, Any] = plan.workloads  # type: ignore[attr-defined]
    variants: dict[str, Any] = plan.variants  # type: ignore[attr-defined]
    matrix: dict[str, list[Any]] = plan.matrix  # type: ignore[attr-defined]
    baseline: str = plan.baseline  # type: ignore[attr-defined]

    if baseline not in variants:
        out.problems.append(
            (
                ("baseline",),
                f"{baseline!r} is not a variant (variants: {', '.join(variants)})"
                + did_you_mean(baseline, variants),
            )
        )

    # matrix axes per workload: param -> (values, matrix key)
    axes: dict[str, dict[str, tuple[list[Any], str]]] = {name: {} for name in workloads}
    for key, values in matrix.items():
        targets, problem = resolve_key(plan, key)
        if problem:
            out.problems.append((("matrix", key), problem))
        seen: set[str] = set()
        for index, value in enumerate(values):
            text = canonical_json(value)
            if text in seen:  # two points with the same value would be one cell twice
                out.problems.append((("matrix", key, index), f"the value {text[:40]} appears twice"))
            seen.add(text)
        for name, param in targets:
            axes[name][param] = (values, key)

    overrides: dict[str, dict[str, dict[str, tuple[Any, Loc]]]] = {
        v: {w: {} for w in workloads} for v in variants
    }
    for vname, variant in variants.items():
        for key, value in variant.params.items():
            targets, problem = resolve_key(plan, key)
            if problem:
                out.problems.append((("variants", vname, "params", key), problem))
            for name, param in targets:
                overrides[vname][name][param] = (value, ("variants", vname, "params", key))
        for name in variant.only or []:
            if name not in workloads:
                out.problems.append(
                    (
                        ("variants", vname, "only"),
                        f"no workload named {name!r}" + did_you_mean(name, workloads),
                    )
                )

    if out.problems:
        return out

    # the cell count from the value counts, before any cell is built
    shapes = {
        wname: [
            *(len(values) for values, _ in axes[wname].values()),
            sum(1 for v in variants.values() if v.only is None or wname in v.only),
        ]
        for wname in workloads
    }
    total = sum(math.prod(shape) for shape in shapes.values())
    if total > MAX_CELLS:
        sizes = " + ".join(" × ".join(map(str, shape)) for shape in shapes.values())
        out.problems.append(
            (
                ("matrix",),
                f"the plan makes {total:,} cells ({sizes}: matrix values × variants), more than "
                f"{MAX_CELLS:,}; split the plan or drop matrix values",
            )
        )
        return out

    for wname, spec in workloads.items():
        params_cls = workload_class(spec.kind).Params
        base = spec.params.model_dump(exclude_unset=True)
        wl_axes = axes[wname]
        names = list(wl_axes)
        for combo in itertools.product(*(range(len(wl_axes[n][0])) for n in names)):
            point = {n: wl_axes[n][0][i] for n, i in zip(names, combo, strict=True)}
            point_locs = {n: ("matrix", wl_axes[n][1], i) for n, i in zip(names, combo, strict=True)}
            for vname, variant in variants.items():
                if variant.only is not None and wname not in variant.only:
                    continue
                merged = {**base, **point}
                locs: dict[str, Loc] = dict(point_locs)
                for param, (value, loc) in overrides[vname][wname].items():
                    merged[param] = value
                    locs[param] = loc
                try:
                    params = params_cls.model_validate(merged)
                except ValidationError as exc:
                    for err in exc.errors():
                        field_name = err["loc"][0] if err["loc"] else ""
                        loc = locs.get(str(field_name), ("workloads", wname, "params", *err["loc"]))
                        found = (loc, describe_error(dict(err)))
                        if found not in out.problems:
                            out.problems.append(found)
                    continue
                out.cells.append(
                    Cell(
                        workload=wname,
                        kind=spec.kind,
                        variant=vname,
                        point=point,
                        params=params,
                        layers=tuple(variant.layers),
                        timeout=spec.timeout or plan.timeout,  # type: ignore[attr-defined]
                        is_baseline=vname == baseline,
                    )
                )
    return out
