"""What the Python-program workloads (flops, particles, train, ddp) share: how their program is started,
what they require (torch, a CUDA GPU), and reading the program's result line."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from typing import Any, ClassVar, TypeVar

from pydantic import Field, field_validator

from nearmetal.metrics import Metric
from nearmetal.workloads.base import (
    ProcessSpec,
    Requirement,
    TrialOutput,
    Workload,
    WorkloadContext,
    WorkloadParams,
)
from nearmetal.workloads.programs import READY_PATTERN, program_path, read_result

DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?)$"
# a neighbour importing torch on a busy 2-core host can take this long before it prints "ready"
READY_TIMEOUT_S = 300.0

# not in the default install (it is most of its size): the refusal says how to add it
TORCH_INSTALL = "bash scripts/install.sh --with-torch (in a nearmetal checkout), or pip install torch"
TORCH = Requirement(
    "torch", "torch", manager="pypi", purpose="PyTorch (pip install 'nearmetal[torch]')", hint=TORCH_INSTALL
)
CUDA = Requirement(
    "cuda",
    "run it on a host with an NVIDIA GPU, its driver and a CUDA build of torch (or use device: cpu)",
    manager="device",
    purpose="a CUDA GPU",
)


class DeviceParams(WorkloadParams):
    device: str = Field(
        "cpu", description="cpu, or cuda / cuda:N (with the gpu layer, cuda is the device that layer selects)"
    )
    seed: int = Field(0, ge=0, description="seed of the generated data")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError(f"{value!r} is not a device: use cpu, cuda or cuda:N")
        return value

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


def version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


DeviceParamsT = TypeVar("DeviceParamsT", bound=DeviceParams)


class ProgramWorkload(Workload[DeviceParamsT]):
    """A workload whose program is one of ``workloads/programs``; subclasses give ``program`` and
    ``arguments`` and turn the result document into metrics."""

    program: ClassVar[str]
    uses_torch: ClassVar[bool] = False

    def needs_torch(self, params: Any) -> bool:
        return self.uses_torch or getattr(params, "on_gpu", False)

    def requires(self, params: Any) -> list[Requirement]:
        reqs = [TORCH] if self.needs_torch(params) else []
        if getattr(params, "on_gpu", False):
            reqs.append(CUDA)
        return reqs

    def arguments(self, params: Any, ctx: WorkloadContext) -> list[str]:
        raise NotImplementedError

    def launcher(self, params: Any) -> list[str]:
        """What starts the program: this Python (the one nearmetal runs in has numpy and torch)."""
        return [sys.executable]

    def processes(self, params: Any, ctx: WorkloadContext) -> list[ProcessSpec]:
        argv = [*self.launcher(params), str(program_path(self.program)), *self.arguments(params, ctx)]
        return [
            ProcessSpec(
                argv=argv,
                env={"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
                cwd=ctx.trial_dir,
                ready_pattern=READY_PATTERN,
                ready_timeout_s=READY_TIMEOUT_S,
            )
        ]

    def result(self, output: TrialOutput) -> dict[str, Any]:
        return read_result(output.stdout, self.program)

    def parse(self, output: TrialOutput, params: Any | None = None) -> list[Metric]:
        return self.metrics(self.result(output))

    def metrics(self, doc: dict[str, Any]) -> list[Metric]:
        raise NotImplementedError

    def placement(self, output: TrialOutput, params: Any | None = None) -> dict[str, Any]:
        doc = self.result(output)
        keys = (
            "host",
            "cpus",
            "device",
            "device_name",
            "uuid",
            "sms",
            "visible_devices",
            "threads",
            "workers",
        )
        return {"workload": {k: doc[k] for k in keys if k in doc}}

    def tool_versions(self) -> dict[str, str]:
        versions = {"python": sys.version.split()[0]}
        for dist in ("numpy", "torch"):
            if (v := version_of(dist)) is not None:
                versions[dist] = v
        return versions
