"""flops: dense matrix-multiply throughput per precision, in TFLOPS (seed 001 parts 3–5).

Backends: numpy (its BLAS) or torch on the CPU; torch (cuBLAS) on a CUDA GPU — fp64, fp32, tf32 (fp32
inputs on tensor cores), fp16 and bf16 (tensor cores); and NVIDIA's ``dcgmproftester`` as the seed ran it
(``--no-dcgm-validation -t 1006/1007/1008/1004 -d SECONDS``), whose fp16 (-t 1008) is the non-tensor FP16
pipe and fp16-tensor (-t 1004) the tensor cores. One trial is a warm-up (excluded) then ``duration_s`` of
timed multiplications; the metric ``tflops`` is their flops over their time (dcgmproftester: the series of
its equal-length reporting intervals after its warm-up).

dcgmproftester's warm-up rule (``steady_intervals``): the first reported interval always counts as warm-up
(it includes CUDA context creation; DCGM 3.1 prints ``0.0 gflops`` there), and so does every interval
directly after it that is below half the median of the intervals after the first (clocks still ramping);
the rest are the measurement. Only leading intervals are dropped: a low interval later in the run (a
neighbour's time slice) is a measurement, and a run whose intervals are all low stays as it is. With one
interval only, that interval is kept.

dcgmproftester's output changed over DCGM releases; the parser reads all three forms seen:
``TensorEngineActive: generated ???, dcgm 0.000 (27605.2 gflops)`` (DCGM 2, dcgmproftester11),
``Worker 0:0[1004]: TensorEngineActive: generated ???, dcgm 0.000 (250362.2 gflops)`` (DCGM 3) and
``Worker 0:0 [1004]: TensorEngineActive: generated ???, dcgm 0 (1.89e+05 gflops).`` (DCGM 3.3+/4).
"""

from __future__ import annotations

import re
import shutil
import statistics
from typing import Any, Literal

from pydantic import Field, model_validator

from nearmetal.metrics import Metric
from nearmetal.workloads.base import (
    ParseError,
    ProcessSpec,
    Requirement,
    TrialOutput,
    WorkloadContext,
    register_workload,
)
from nearmetal.workloads.pyprogram import DeviceParams, ProgramWorkload

Precision = Literal["fp64", "fp32", "tf32", "fp16", "bf16", "fp16-tensor"]
# dcgmproftester field ids (DCGM_FI_PROF_PIPE_*_ACTIVE) and the header it prints for each
DCGM_FIELDS = {"fp64": 1006, "fp32": 1007, "fp16": 1008, "fp16-tensor": 1004}
DCGM_HEADERS = {
    "Fp64EngineActive": "fp64",
    "Fp32EngineActive": "fp32",
    "Fp16EngineActive": "fp16",
    "TensorEngineActive": "fp16-tensor",
}
DCGM_BINARIES = ("dcgmproftester13", "dcgmproftester12", "dcgmproftester11", "dcgmproftester")
DCGM_PACKAGE = "datacenter-gpu-manager-4-cuda12 (or datacenter-gpu-manager), from NVIDIA's CUDA repository"
_DCGM_LINE = re.compile(
    r"(?:Worker\s+(?P<gpu>\d+):(?P<worker>\d+)\s*\[(?P<field>\d+)\]:\s*)?"
    r"(?P<header>\w+EngineActive): generated [^,]*, dcgm [-+0-9.eE]+ \((?P<gflops>[-+0-9.eE]+) gflops\)"
)
CPU_SIZE = 2048
GPU_SIZE = 8192


class FlopsParams(DeviceParams):
    precision: Precision = Field("fp64", description="fp64, fp32, tf32 (GPU), fp16, bf16, fp16-tensor (dcgm)")
    backend: Literal["auto", "numpy", "torch", "dcgmproftester"] = Field(
        "auto", description="auto: numpy for fp64/fp32 on a CPU, torch otherwise"
    )
    size: int | None = Field(
        None, ge=16, le=65536, description=f"n of the n×n matrices ({CPU_SIZE} CPU, {GPU_SIZE} GPU)"
    )
    duration_s: float = Field(5.0, gt=0, le=86400, description="measured seconds (after the warm-up)")
    warmup_s: float = Field(1.0, ge=0, le=3600, description="unmeasured seconds first")
    threads: int | None = Field(None, ge=1, le=4096, description="CPU threads (default: one per allowed CPU)")

    @property
    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        if self.precision == "fp16-tensor":
            return "dcgmproftester"
        if not self.on_gpu and self.precision in ("fp64", "fp32"):
            return "numpy"
        return "torch"

    @property
    def resolved_size(self) -> int:
        return self.size or (GPU_SIZE if self.on_gpu else CPU_SIZE)

    @model_validator(mode="after")
    def _combination(self) -> FlopsParams:
        backend = self.resolved_backend
        if backend == "numpy" and (self.on_gpu or self.precision not in ("fp64", "fp32")):
            raise ValueError("backend numpy runs fp64 or fp32 on the CPU only; use backend torch")
        if self.precision == "tf32" and not self.on_gpu:
            raise ValueError("tf32 is a GPU tensor-core mode; use fp32 on a CPU, or device: cuda")
        if backend == "dcgmproftester":
            if not self.on_gpu:
                raise ValueError("dcgmproftester loads a GPU: set device: cuda (or cuda:N)")
            if self.precision not in DCGM_FIELDS:
                raise ValueError(f"dcgmproftester measures {', '.join(DCGM_FIELDS)}, not {self.precision}")
        elif self.precision == "fp16-tensor":
            raise ValueError(
                "fp16-tensor is dcgmproftester's tensor-core test; with torch, fp16 uses tensor cores"
            )
        return self


