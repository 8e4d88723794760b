"""GPU checks (seed 001, "Efficient Access to Shared GPU Resources" parts 3–5), read through NVML
(nvidia-ml-py). Without an NVIDIA driver the ``gpu`` check says so once and the others find nothing.

- ``gpu-mig``: MIG enabled with a single full-size instance loses SMs (A100: 10 of 108) and gains no
  sharing — "never enable MIG without actually partitioning the GPU"; MIG enabled with no instance leaves
  CUDA no device; a mode change waits for a GPU reset.
- ``gpu-pid-namespace``: nvidia-smi inside a PID namespace (a container) cannot list the processes using
  the GPU — the seed's empty "Processes" table.
- ``gpu-sharing``: what time-slices this GPU now: other processes on it (NVML), the compute mode, and the
  device plugin's time-slicing replicas from the labels GPU feature discovery writes on a Kubernetes node.
- ``gpu-clocks-ecc``: clock throttle reasons (power cap, thermal, HW slowdown) and uncorrected ECC errors or
  pages/rows waiting to be retired.

The checks are pure functions of a ``GpuState`` snapshot (tested with snapshots built by hand); only
``read_gpus`` talks to the driver.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nearmetal.doctor.base import Finding, check

LESSON_MIG = (
    "seed 001 part 5: enabling MIG on an A100 40GB loses 10 of 108 SMs (9.25%); never enable MIG without "
    "actually partitioning the GPU (the 7g.40gb instance): it means losing performance without gaining sharing"
)
LESSON_PIDNS = (
    "seed 001 part 3: nvidia-smi is not compatible with PID namespaces; in a container it cannot list the "
    "processes using the GPU and the Processes section is left empty"
)
LESSON_SLICING = (
    "seed 001 part 4: processes time-sliced on one GPU take turns; per process throughput falls to 1/k and "
    "context switching cost 1-7% of the aggregate for FLOPS and 34-39% for simpletrack"
)
LESSON_CLOCKS = (
    "benchmarking hygiene: a GPU held at a power cap or thermally throttled, or with memory errors waiting "
    "to be retired, runs slower than its datasheet whatever the sharing mechanism"
)
GFD_LABELS = Path("/etc/kubernetes/node-feature-discovery/features.d/gfd")
STATUS = Path("/proc/self/status")

# nvmlClocksThrottleReasons / nvmlClocksEventReasons bits
THROTTLE_REASONS = {
    0x1: "GPU idle",
    0x2: "applications clocks setting",
    0x4: "software power cap",
    0x8: "hardware slowdown",
    0x10: "sync boost",
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x80: "hardware power brake",
    0x100: "display clock setting",
}
SLOWING = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


@dataclass
class MigInstance:
    slices: int  # compute slices (of 7)
    sms: int
    memory_mib: int


@dataclass
class GpuState:
    """What NVML says about one GPU."""

    index: int
    name: str
    uuid: str = ""
    mig_enabled: bool | None = None  # None: the GPU cannot do MIG
    mig_pending: bool | None = None
    mig_instances: list[MigInstance] = field(default_factory=list)
    sms: int | None = None
    compute_mode: str = "default"  # default, exclusive_process, prohibited
    processes: list[int] = field(default_factory=list)  # pids in the host's PID namespace
    throttle_reasons: int = 0
    ecc_uncorrected: int | None = None  # volatile (since the last driver load)
    retirement_pending: bool | None = None  # pages (pre-Ampere) or rows (Ampere+) waiting for a reset


class NvmlUnavailable(Exception):
    """No NVIDIA driver or NVML library here; the message says which."""


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise NvmlUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # every pynvml.NVMLError means no usable driver
        raise NvmlUnavailable(f"NVML is not usable here ({exc}): no NVIDIA driver") from None
    return pynvml


def _try(fn: Any, *args: Any, default: Any = None) -> Any:
    try:
        return fn(*args)
    except Exception:  # NVMLError_NotSupported and friends: the GPU has no such counter
        return default


def read_gpus() -> list[GpuState]:
    """A snapshot of every GPU NVML sees (raises NvmlUnavailable with the reason)."""
    nvml = _nvml()
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            state = GpuState(
                index,
                name.decode() if isinstance(name, bytes) else str(name),
                str(_try(nvml.nvmlDeviceGetUUID, handle, default="")),
            )
            modes = _try(nvml.nvmlDeviceGetMigMode, handle)
            if modes is not None:
                state.mig_enabled, state.mig_pending = bool(modes[0]), bool(modes[1])
            if state.mig_enabled:
                for i in range(_try(nvml.nvmlDeviceGetMaxMigDeviceCount, handle, default=0)):
                    mig = _try(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, i)
                    attrs = _try(nvml.nvmlDeviceGetAttributes, mig) if mig is not None else None
                    if attrs is not None:
                        state.mig_instances.append(
                            MigInstance(
                                attrs.gpuInstanceSliceCount, attrs.multiprocessorCount, attrs.memorySizeMB
                            )
                        )
            attrs = _try(nvml.nvmlDeviceGetAttributes, handle)
            state.sms = getattr(attrs, "multiprocessorCount", None)
            mode = _try(nvml.nvmlDeviceGetComputeMode, handle, default=0)
            state.compute_mode = {
                0: "default",
                1: "exclusive_thread",
                2: "prohibited",
                3: "exclusive_process",
            }.get(mode, str(mode))
            pids = set()
            for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                for proc in _try(getattr(nvml, getter, lambda _h: []), handle, default=[]) or []:
                    pids.add(int(proc.pid))
            state.processes = sorted(pids)
            reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
                nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
            )
            state.throttle_reasons = int(_try(reasons, handle, default=0) or 0) if reasons else 0
            state.ecc_uncorrected = _try(
                nvml.nvmlDeviceGetTotalEccErrors, handle, 1, 0
            )  # uncorrected, volatile
            remap = _try(getattr(nvml, "nvmlDeviceGetRemappingInfo", lambda _h: None), handle)
            if remap is not None:
                state.retirement_pending = bool(remap[2])
            else:
                pending = _try(
                    getattr(nvml, "nvmlDeviceGetRetiredPagesPendingStatus", lambda _h: None), handle
                )
                state.retirement_pending = None if pending is None else bool(pending)
            gpus.append(state)
        return gpus
    finally:
        _try(nvml.nvmlShutdown)


def _gpus_or_none() -> list[GpuState] | None:
    try:
        return read_gpus()
    except NvmlUnavailable:
        return None


# --- the checks, as functions of a snapshot -------------------------------------------------------------
def presence_findings(gpus: list[GpuState] | None, reason: str = "") -> list[Finding]:
    if gpus is None:
        return [
            Finding(
                "gpu",
                "info",
                "no NVIDIA GPU here: the GPU checks (gpu-mig, gpu-pid-namespace, gpu-sharing, gpu-clocks-ecc) "
                "were skipped",
                evidence=reason,
            )
        ]
    listing = "; ".join(
        f"{g.index}: {g.name}" + (f" (MIG, {len(g.mig_instances)} instances)" if g.mig_enabled else "")
        for g in gpus
    )
    return [Finding("gpu", "ok", f"NVML sees {len(gpus)} GPU(s)", evidence=listing or "none")]


def mig_findings(gpus: list[GpuState]) -> list[Finding]:
    from nearmetal.host.gpu_profiles import gpu_model

    out = []
    for g in gpus:
        if g.mig_enabled is None:
            continue
        if g.mig_pending is not None and g.mig_pending != g.mig_enabled:
            out.append(
                Finding(
                    "gpu-mig",
                    "info",
                    f"GPU {g.index}: a MIG mode change waits for a GPU reset",
                    evidence=f"current {'enabled' if g.mig_enabled else 'disabled'}, pending "
                    f"{'enabled' if g.mig_pending else 'disabled'}",
                    fix=f"nvidia-smi -i {g.index} -r (with no process on the GPU), or reboot",
                    lesson=LESSON_MIG,
                )
            )
        if not g.mig_enabled:
            continue
        if not g.mig_instances:
            out.append(
                Finding(
                    "gpu-mig",
                    "warning",
                    f"GPU {g.index} ({g.name}) is in MIG mode with no instance: CUDA sees no device on it",
                    evidence="MIG enabled, 0 GPU instances",
                    fix="create instances (nvidia-smi mig -cgi 3g.20gb,3g.20gb -C) or disable MIG "
                    f"(nvidia-smi -i {g.index} -mig 0)",
                    lesson=LESSON_MIG,
                )
            )
        elif len(g.mig_instances) == 1 and g.mig_instances[0].slices == 7:
            model = gpu_model(g.name)
            full = model.full_sms if model else g.sms
            used = g.mig_instances[0].sms
            lost = f"{full - used} of {full} SMs ({(full - used) / full:.1%})" if full else "SMs"
            out.append(
                Finding(
                    "gpu-mig",
                    "warning" if full and full > used else "info",
                    f"GPU {g.index} ({g.name}): MIG enabled with one full-size instance loses {lost} "
                    "and shares nothing",
                    evidence=f"1 instance of 7 compute slices, {used} SMs, {g.mig_instances[0].memory_mib} MiB",
                    fix=f"disable MIG (nvidia-smi -i {g.index} -mig 0) or partition the GPU for the users who "
                    "share it (nearmetal advise gpu-sharing)",
                    lesson=LESSON_MIG,
                )
            )
        else:
            sizes = ", ".join(f"{i.slices}g ({i.sms} SMs)" for i in g.mig_instances)
            out.append(
                Finding("gpu-mig", "ok", f"GPU {g.index}: MIG partitioned", evidence=sizes, lesson=LESSON_MIG)
            )
    return out


def nested_pid_namespace(status_text: str) -> bool:
    """``NSpid:`` in /proc/self/status lists a pid per PID namespace level: more than one means this process
    runs in a child namespace (a container), whose tools cannot map GPU process ids."""
    match = re.search(r"^NSpid:\s*(.+)$", status_text, re.M)
    return match is not None and len(match.group(1).split()) > 1


def pid_namespace_findings(gpus: list[GpuState], status_text: str, visible: set[int]) -> list[Finding]:
    unseen = sorted({p for g in gpus for p in g.processes if p not in visible})
    nested = nested_pid_namespace(status_text)
    if not nested and not unseen:
        return [
            Finding("gpu-pid-namespace", "ok", "GPU processes can be listed from here", lesson=LESSON_PIDNS)
        ]
    evidence = []
    if nested:
        evidence.append("/proc/self/status NSpid lists several pids: this is a child PID namespace")
    if unseen:
        evidence.append(
            f"NVML reports {len(unseen)} process(es) on the GPU(s) that this PID namespace cannot see"
        )
    return [
        Finding(
            "gpu-pid-namespace",
            "info",
            "nvidia-smi here cannot list the processes using the GPU (PID namespace)",
            evidence="; ".join(evidence),
            fix="list GPU processes from the host (nvidia-smi on the node) or through DCGM; inside pods, "
            "hostPID: true makes them visible",
            lesson=LESSON_PIDNS,
        )
    ]


def parse_gfd_labels(text: str) -> dict[str, str]:
    """GPU feature discovery's label file: one ``key=value`` per line."""
    labels = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key:
            labels[key.strip()] = value.strip()
    return labels


