"""What this host offers for GPU work: an NVIDIA driver, NVML, CUDA through torch, and its GPU devices.

Probes never import torch into nearmetal's own process (that would initialise CUDA in the runner and cost
seconds on every command): CUDA is checked in a short child process, once per process, and the answer
comes with the reason when it is no.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd

PROBE_TIMEOUT_S = 120
DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
_CUDA_PROBE = (
    "import torch; print(int(torch.cuda.is_available()), torch.cuda.device_count(), torch.version.cuda,"
    " torch.__version__)"
)


def nvidia_driver_present() -> bool:
    return DRIVER_VERSION_FILE.exists() or shutil.which("nvidia-smi") is not None


@functools.cache
def cuda_status() -> tuple[bool, str]:
    """(usable, why): whether torch in this Python sees a CUDA GPU."""
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed (bash scripts/install.sh --with-torch, or pip install torch)"
    if not nvidia_driver_present():
        return False, "no NVIDIA driver on this host (no /proc/driver/nvidia/version, no nvidia-smi)"
    try:
        proc = hostcmd.run([sys.executable, "-c", _CUDA_PROBE], PROBE_TIMEOUT_S)
    except NearmetalError as exc:
        return False, f"could not ask torch about CUDA: {exc}"
    fields = proc.stdout.split()
    if proc.returncode != 0 or len(fields) < 4:
        return False, f"torch failed to start: {proc.stderr.strip()[-300:]}"
    ok, count, cuda, version = fields[:4]
    if ok != "1":
        build = "a CPU-only build" if cuda == "None" else f"built for CUDA {cuda}"
        return False, f"torch {version} ({build}) sees no CUDA GPU"
    return True, f"torch {version} sees {count} CUDA device(s) (CUDA {cuda})"


@functools.cache
def nvml_status() -> tuple[bool, str]:
    """(usable, why): whether NVML (the NVIDIA driver's management library) answers."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return False, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError has many subclasses; all mean "no usable NVML"
        return False, f"NVML is not usable here: {exc}"
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    return True, f"NVML sees {count} GPU(s)"


def device_available(name: str) -> bool:
    """For ``Requirement(manager="device")``: "cuda" (torch sees a GPU) or "nvml" (the driver answers)."""
    if name == "cuda":
        return cuda_status()[0]
    if name == "nvml":
        return nvml_status()[0]
    raise ValueError(f"unknown device requirement {name!r}")


def unavailable_reason(name: str) -> str:
    return (cuda_status() if name == "cuda" else nvml_status())[1]


# --- nvidia-smi -L -----------------------------------------------------------------------------------
_GPU_LINE = re.compile(r"^GPU (?P<index>\d+): (?P<name>.+?) \(UUID: (?P<uuid>GPU-[^)]+)\)\s*$")
_MIG_LINE = re.compile(
    r"^\s+MIG (?P<profile>\d+g\.\d+gb(?:\+me)?)\s+Device\s+(?P<index>\d+): \(UUID: (?P<uuid>MIG-[^)]+)\)\s*$"
)


@dataclass
class MigDevice:
    index: int
    profile: str
    uuid: str


@dataclass
class GpuDevice:
    index: int
    name: str
    uuid: str
    mig_devices: list[MigDevice] = field(default_factory=list)


def parse_gpu_list(text: str) -> list[GpuDevice]:
    """``nvidia-smi -L``: one line per GPU, indented lines for its MIG devices (R450 to R570 formats)."""
    gpus: list[GpuDevice] = []
    for line in text.splitlines():
        if match := _GPU_LINE.match(line):
            gpus.append(GpuDevice(int(match["index"]), match["name"].strip(), match["uuid"]))
        elif (match := _MIG_LINE.match(line)) and gpus:
            gpus[-1].mig_devices.append(MigDevice(int(match["index"]), match["profile"], match["uuid"]))
    return gpus


def list_gpus(timeout_s: float = 30) -> list[GpuDevice]:
    """This host's GPUs and MIG devices (empty without nvidia-smi)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    proc = hostcmd.run([smi, "-L"], timeout_s)
    return parse_gpu_list(proc.stdout) if proc.returncode == 0 else []
