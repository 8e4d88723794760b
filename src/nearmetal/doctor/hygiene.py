"""Benchmarking hygiene: facts about the host that move results, each with its effect (frequency governor,
SMT, transparent huge pages, swap, load from other processes, a VM or container underneath).

None of these is wrong on a production host; each is recorded because a loss measured with it differs from
the loss measured without it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import psutil

from nearmetal.doctor.base import Finding, check
from nearmetal.host import hostcmd

LESSON_HYGIENE = (
    "seeds 000-002: every published loss was measured against a baseline on the same host; what the host "
    "does besides the trial (frequency scaling, SMT siblings, THP compaction, swapping, other tenants, a "
    "hypervisor) moves both and must be known to compare runs across hosts"
)
LESSON_NEIGHBOURS = (
    "seed 001 (GPU sharing part 1): co-located workloads give unpredictable performance (the noisy "
    "neighbour problem); a benchmark shares the host only with what it measures"
)
CPU_ROOT = Path("/sys/devices/system/cpu")
THP_ROOT = Path("/sys/kernel/mm/transparent_hugepage")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _selected(text: str) -> str:
    """``always [madvise] never`` → ``madvise``."""
    match = re.search(r"\[(\w+)\]", text)
    return match.group(1) if match else text.strip()


@check(
    "cpu-governor",
    inspects="/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor",
    explains=("cpu", "variance"),
)
def check_governor(cpu_root: Path = CPU_ROOT) -> list[Finding]:
    governors: Counter[str] = Counter()
    for path in sorted(cpu_root.glob("cpu[0-9]*/cpufreq/scaling_governor")):
        value = _read(path)
        if value:
            governors[value] += 1
    if not governors:
        return [
            Finding(
                "cpu-governor",
                "info",
                "no cpufreq interface: the frequency governor cannot be checked (a VM, or frequency managed "
                "by firmware)",
                evidence=f"no {cpu_root}/cpu*/cpufreq/scaling_governor",
                lesson=LESSON_HYGIENE,
            )
        ]
    evidence = ", ".join(f"{g} on {n} CPU(s)" for g, n in governors.items())
    if set(governors) == {"performance"}:
        return [
            Finding("cpu-governor", "ok", "governor is performance", evidence=evidence, lesson=LESSON_HYGIENE)
        ]
    return [
        Finding(
            "cpu-governor",
            "warning",
            "frequency governor is not performance: clocks ramp up during each trial, short trials and "
            "mostly idle variants (waiting on I/O or the network) run slower and vary more",
            evidence=evidence,
            fix="cpupower frequency-set -g performance (or write performance to "
            "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor) for the benchmark",
            lesson=LESSON_HYGIENE,
        )
    ]


@check("smt", inspects="/sys/devices/system/cpu/smt/active and smt/control", explains=("cpu", "variance"))
def check_smt(cpu_root: Path = CPU_ROOT) -> list[Finding]:
    active = _read(cpu_root / "smt" / "active")
    control = _read(cpu_root / "smt" / "control")
    evidence = f"smt/active={active or '?'}, smt/control={control or '?'}"
    if active == "1":
        return [
            Finding(
                "smt",
                "info",
                "SMT (hyper-threading) is on: two logical CPUs share one core, so ranks placed on siblings "
                "get ~half a core each and a cpuset of 'N CPUs' may be N/2 cores",
                evidence=evidence,
                fix="pin ranks to distinct cores (one sibling per core), or for the benchmark: "
                "echo off > /sys/devices/system/cpu/smt/control",
                lesson=LESSON_HYGIENE,
            )
        ]
    return [
        Finding(
            "smt",
            "ok",
            "SMT is off or not supported: a logical CPU is a core",
            evidence=evidence,
            lesson=LESSON_HYGIENE,
        )
    ]


@check(
    "transparent-hugepages",
    inspects="/sys/kernel/mm/transparent_hugepage/enabled and defrag",
    explains=("variance", "cpu"),
)
def check_thp(thp_root: Path = THP_ROOT) -> list[Finding]:
    enabled = _read(thp_root / "enabled")
    defrag = _read(thp_root / "defrag")
    if enabled is None:
        return [
            Finding(
                "transparent-hugepages",
                "info",
                "THP settings not readable",
                evidence=str(thp_root),
                lesson=LESSON_HYGIENE,
            )
        ]
    mode = _selected(enabled)
    defrag_mode = _selected(defrag) if defrag else "?"
    evidence = f"enabled: {enabled} → {mode}; defrag: {defrag or '?'} → {defrag_mode}"
    if mode == "always":
        return [
            Finding(
                "transparent-hugepages",
                "info",
                "transparent huge pages: always: memory-heavy programs get huge pages without asking (faster "
                "TLB) but pay compaction stalls and memory bloat; results differ from madvise hosts",
                evidence=evidence,
                fix="record it with the results; for stable timings: echo madvise > "
                f"{thp_root}/enabled (the common distribution default)",
                lesson=LESSON_HYGIENE,
            )
        ]
    if mode == "never":
        return [
            Finding(
                "transparent-hugepages",
                "info",
                "transparent huge pages: never: programs that madvise() for huge pages (JVMs, some MPI and "
                "PyTorch allocators) run with 4 KiB pages here",
                evidence=evidence,
                fix=f"echo madvise > {thp_root}/enabled to let programs that ask get huge pages",
                lesson=LESSON_HYGIENE,
            )
        ]
    return [
        Finding(
            "transparent-hugepages",
            "ok",
            f"transparent huge pages: {mode}",
            evidence=evidence,
            lesson=LESSON_HYGIENE,
        )
    ]


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo → kB values."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    return out


@check(
    "swap",
    inspects="/proc/swaps, /proc/meminfo (SwapTotal, SwapFree), /proc/sys/vm/swappiness",
    explains=("variance", "io"),
)
def check_swap(proc: Path = Path("/proc")) -> list[Finding]:
    swaps = [line for line in (_read(proc / "swaps") or "").splitlines()[1:] if line.strip()]
    meminfo = parse_meminfo(_read(proc / "meminfo") or "")
    total_kb = meminfo.get("SwapTotal", 0)
    used_kb = total_kb - meminfo.get("SwapFree", 0)
    swappiness = _read(proc / "sys" / "vm" / "swappiness")
    devices = ", ".join(line.split()[0] for line in swaps) or "none"
    evidence = (
        f"swap devices: {devices}; SwapTotal {total_kb // 1024} MiB, used {used_kb // 1024} MiB; "
        f"swappiness {swappiness or '?'}"
    )
    if total_kb == 0:
        return [
            Finding(
                "swap",
                "ok",
                "no swap: memory pressure shows as OOM kills, not slow paging",
                evidence=evidence,
                lesson=LESSON_HYGIENE,
            )
        ]
    if used_kb > 0:
        return [
            Finding(
                "swap",
                "warning",
                f"{used_kb // 1024} MiB are swapped out: trials that touch swapped pages (or push others out) "
                "slow down unpredictably",
                evidence=evidence,
                fix="free memory before the benchmark, or swapoff -a for it (Kubernetes nodes: the kubelet "
                "expects swap off unless NodeSwap is configured)",
                lesson=LESSON_HYGIENE,
            )
        ]
    return [
        Finding(
            "swap",
            "info",
            "swap is enabled but unused: a memory-hungry trial would page instead of failing",
            evidence=evidence,
            fix="swapoff -a for memory-bound benchmarks if paging must not hide in the timings",
            lesson=LESSON_HYGIENE,
        )
    ]


def _own_tree() -> set[int]:
    me = psutil.Process()
    pids = {me.pid}
    with contextlib.suppress(psutil.Error):
        pids |= {p.pid for p in me.children(recursive=True)}
    return pids


def sample_other_load(
    sample_s: float = 0.5, exclude: set[int] | None = None
) -> tuple[float, list[tuple[float, int, str]]]:
    """CPU used by processes outside ``exclude`` (default: this process and its children) during
    ``sample_s``: (CPUs busy, [(cpus, pid, name), …] largest first)."""
    exclude = exclude if exclude is not None else _own_tree()

    def snapshot() -> dict[int, tuple[float, str]]:
        out = {}
        for proc in psutil.process_iter(["pid", "name", "cpu_times"]):
            if proc.info["pid"] in exclude or proc.info["cpu_times"] is None:
                continue
            times = proc.info["cpu_times"]
            out[proc.info["pid"]] = (times.user + times.system, proc.info["name"] or "?")
        return out

    before = snapshot()
    t0 = time.monotonic()
    time.sleep(sample_s)
    after = snapshot()
    elapsed = time.monotonic() - t0
    busy = []
    for pid, (cpu_after, name) in after.items():
        if pid in before:
            used = (cpu_after - before[pid][0]) / elapsed
            if used > 0.01:
                busy.append((used, pid, name))
    busy.sort(reverse=True)
    return sum(b[0] for b in busy), busy


@check(
    "noisy-neighbours",
    inspects="CPU time of every other process over 0.5 s (/proc/<pid>/stat via psutil); /proc/loadavg",
    explains=("variance", "cpu"),
)
def check_noisy_neighbours(sample_s: float = 0.5, exclude: set[int] | None = None) -> list[Finding]:
    ncpu = os.cpu_count() or 1
    other, busy = sample_other_load(sample_s, exclude)
    load1, load5, _ = os.getloadavg()
    top = ", ".join(f"{name} (pid {pid}) {cpus * 100:.0f}%" for cpus, pid, name in busy[:5])
    evidence = (
        f"other processes used {other:.2f} of {ncpu} CPUs over {sample_s:g}s"
        + (f": {top}" if top else "")
        + f"; load average {load1:.2f} (1 min), {load5:.2f} (5 min)"
    )
    if other >= max(0.25, 0.25 * ncpu):
        return [
            Finding(
                "noisy-neighbours",
                "warning",
                f"other processes keep {other:.1f} CPU(s) busy: trials compete with them, losses and spread "
                "include their load",
                evidence=evidence,
                fix="run benchmarks on an otherwise idle host (stop the listed processes, drain the node, or "
                "use exclusive cpusets); interleaved order spreads the noise over all variants alike",
                lesson=LESSON_NEIGHBOURS,
            )
        ]
    return [
        Finding(
            "noisy-neighbours",
            "ok",
            "the host is otherwise quiet",
            evidence=evidence,
            lesson=LESSON_NEIGHBOURS,
        )
    ]


def detect_container(root: Path = Path("/")) -> str | None:
    """The container runtime this process runs under, from the files runtimes leave (None: not detected)."""
    if (root / ".dockerenv").exists():
        return "docker"
    if (root / "run" / ".containerenv").exists():
        return "podman"
    environ = root / "proc" / "1" / "environ"
    try:
        for entry in environ.read_bytes().split(b"\0"):
            if entry.startswith(b"container="):
                return entry.split(b"=", 1)[1].decode(errors="replace") or "container"
    except OSError:
        pass
    cgroup = _read(root / "proc" / "1" / "cgroup") or ""
    for marker in ("kubepods", "docker", "containerd", "crio", "libpod", "lxc"):
        if marker in cgroup:
            return marker
    return None


def detect_vm(root: Path = Path("/")) -> str | None:
    """A hypervisor's name when this is a VM (None: bare metal or unknown)."""
    cpuinfo = _read(root / "proc" / "cpuinfo") or ""
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    vendor = " ".join(
        filter(
            None, (_read(root / "sys" / "class" / "dmi" / "id" / f) for f in ("sys_vendor", "product_name"))
        )
    )
    known = {
        "QEMU": "qemu/kvm",
        "KVM": "kvm",
        "VMware": "vmware",
        "VirtualBox": "virtualbox",
        "Xen": "xen",
        "Microsoft Corporation": "hyper-v",
        "Amazon EC2": "amazon (nitro)",
        "Google Compute Engine": "google",
        "Firecracker": "firecracker",
    }
    for marker, name in known.items():
        if marker in vendor:
            return name
    if re.search(r"\bhypervisor\b", flags):
        return "vm (hypervisor CPU flag)" + (f", {vendor}" if vendor else "")
    return None