def sharing_findings(gpus: list[GpuState], labels: dict[str, str], own_pids: set[int]) -> list[Finding]:
    out = []
    replicas = labels.get("nvidia.com/gpu.replicas")
    strategy = labels.get("nvidia.com/gpu.sharing-strategy", "")
    if replicas and replicas.isdigit() and int(replicas) > 1:
        out.append(
            Finding(
                "gpu-sharing",
                "info",
                f"the device plugin time-slices each GPU into {replicas} replicas"
                + (f" ({strategy})" if strategy else ""),
                evidence=", ".join(
                    f"{k}={v}" for k, v in sorted(labels.items()) if "replicas" in k or "sharing" in k
                ),
                fix="pods asking for a replica share a whole GPU in turns; for dedicated GPUs request "
                "nvidia.com/gpu from a node without the time-slicing config",
                lesson=LESSON_SLICING,
            )
        )
    for g in gpus:
        others = [p for p in g.processes if p not in own_pids]
        if g.compute_mode in ("exclusive_process", "exclusive_thread"):
            out.append(
                Finding(
                    "gpu-sharing",
                    "info",
                    f"GPU {g.index} is in {g.compute_mode} compute mode: one process at a time, no time slicing",
                    evidence=f"compute mode {g.compute_mode}",
                    lesson=LESSON_SLICING,
                )
            )
        elif g.compute_mode == "prohibited":
            out.append(
                Finding(
                    "gpu-sharing",
                    "warning",
                    f"GPU {g.index} is in prohibited compute mode: no process can use it",
                    fix=f"nvidia-smi -i {g.index} -c DEFAULT",
                )
            )
        if others:
            out.append(
                Finding(
                    "gpu-sharing",
                    "warning",
                    f"GPU {g.index} ({g.name}): {len(others)} other process(es) use it now; work on it is time-sliced",
                    evidence=f"NVML running processes: {', '.join(map(str, others[:10]))}",
                    fix="measure on an idle GPU (or on a MIG instance of its own); compare runs only at the same "
                    "sharing level",
                    lesson=LESSON_SLICING,
                )
            )
    if not out:
        out.append(Finding("gpu-sharing", "ok", "no other process shares the GPU(s)", lesson=LESSON_SLICING))
    return out


