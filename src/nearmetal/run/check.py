"""``nearmetal check PLAN``: everything a run would refuse, found at once and without running anything, and
what the run would be (cells, trials, tools, an estimate of its duration).

The checks are the runner's own (``run.preflight.preflight`` and the functions it is made of, ``check_resources``)
and the plan loader's (which also refuses what the store cannot keep, such as metric names longer than its
column); this module only calls each of them separately, so that one problem does not hide the next.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nearmetal.errors import NearmetalError, PlanError

# parameters that fix how long a program runs (fio runtime/ramp_time, flops duration_s/warmup_s, iperf3
# seconds/omit, stress-ng and tcp-rr seconds, http-load/io-probe duration_s): a trial lasts their sum
TIME_FIELDS = ("runtime", "ramp_time", "duration_s", "warmup_s", "seconds", "omit")
# what a trial costs around its program (layers set up and torn down, telemetry, storing): a round figure
# for the local backend's light layers; a VM boot or an image build is more, and the store's earlier
# trials of the same cell (when there are some) replace the guess
SETUP_S = 1.0
HEURISTIC = (
    "per trial: the mean duration of the store's earlier trials of the same cell with the same parameters; "
    f"else the sum of its time parameters ({', '.join(TIME_FIELDS)}) + {SETUP_S:g} s of set-up; "
    "else unknown, at most the trial's timeout"
)


@dataclass
class Problem:
    """One reason the run would be refused: ``kind`` (plan, paths, backend, tools, privileges, sizes,
    preflight), the message as the run would print it, and how to fix it."""

    kind: str
    message: str
    fix: str | None = None


@dataclass
class Tool:
    tool: str
    package: str
    manager: str
    available: bool
    optional: bool
    purpose: str = ""


@dataclass
class CellCheck:
    key: str
    cell_id: str
    workload: str
    kind: str
    variant: str
    point: dict[str, Any]
    layers: list[str]
    tools: list[Tool]
    trials_min: int
    trials_max: int
    timeout_s: float
    trial_s: float | None  # the estimate of one trial, None when unknown
    trial_s_from: str  # "store", "parameters" or "unknown"
    skipped: str | None = None  # an optional tool is missing: the run leaves the cell out


@dataclass
class CheckReport:
    plan: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # powers beyond running the workloads as this user (reach.plan_powers): shown as "this plan asks for:"
    powers: list[str] = field(default_factory=list)
    cells: list[CellCheck] = field(default_factory=list)
    backend: str = "local"
    budget_s: float | None = None  # the plan's repeats.budget: an adaptive run stops adding blocks there

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def trials_min(self) -> int:
        return sum(c.trials_min for c in self.cells if not c.skipped)

    @property
    def trials_max(self) -> int:
        return sum(c.trials_max for c in self.cells if not c.skipped)

    def duration(self) -> dict[str, Any]:
        """The run's estimated duration: low (every cell stops at ``repeats.min``) and high (at ``max``)
        from the cells whose trial time is known, the trials whose time is unknown, and the bound when every
        trial ran to its timeout (or the plan's budget, which stops the blocks of an adaptive run)."""
        cells = [c for c in self.cells if not c.skipped]
        known = [c for c in cells if c.trial_s is not None]
        low = sum(c.trials_min * (c.trial_s or 0.0) for c in known)
        high = sum(c.trials_max * (c.trial_s or 0.0) for c in known)
        worst = sum(c.trials_max * c.timeout_s for c in cells)
        budget_s = self.budget_s
        if budget_s is not None:  # the budget stops the blocks after the first repeats.min ones
            worst_min = sum(c.trials_min * c.timeout_s for c in cells)
            high, worst = min(high, max(low, budget_s)), min(worst, max(worst_min, budget_s))
        return {
            "low_s": round(low, 1),
            "high_s": round(high, 1),
            "unknown_trials": sum(c.trials_max for c in cells if c.trial_s is None),
            "at_most_s": round(worst, 1),
            "budget_s": budget_s,
            "from_store": sum(1 for c in known if c.trial_s_from == "store"),
            "from_parameters": sum(1 for c in known if c.trial_s_from == "parameters"),
            "heuristic": HEURISTIC,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "ok": self.ok,
            "backend": self.backend,
            "problems": [asdict(p) for p in self.problems],
            "notes": self.notes,
            "asks_for": self.powers,
            "cells": [asdict(c) for c in self.cells],
            "trials": {"min": self.trials_min, "max": self.trials_max},
            "duration": self.duration(),
        }


def _add(report: CheckReport, kind: str, exc: NearmetalError) -> None:
    """The error as problems: a plan error has one line per problem, the others one message each."""
    if isinstance(exc, PlanError):
        for line in exc.problems:
            if not any(p.message == line for p in report.problems):
                report.problems.append(Problem(kind, line))
    elif not any(p.message == exc.message for p in report.problems):
        report.problems.append(Problem(kind, exc.message, exc.fix))


def _time_parameters(params: Any) -> float | None:
    values = [getattr(params, name, None) for name in TIME_FIELDS]
    seconds = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if getattr(params, "time_based", True) is False:  # fio without time_based ends when its files are done
        return None
    return sum(seconds) + SETUP_S if seconds else None


def _stored_trial_seconds(db: str | None, cells: Sequence[Any]) -> dict[str, float]:
    """cell id → mean duration of the store's finished trials of that cell with the same parameters.
    Only a store that exists is read: checking a plan never creates one."""
    from nearmetal.store import DEFAULT_DB

    if db is None and not Path(DEFAULT_DB).exists():
        return {}
    try:
        from sqlalchemy import select

        from nearmetal.plan import canonical_json
        from nearmetal.store import Store
        from nearmetal.store.schema import TrialRow

        store = Store(db)
        wanted = {c.cell_id: canonical_json(c.params.model_dump(mode="json")) for c in cells}
        stmt = (
            select(TrialRow.cell_id, TrialRow.params, TrialRow.started_at, TrialRow.ended_at)
            .where(TrialRow.cell_id.in_(list(wanted)), TrialRow.status == "ok")
            .order_by(TrialRow.id.desc())
            .limit(5000)
        )
        durations: dict[str, list[float]] = {}
        with store.engine.connect() as conn:
            for cell_id, params, started, ended in conn.execute(stmt):
                if started is None or ended is None or canonical_json(params or {}) != wanted[cell_id]:
                    continue
                durations.setdefault(cell_id, []).append(float(ended) - float(started))
        store.engine.dispose()
    except Exception:  # an estimate is a nicety: a store that cannot be read gives none
        return {}
    return {cell_id: sum(v) / len(v) for cell_id, v in durations.items() if v}


def check_plan(
    plan: str | Path,
    *,
    backend: str = "local",
    backend_options: dict[str, Any] | None = None,
    allow_paths: Sequence[Path] = (),
    allow_large: bool = False,
    workdir: Path | None = None,
    db: str | None = None,
    allow_network: bool = False,
) -> CheckReport:
    """Every reason ``nearmetal run PLAN`` would refuse the plan here, and what the run would be."""
    from nearmetal.backends.select import make_backend
    from nearmetal.layers import make_layer
    from nearmetal.plan import load_plan
    from nearmetal.plan.paths import check_plan_paths
    from nearmetal.run.preflight import (
        check_resources,
        missing_requirements,
        preflight,
        raise_if_root_needed,
        skip_unavailable_cells,
    )
    from nearmetal.run.records import DEFAULT_WORKDIR
    from nearmetal.workloads import get_workload

    report = CheckReport(plan=str(plan), backend=backend)
    try:
        loaded = load_plan(plan)
    except PlanError as exc:  # the rest is checked on the parts of the plan that do validate
        _add(report, "plan", exc)
        if backend == "local":
            _check_valid_parts(report, plan)
        return report
    report.plan = loaded.source
    report.budget_s = loaded.plan.repeats.budget
    from nearmetal.reach import check_network, plan_powers

    report.powers = plan_powers(loaded)
    try:
        check_network(loaded, allow_network)
    except NearmetalError as exc:
        _add(report, "network", exc)

    try:
        runner_backend = make_backend(backend, loaded.plan, **(backend_options or {}))
    except NearmetalError as exc:
        _add(report, "backend", exc)
        runner_backend = None
    remote = runner_backend is not None and runner_backend.remote

    # what the run itself does first, on a copy: cells whose only missing tools are optional are left out
    kept = copy.copy(loaded)
    skipped: dict[str, str] = {}
    if not remote:
        try:
            skipped = skip_unavailable_cells(kept)
        except NearmetalError as exc:
            _add(report, "tools", exc)
    for key, why in skipped.items():
        report.notes.append(f"{key} would be skipped: {why}")

    # the preflight as the run calls it (it stops at its first refusal) ...
    if runner_backend is not None:
        try:
            preflight(kept, runner_backend, allow_paths, allow_network)
        except NearmetalError as exc:
            first_preflight: NearmetalError | None = exc
        else:
            first_preflight = None
    else:
        first_preflight = None
    # ... then each of its parts, so that one refusal does not hide the next
    try:
        check_plan_paths(kept, allow_paths)
    except PlanError as exc:
        _add(report, "paths", exc)
    backend_name = runner_backend.name if runner_backend is not None else backend
    unsupported: dict[str, list[str]] = {}
    for cell in kept.cells:
        for config in cell.layers:
            allowed = make_layer(config).backends
            if allowed is not None and backend_name not in allowed:
                unsupported.setdefault(config.layer, []).append(cell.key)
    for layer, cells in unsupported.items():
        report.problems.append(
            Problem(
                "backend",
                f"layer {layer} cannot run on the {backend_name} backend (used by {', '.join(cells[:3])}"
                + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
                + ")",
                "run the plan with a backend that applies it (e.g. --backend kubernetes for pod)",
            )
        )
    if runner_backend is not None and runner_backend.remote:
        try:
            runner_backend.check(kept)
        except NearmetalError as exc:
            _add(report, "backend", exc)
    else:
        missing = missing_requirements(kept)
        for req, cells in missing.items():
            cells = list(dict.fromkeys(cells))
            shown = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
            report.problems.append(
                Problem("tools", f"{req.missing_text()} (needed by {shown})", req.install_hint())
            )
        try:
            raise_if_root_needed(kept)
        except NearmetalError as exc:
            _add(report, "privileges", exc)
    if first_preflight is not None and not _covered(first_preflight, report):
        _add(report, "preflight", first_preflight)

    run_dir = Path(workdir or DEFAULT_WORKDIR)
    try:
        check_resources(kept, run_dir if run_dir.exists() else Path.cwd(), allow_large)
    except NearmetalError as exc:
        _add(report, "sizes", exc)

    stored = _stored_trial_seconds(db, loaded.cells)
    repeats = loaded.plan.repeats
    warmup = loaded.plan.warmup
    for cell in loaded.cells:
        reqs = list(get_workload(cell.kind).requires(cell.params))
        for config in cell.layers:
            reqs += make_layer(config).requires()
        tools = [
            Tool(r.tool, r.package, r.manager, r.available(), r.optional, r.purpose)
            for r in dict.fromkeys(reqs)
        ]
        if cell.cell_id in stored:
            trial_s, source = stored[cell.cell_id], "store"
        elif (from_params := _time_parameters(cell.params)) is not None:
            trial_s, source = from_params, "parameters"
        else:
            trial_s, source = None, "unknown"
        report.cells.append(
            CellCheck(
                key=cell.key,
                cell_id=cell.cell_id,
                workload=cell.workload,
                kind=cell.kind,
                variant=cell.variant,
                point=dict(cell.point),
                layers=[config.layer for config in cell.layers],
                tools=tools,
                trials_min=warmup + repeats.min,
                trials_max=warmup + max(repeats.min, repeats.max or 0),
                timeout_s=cell.timeout,
                trial_s=None if trial_s is None else round(min(trial_s, cell.timeout), 2),
                trial_s_from=source,
                skipped=skipped.get(cell.key),
            )
        )
    return report


def _valid_parts(plan: str | Path) -> Any:
    """A plan of the parts of an invalid plan that validate on their own: each workload that does (with
    its parameters), each variant's layers that do; None when nothing does (or the file cannot be read)."""
    import yaml

    from nearmetal.plan import parse_plan_text
    from nearmetal.plan.load import _read_plan_file

    def valid(data: dict[str, Any]) -> bool:
        try:
            parse_plan_text(yaml.safe_dump(data), source="part")
        except (PlanError, yaml.YAMLError):
            return False
        return True

    try:
        data = yaml.safe_load(_read_plan_file(Path(plan)))
    except (PlanError, yaml.YAMLError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("workloads"), dict):
        return None
    bare: dict[str, Any] = {"bare-metal": []}
    workloads = {
        str(name): spec
        for name, spec in data["workloads"].items()
        if valid({"name": "part", "workloads": {str(name): spec}, "variants": bare})
    }
    if not workloads:
        return None
    variants: dict[str, Any] = {}
    for variant in (data.get("variants") or {}).values() if isinstance(data.get("variants"), dict) else []:
        layers = variant if isinstance(variant, list) else (variant or {}).get("layers", [])
        if isinstance(layers, list) and valid(
            {"name": "part", "workloads": workloads, "variants": {"v": layers}}
        ):
            variants[f"v{len(variants)}"] = layers
    try:
        return parse_plan_text(
            yaml.safe_dump({"name": "part", "workloads": workloads, "variants": variants or bare}),
            source="part",
        )
    except PlanError:
        return None


def _check_valid_parts(report: CheckReport, plan: str | Path) -> None:
    """``check`` of a plan with field errors: the tools and privileges of the parts that validate, in the
    same pass (a missing program is not left for after every field is fixed)."""
    from nearmetal.run.preflight import missing_requirements, raise_if_root_needed

    part = _valid_parts(plan)
    if part is None:
        return
    for req, cells in missing_requirements(part).items():
        workloads = list(dict.fromkeys(key.split("/")[0] for key in cells))
        report.problems.append(
            Problem(
                "tools", f"{req.missing_text()} (needed by {', '.join(workloads[:3])})", req.install_hint()
            )
        )
    try:
        raise_if_root_needed(part)
    except NearmetalError as exc:
        _add(report, "privileges", exc)


def _covered(exc: NearmetalError, report: CheckReport) -> bool:
    """Is the preflight's first refusal one the separate checks found too? (the same kind of error about
    the same thing: its plan lines, its tools, its privileges)"""
    from nearmetal.errors import MissingToolError, PrivilegeError

    kinds = {p.kind for p in report.problems}
    if isinstance(exc, PlanError):
        return all(any(p.message == line for p in report.problems) for line in exc.problems)
    if isinstance(exc, MissingToolError):
        return "tools" in kinds
    if isinstance(exc, PrivilegeError):
        return "privileges" in kinds
    if "cannot run on the" in exc.message:
        return "backend" in kinds
    return any(p.message == exc.message for p in report.problems)