def steal_fraction(proc: Path = Path("/proc")) -> float | None:
    """Share of CPU time the hypervisor gave to others since boot (the ``steal`` column of /proc/stat)."""
    line = next((ln for ln in (_read(proc / "stat") or "").splitlines() if ln.startswith("cpu ")), None)
    if not line:
        return None
    values = [int(v) for v in line.split()[1:]]
    if len(values) < 8 or sum(values) == 0:
        return None
    return values[7] / sum(values)


@check(
    "virtualization",
    inspects="/proc/cpuinfo (hypervisor flag), /sys/class/dmi/id, systemd-detect-virt, /.dockerenv, "
    "/run/.containerenv, /proc/1/environ, /proc/1/cgroup, steal time in /proc/stat",
    explains=("cpu", "io", "network", "variance"),
)
def check_virtualization(root: Path = Path("/")) -> list[Finding]:
    vm = detect_vm(root)
    if root == Path("/") and shutil.which("systemd-detect-virt"):
        said = hostcmd.probe(["systemd-detect-virt", "--vm"], 5)
        if said and said != "none":
            vm = said
    container = detect_container(root)
    steal = steal_fraction(root / "proc")
    parts = []
    if vm:
        parts.append(f"VM: {vm}")
    if container:
        parts.append(f"container: {container}")
    evidence = "; ".join(parts) or "no hypervisor flag, DMI vendor or container marker"
    if steal is not None:
        evidence += f"; CPU steal since boot {steal * 100:.1f}%"
    if not vm and not container:
        return [
            Finding(
                "virtualization",
                "ok",
                "bare metal (no VM or container detected)",
                evidence=evidence,
                lesson=LESSON_HYGIENE,
            )
        ]
    what = " inside ".join(
        p for p in (f"a {container} container" if container else "", f"a {vm} VM" if vm else "") if p
    )
    return [
        Finding(
            "virtualization",
            "warning" if steal is not None and steal > 0.02 else "info",
            f"running in {what}: 'bare metal' baselines here include the hypervisor's/runtime's own cost "
            "(virtual devices, CPU steal, nested cgroups)",
            evidence=evidence,
            fix="label results with the platform (it is recorded as environment 'virtualization'); compare "
            "losses only against a baseline measured on the same kind of host",
            lesson=LESSON_HYGIENE,
        )
    ]
