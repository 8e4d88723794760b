"""The machine a run ran on, captured once per run so results can be compared honestly later."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import psutil


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cgroup_version(root: str = "/sys/fs/cgroup") -> str:
    if os.path.exists(f"{root}/cgroup.controllers"):
        return "v2"
    if os.path.exists(f"{root}/unified/cgroup.controllers"):
        return "v1 (hybrid)"
    if os.path.isdir(f"{root}/cpu"):
        return "v1"
    return "none"


def detect_virtualization() -> str:
    if shutil.which("systemd-detect-virt"):
        try:
            out = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True, timeout=5)
            return out.stdout.strip() or "none"
        except (OSError, subprocess.TimeoutExpired):
            pass
    hypervisor = "hypervisor" in (_read("/proc/cpuinfo") or "")
    container = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
    if container:
        return "container"
    return "vm" if hypervisor else "none"


def capture_environment(tool_versions: dict[str, str] | None = None) -> dict[str, str]:
    from nearmetal import __version__

    uname = platform.uname()
    env: dict[str, str] = {
        "nearmetal.version": __version__,
        "host.name": uname.node,
        "os.kernel": uname.release,
        "os.machine": uname.machine,
        "python.version": platform.python_version(),
        "cpu.model": cpu_model(),
        "cpu.logical": str(psutil.cpu_count(logical=True)),
        "cpu.physical": str(psutil.cpu_count(logical=False)),
        "memory.total_MiB": str(psutil.virtual_memory().total // (1 << 20)),
        "cgroup.version": cgroup_version(),
        "virtualization": detect_virtualization(),
    }
    release = _read("/etc/os-release") or ""
    for line in release.splitlines():
        if line.startswith("PRETTY_NAME="):
            env["os.distribution"] = line.split("=", 1)[1].strip('"')
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    env["cpu.governor"] = governor or "unavailable"
    smt = _read("/sys/devices/system/cpu/smt/active")
    env["cpu.smt_active"] = smt if smt is not None else "unknown"
    for tool, version in (tool_versions or {}).items():
        env[f"tool.{tool}"] = version
    return env