def describe_throttle(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


def clocks_ecc_findings(gpus: list[GpuState]) -> list[Finding]:
    out = []
    for g in gpus:
        if g.throttle_reasons & SLOWING:
            out.append(
                Finding(
                    "gpu-clocks-ecc",
                    "warning",
                    f"GPU {g.index} ({g.name}) clocks are held down: "
                    + ", ".join(describe_throttle(g.throttle_reasons & SLOWING)),
                    evidence=f"clock event reasons 0x{g.throttle_reasons:x}: {', '.join(describe_throttle(g.throttle_reasons))}",
                    fix="check cooling and power limits (nvidia-smi -q -d PERFORMANCE,POWER,TEMPERATURE)",
                    lesson=LESSON_CLOCKS,
                )
            )
        if g.ecc_uncorrected:
            out.append(
                Finding(
                    "gpu-clocks-ecc",
                    "warning",
                    f"GPU {g.index}: {g.ecc_uncorrected} uncorrected ECC error(s) since the driver loaded",
                    evidence="nvmlDeviceGetTotalEccErrors(uncorrected, volatile)",
                    fix="drain the GPU and run dcgmi diag -r 3; reset the GPU to retire the faulty memory",
                    lesson=LESSON_CLOCKS,
                )
            )
        if g.retirement_pending:
            out.append(
                Finding(
                    "gpu-clocks-ecc",
                    "warning",
                    f"GPU {g.index}: memory rows/pages wait to be retired at the next reset",
                    fix=f"nvidia-smi -i {g.index} -r when idle (or reboot)",
                    lesson=LESSON_CLOCKS,
                )
            )
    if not out:
        out.append(
            Finding(
                "gpu-clocks-ecc", "ok", "no clock throttling or ECC problem reported", lesson=LESSON_CLOCKS
            )
        )
    return out


# --- registered checks ---------------------------------------------------------------------------------
@check("gpu", inspects="NVML (nvidia-ml-py): the GPUs this host's driver sees")
def check_gpu() -> list[Finding]:
    try:
        return presence_findings(read_gpus())
    except NvmlUnavailable as exc:
        return presence_findings(None, str(exc))


@check("gpu-mig", inspects="NVML: MIG mode and the GPU instances of each GPU", explains=("cpu",))
def check_mig() -> list[Finding]:
    gpus = _gpus_or_none()
    return mig_findings(gpus) if gpus else []


@check("gpu-pid-namespace", inspects="/proc/self/status NSpid; NVML running processes vs /proc")
def check_pid_namespace() -> list[Finding]:
    gpus = _gpus_or_none()
    if not gpus:
        return []
    visible = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    return pid_namespace_findings(gpus, STATUS.read_text(), visible)


@check(
    "gpu-sharing",
    inspects=f"NVML compute mode and running processes; {GFD_LABELS} (GPU feature discovery labels)",
    explains=("cpu", "variance"),
)
def check_sharing() -> list[Finding]:
    gpus = _gpus_or_none()
    if not gpus:
        return []
    labels = parse_gfd_labels(GFD_LABELS.read_text()) if GFD_LABELS.exists() else {}
    return sharing_findings(gpus, labels, {os.getpid()})


@check(
    "gpu-clocks-ecc",
    inspects="NVML clock event reasons, ECC counters, row remapping",
    explains=("cpu", "variance"),
)
def check_clocks_ecc() -> list[Finding]:
    gpus = _gpus_or_none()
    return clocks_ecc_findings(gpus) if gpus else []
