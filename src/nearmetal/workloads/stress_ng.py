"""stress-ng (Debian ``stress-ng``): a CPU (or other) stressor; bogo-ops per second is the metric.

With ``ops`` set the amount of work is fixed and time is what varies (the quota's cost shows as a longer
wall time and lower ops/s); with ``seconds`` the time is fixed and ops/s varies. Output is read from the
``--yaml`` file when there is one, else from the ``--metrics-brief`` lines, whose layout changed over the
years (``info:`` prefix before 0.12, ``metrc:`` after; extra columns in 0.17+), so columns are taken by
position after the stressor name.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import Field, model_validator

from nearmetal.host import hostcmd
from nearmetal.metrics import Metric
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

BRIEF_RE = re.compile(
    r"stress-ng:\s+(?:metrc|info):\s+\[\d+\]\s+(?P<stressor>[a-z][a-z0-9-]*)\s+(?P<ops>\d+)\s+"
    r"(?P<real>[0-9.]+)\s+(?P<usr>[0-9.]+)\s+(?P<sys>[0-9.]+)\s+(?P<rate_real>[0-9.]+)\s+(?P<rate_cpu>[0-9.]+)"
)
YAML_NAME = "stress-ng.yaml"


class StressNgParams(WorkloadParams):
    stressor: str = Field("cpu", pattern=r"^[a-z][a-z0-9-]*$", description="stress-ng stressor (cpu, vm, …)")
    workers: int = Field(1, ge=0, le=4096, description="instances of the stressor (0 = one per CPU)")
    ops: int | None = Field(None, ge=1, description="bogo operations per worker (fixed work)")
    seconds: float | None = Field(None, gt=0, le=86400, description="run time (fixed time)")
    method: str | None = Field(
        None, pattern=r"^[a-z0-9_-]+$", description="--<stressor>-method, e.g. matrixprod"
    )

    @model_validator(mode="after")
    def _work(self) -> StressNgParams:
        if self.ops is None and self.seconds is None:
            self.ops = 2000
        if self.ops is not None and self.seconds is not None:
            raise ValueError("set either ops (fixed work) or seconds (fixed time), not both")
        return self


@register_workload
class StressNgWorkload(Workload[StressNgParams]):
    kind = "stress-ng"
    Params = StressNgParams
    description = "stress-ng stressor; bogo-ops/s"
    primary_metric = "bogo_ops_per_s"

    def check_resources(self, params: StressNgParams, workdir: Path) -> None:
        from nearmetal.host.machine import check_processes, usable_cpus

        workers = params.workers or usable_cpus()
        check_processes(f"stress-ng workers={params.workers}", workers, "lower stress-ng workers")

    def requires(self, params: StressNgParams) -> list[Requirement]:
        return [Requirement("stress-ng", "stress-ng", purpose="the stressor")]

    def processes(self, params: StressNgParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        argv = ["stress-ng", f"--{params.stressor}", str(params.workers)]
        if params.ops is not None:
            argv += [f"--{params.stressor}-ops", str(params.ops)]
        else:
            argv += ["--timeout", f"{params.seconds:g}s"]
        if params.method:
            argv += [f"--{params.stressor}-method", params.method]
        argv += ["--metrics-brief", "--yaml", str(ctx.trial_dir / YAML_NAME)]
        return [ProcessSpec(argv=argv, cwd=ctx.trial_dir)]

    def resources(self, params: StressNgParams) -> dict[str, int]:
        # workers: 0 means one per CPU of wherever it runs: ask for one CPU and let it use what it gets
        return {"cpus_per_task": max(1, params.workers)}

    def parse(self, output: TrialOutput, params: StressNgParams | None = None) -> list[Metric]:
        path = output.files.get(YAML_NAME)
        if path is not None and path.exists():
            try:
                return parse_stress_ng_yaml(path.read_text())
            except ParseError:
                pass
        return parse_stress_ng_brief(output.stdout + "\n" + output.stderr)

    def parse_file(self, path: Path) -> list[Metric]:
        text = path.read_text(errors="replace")
        try:
            return parse_stress_ng_yaml(text)
        except ParseError:
            return parse_stress_ng_brief(text)

    def tool_versions(self) -> dict[str, str]:
        if not shutil.which("stress-ng"):
            return {}
        found = hostcmd.version(["stress-ng", "--version"], r"version\s+([0-9][^\s]*)")
        return {"stress-ng": found} if found else {}


@dataclass
class StressorRow:
    """One stressor's line of stress-ng's metrics (all its instances together)."""

    stressor: str
    ops: float
    real_s: float
    rate_real: float
    rate_cpu: float
    cpu_s: float | None


def _stressor_metrics(row: StressorRow, prefix: str = "") -> list[Metric]:
    out = [
        Metric(f"{prefix}bogo_ops", row.ops, "ops", "higher"),
        Metric(f"{prefix}bogo_ops_per_s", row.rate_real, "ops/s", "higher"),
        Metric(f"{prefix}bogo_ops_per_cpu_s", row.rate_cpu, "ops/s", "higher"),
        Metric(f"{prefix}stressor_s", row.real_s, "s", "lower"),
    ]
    if row.cpu_s is not None:
        out.append(Metric(f"{prefix}stressor_cpu_s", row.cpu_s, "s", "lower"))
    return out


def _metrics(rows: list[StressorRow]) -> list[Metric]:
    """One stressor: the unprefixed metrics (``bogo_ops_per_s``…). Several (``--cpu 1 --vm 1``, a job file):
    bogo-ops of different stressors are different operations and are not added up; each stressor gets
    ``<stressor>_bogo_ops_per_s``… (its name with ``-`` as ``_``; a repeated name gets ``_2``, ``_3``…), and
    only the whole run's wall time (``stressor_s``, the longest) and CPU time (``stressor_cpu_s``, the sum)
    stay unprefixed."""
    if len(rows) == 1:
        return _stressor_metrics(rows[0])
    out: list[Metric] = []
    seen: dict[str, int] = {}
    for row in rows:
        name = re.sub(r"[^a-z0-9_]", "_", row.stressor.lower())
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
        out += _stressor_metrics(row, f"{name}_")
    out.append(Metric("stressor_s", max(r.real_s for r in rows), "s", "lower"))
    cpu = [r.cpu_s for r in rows if r.cpu_s is not None]
    if cpu:
        out.append(Metric("stressor_cpu_s", sum(cpu), "s", "lower"))
    return out


def parse_stress_ng_yaml(text: str) -> list[Metric]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParseError(f"not stress-ng YAML: {exc}") from None
    entries = doc.get("metrics") if isinstance(doc, dict) else None
    if not entries:
        raise ParseError("stress-ng YAML has no 'metrics' section (was --metrics or --metrics-brief given?)")
    rows = []
    for entry in entries:
        cpu = None
        if "user-time" in entry or "system-time" in entry:
            cpu = float(entry.get("user-time", 0)) + float(entry.get("system-time", 0))
        rows.append(
            StressorRow(
                stressor=str(entry.get("stressor", "stressor")),
                ops=float(entry.get("bogo-ops", 0)),
                real_s=float(entry.get("wall-clock-time", 0)),
                rate_real=float(entry.get("bogo-ops-per-second-real-time", 0)),
                rate_cpu=float(entry.get("bogo-ops-per-second-usr-sys-time", 0)),
                cpu_s=cpu,
            )
        )
    return _metrics(rows)


def parse_stress_ng_brief(text: str) -> list[Metric]:
    matches = list(BRIEF_RE.finditer(text))
    if not matches:
        raise ParseError("no stress-ng metrics line (run stress-ng with --metrics-brief)")
    rows = [
        StressorRow(
            stressor=m["stressor"],
            ops=float(m["ops"]),
            real_s=float(m["real"]),
            rate_real=float(m["rate_real"]),
            rate_cpu=float(m["rate_cpu"]),
            cpu_s=float(m["usr"]) + float(m["sys"]),
        )
        for m in matches
    ]
    return _metrics(rows)