def find_dcgmproftester() -> str | None:
    for name in DCGM_BINARIES:
        if path := shutil.which(name):
            return path
    return None


def parse_dcgmproftester(text: str) -> tuple[str, dict[int, list[float]]]:
    """(precision, {gpu index: [TFLOPS per reported interval]}) from dcgmproftester's output."""
    precision = None
    per_gpu: dict[int, list[float]] = {}
    for match in _DCGM_LINE.finditer(text):
        header = match["header"]
        if header not in DCGM_HEADERS:
            continue
        found = DCGM_HEADERS[header]
        if precision not in (None, found):
            raise ParseError(f"the output mixes {precision} and {found} tests; run one test (-t) per trial")
        precision = found
        gpu = int(match["gpu"]) if match["gpu"] is not None else 0
        per_gpu.setdefault(gpu, []).append(float(match["gflops"]) / 1000.0)
    if precision is None:
        raise ParseError(
            "no '<Pipe>EngineActive: generated ..., dcgm ... (N gflops)' lines: dcgmproftester did not run "
            "a test (is the GPU visible, and was it started with --no-dcgm-validation -t FIELD?)"
        )
    return precision, per_gpu


# an interval right after the first below this share of the median is still warming up
WARMUP_FRACTION = 0.5


def steady_intervals(values: list[float]) -> list[float]:
    """dcgmproftester's intervals without its warm-up (the rule in the module docstring)."""
    if len(values) <= 1:
        return list(values)
    threshold = WARMUP_FRACTION * statistics.median(values[1:])
    start = 1
    while start < len(values) - 1 and values[start] < threshold:
        start += 1
    return values[start:]


@register_workload
class FlopsWorkload(ProgramWorkload[FlopsParams]):
    kind = "flops"
    Params = FlopsParams
    description = "dense matmul TFLOPS per precision: numpy/torch on CPU, torch or dcgmproftester on GPU"
    primary_metric = "tflops"
    program = "flops"

    def needs_torch(self, params: FlopsParams) -> bool:
        return params.resolved_backend == "torch"

    def requires(self, params: FlopsParams) -> list[Requirement]:
        reqs = super().requires(params)
        if params.resolved_backend == "dcgmproftester":
            reqs = [r for r in reqs if r.tool != "torch"]
            binary = find_dcgmproftester()
            reqs.append(
                Requirement(
                    binary or "dcgmproftester12", DCGM_PACKAGE, purpose="NVIDIA's CUDA load generator"
                )
            )
        return reqs

    def arguments(self, params: FlopsParams, ctx: WorkloadContext) -> list[str]:
        args = [
            f"--precision={params.precision}",
            f"--backend={params.resolved_backend}",
            f"--device={params.device}",
            f"--size={params.resolved_size}",
            f"--duration={params.duration_s:g}",
            f"--warmup={params.warmup_s:g}",
            f"--seed={params.seed}",
        ]
        if params.threads:
            args.append(f"--threads={params.threads}")
        return args

    def longer_params(self, params: FlopsParams, factor: float) -> dict[str, Any]:
        return {"duration_s": params.duration_s * factor}

    def processes(self, params: FlopsParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        if params.resolved_backend != "dcgmproftester":
            return super().processes(params, ctx)
        binary = find_dcgmproftester() or "dcgmproftester12"
        index = params.device.partition(":")[2] or "0"
        # warm-up is part of the run: the parser drops the first interval
        seconds = max(1, round(params.duration_s + params.warmup_s))
        argv = [
            binary,
            "--no-dcgm-validation",
            "-t",
            str(DCGM_FIELDS[params.precision]),
            "-d",
            str(seconds),
            "-i",
            index,
        ]
        return [
            ProcessSpec(
                argv=argv, cwd=ctx.trial_dir, ready_pattern=r"EngineActive: generated", ready_timeout_s=120
            )
        ]

    def parse(self, output: TrialOutput, params: FlopsParams | None = None) -> list[Metric]:
        if "NEARMETAL_RESULT" in output.stdout:
            return self.metrics(self.result(output))
        _, per_gpu = parse_dcgmproftester(output.stdout + "\n" + output.stderr)
        steady = {gpu: steady_intervals(values) for gpu, values in per_gpu.items()}
        metrics = []
        if len(steady) == 1:
            values = next(iter(steady.values()))
            metrics.append(Metric.series("tflops", values, "TFLOPS", "higher", source="dcgmproftester"))
        else:  # several GPUs (-i 0,1): the aggregate, and each GPU's mean
            total = sum(sum(v) / len(v) for v in steady.values())
            metrics.append(Metric("tflops", total, "TFLOPS", "higher", source="dcgmproftester"))
            for gpu, values in sorted(steady.items()):
                metrics.append(
                    Metric(
                        f"tflops_gpu{gpu}", sum(values) / len(values), "TFLOPS", "higher", "dcgmproftester"
                    )
                )
        return metrics

    def metrics(self, doc: dict[str, Any]) -> list[Metric]:
        # all the flops over all the measured time: a mean of per-sample rates would favour the samples
        # that happened to run between two preemptions (seen on a shared CPU: 4× too high under ×4 sharing)
        out = [Metric("tflops", float(doc["tflops"]), "TFLOPS", "higher")]
        out.append(
            Metric(
                "matmul_best_s",
                float(doc["best_sample_s"]) / int(doc.get("iterations_per_sample", 1)),
                "s",
                "lower",
            )
        )
        return out

    def placement(self, output: TrialOutput, params: Any | None = None) -> dict[str, Any]:
        if "NEARMETAL_RESULT" in output.stdout:
            return super().placement(output, params)
        return {}
