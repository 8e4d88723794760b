"""The machine a run ran on, captured once per run so results can be compared honestly later.

Every probe is best-effort: a missing file or program gives "unavailable" (or no key), never a failed run.
Environment variables are recorded only when their name is on ``ENV_ALLOW`` (threading, MPI, GPU, batch
system, locale, nearmetal's own), and even those pass through ``nearmetal.redact``: a secret-looking name
or a credential inside a value is replaced by ``<redacted>``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import resource
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from nearmetal.host.hostcmd import probe
from nearmetal.redact import redact_text, redact_url, redact_value

# names (exact) and prefixes (ending in "_") of environment variables worth recording: they change how
# workloads run (threads, MPI transport, visible GPUs) or say where they run (batch system, container)
ENV_ALLOW: tuple[str, ...] = (
    "OMP_",
    "GOMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "BLIS_",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_MPS_",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "NCCL_",
    "TORCH_",
    "PYTORCH_",
    "SLURM_",
    "PMI_",
    "PMIX_",
    "OMPI_",
    "I_MPI_",
    "MPICH_",
    "UCX_",
    "FI_",
    "HWLOC_",
    "KUBERNETES_SERVICE_HOST",
    "container",
    "NEARMETAL_",
    "LANG",
    "LC_ALL",
    "TZ",
    "PATH",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
    "PYTHONHASHSEED",
)
# tools recorded when installed, whatever the plan runs: (key, program that must exist, argv, how to
# pick the version out). LAMMPS by its package: `lmp -h` takes a second (the lammps workload still
# records the version the binary itself prints when a plan runs it).
ToolProbe = tuple[str, str, list[str], str]
TOOL_PROBES: tuple[ToolProbe, ...] = (
    ("fio", "fio", ["fio", "--version"], r"(fio-\S+)"),
    ("lammps-package", "lmp", ["dpkg-query", "-W", "-f=${Version}", "lammps"], r"(\S+)"),
    ("mpirun", "mpirun", ["mpirun", "--version"], r"^(.+)$"),
    ("stress-ng", "stress-ng", ["stress-ng", "--version"], r"version (\S+)"),
    ("iperf3", "iperf3", ["iperf3", "--version"], r"^(iperf \S+)"),
    ("qemu", "qemu-system-x86_64", ["qemu-system-x86_64", "--version"], r"version (\S+)"),
    ("nvidia-smi", "nvidia-smi", ["nvidia-smi", "--version"], r"NVIDIA-SMI version\s*:\s*(\S+)"),
)
UNAVAILABLE = "unavailable"


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_facts() -> dict[str, str]:
    out: dict[str, str] = {}
    info = _read("/proc/cpuinfo") or ""
    sockets = {line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("physical id")}
    vendor = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("vendor_id")), ""
    )
    out["cpu.vendor"] = vendor or platform.machine()
    out["cpu.sockets"] = str(len(sockets)) if sockets else "unknown"
    logical = psutil.cpu_count(logical=True) or 0
    physical = psutil.cpu_count(logical=False) or 0
    if physical:
        out["cpu.threads_per_core"] = str(max(1, logical // physical))
    with contextlib.suppress(AttributeError, OSError):
        out["cpu.usable"] = str(len(os.sched_getaffinity(0)))  # what this process may run on (cpuset)
    smt = _read("/sys/devices/system/cpu/smt/active")
    out["cpu.smt_active"] = {"1": "yes", "0": "no"}.get(smt or "", "unknown")
    out["cpu.smt_control"] = _read("/sys/devices/system/cpu/smt/control") or "unknown"
    governors = set()
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor"):
        value = _read(path)
        if value:
            governors.add(value)
    out["cpu.governor"] = ",".join(sorted(governors)) or UNAVAILABLE
    driver = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_driver")
    if driver:
        out["cpu.frequency_driver"] = driver
    try:
        freq = psutil.cpu_freq()
        if freq and freq.max:
            out["cpu.max_MHz"] = f"{freq.max:.0f}"
    except (OSError, NotImplementedError, FileNotFoundError):
        pass
    nodes = list(Path("/sys/devices/system/node").glob("node[0-9]*"))
    out["numa.nodes"] = str(len(nodes)) if nodes else "1"
    isolated = _read("/sys/devices/system/cpu/isolated")
    if isolated:
        out["cpu.isolated"] = isolated
    return out


# --- cgroups, containers, VMs ------------------------------------------------------------------------


def cgroup_version(root: str = "/sys/fs/cgroup") -> str:
    if os.path.exists(f"{root}/cgroup.controllers"):
        return "v2"
    if os.path.exists(f"{root}/unified/cgroup.controllers"):
        return "v1 (hybrid)"
    if os.path.isdir(f"{root}/cpu"):
        return "v1"
    return "none"


def own_cgroup_limits(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """The CPU quota and memory limit of the cgroup this process is in (what a pod limit sets)."""
    out: dict[str, str] = {}
    lines = (_read(proc_cgroup) or "").splitlines()
    paths: dict[str, str] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    if "" in paths and os.path.exists(f"{root}/cgroup.controllers"):  # v2
        base = Path(root) / paths[""].lstrip("/")
        out["cgroup.path"] = paths[""]
        cpu_max = _read(base / "cpu.max")
        if cpu_max:
            quota, _, period = cpu_max.partition(" ")
            out["cgroup.cpu_limit"] = (
                "none" if quota == "max" else f"{int(quota) / int(period or 100000):.2f} CPUs"
            )
        memory_max = _read(base / "memory.max")
        if memory_max:
            out["cgroup.memory_limit"] = "none" if memory_max == "max" else f"{int(memory_max) >> 20} MiB"
        return out
    cpu_path = paths.get("cpu") or paths.get("cpuacct")
    if cpu_path is not None:
        out["cgroup.path"] = cpu_path
        base = Path(root) / "cpu" / cpu_path.lstrip("/")
        cfs_quota, cfs_period = _read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us")
        if cfs_quota and cfs_period:
            out["cgroup.cpu_limit"] = (
                "none" if int(cfs_quota) < 0 else f"{int(cfs_quota) / int(cfs_period):.2f} CPUs"
            )
    mem_path = paths.get("memory")
    if mem_path is not None:
        limit = _read(Path(root) / "memory" / mem_path.lstrip("/") / "memory.limit_in_bytes")
        if limit:
            # v1 writes "no limit" as a huge page-aligned number
            out["cgroup.memory_limit"] = "none" if int(limit) >= 1 << 60 else f"{int(limit) >> 20} MiB"
    return out


def detect_container(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    answer = probe(["systemd-detect-virt", "--container"], timeout=5)
    if answer and answer != "none":
        return answer
    if "KUBERNETES_SERVICE_HOST" in environ:
        return "kubernetes"
    if os.path.exists("/.dockerenv"):
        return "docker"
    if os.path.exists("/run/.containerenv"):
        return "podman"
    if environ.get("container"):
        return environ["container"]
    init_cgroup = _read("/proc/1/cgroup") or ""
    for marker in ("kubepods", "docker", "containerd", "lxc", "libpod"):
        if marker in init_cgroup:
            return marker
    return "none"


def detect_vm() -> str:
    answer = probe(["systemd-detect-virt", "--vm"], timeout=5)
    if answer and answer != "none":
        return answer
    vendor = " ".join(
        v for v in (_read("/sys/class/dmi/id/sys_vendor"), _read("/sys/class/dmi/id/product_name")) if v
    )
    for marker, name in (
        ("QEMU", "qemu"),
        ("KVM", "kvm"),
        ("VMware", "vmware"),
        ("VirtualBox", "oracle"),
        ("Amazon EC2", "amazon"),
        ("Google Compute Engine", "google"),
        ("Microsoft Corporation Virtual", "microsoft"),
        ("Xen", "xen"),
        ("Firecracker", "firecracker"),
    ):
        if marker.lower() in vendor.lower():
            return name
    if re.search(r"^flags\s*:.*\bhypervisor\b", _read("/proc/cpuinfo") or "", re.M):
        return "vm (unknown hypervisor)"
    return "none"


# --- memory, limits ---------------------------------------------------------------------------------


def memory_facts() -> dict[str, str]:
    vm = psutil.virtual_memory()
    out = {
        "memory.total_MiB": str(vm.total >> 20),
        "memory.available_MiB": str(vm.available >> 20),
        "memory.swap_MiB": str(psutil.swap_memory().total >> 20),
    }
    meminfo = _read("/proc/meminfo") or ""
    huge = dict(re.findall(r"^(HugePages_Total|Hugepagesize):\s+(\d+)", meminfo, re.M))
    if huge:
        out["memory.hugepages"] = f"{huge.get('HugePages_Total', '0')} × {huge.get('Hugepagesize', '?')} kB"
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp:
        match = re.search(r"\[(\w+)\]", thp)
        out["memory.transparent_hugepages"] = match.group(1) if match else thp
    for name, limit in (("memlock", resource.RLIMIT_MEMLOCK), ("nofile", resource.RLIMIT_NOFILE)):
        soft, hard = resource.getrlimit(limit)
        out[f"limits.{name}"] = f"{_limit(soft)} (hard {_limit(hard)})"
    return out


# --- tools, GPUs ------------------------------------------------------------------------------------


def _probe_tool(tool: ToolProbe) -> tuple[str, str | None]:
    key, _, argv, pattern = tool
    text = probe(argv, timeout=15)
    if not text:
        return key, None
    match = re.search(pattern, text, re.M)
    return key, (match.group(1) if match else text.splitlines()[0]).strip()[:200]


def tool_versions(probes: tuple[ToolProbe, ...] = TOOL_PROBES) -> dict[str, str]:
    """Versions of the installed tools nearmetal knows (in parallel: each is a short process start)."""
    out: dict[str, str] = {}
    present = [p for p in probes if shutil.which(p[1]) and shutil.which(p[2][0])]
    if present:
        with ThreadPoolExecutor(max_workers=min(8, len(present))) as pool:
            for key, version in pool.map(_probe_tool, present):
                if version:
                    out[f"tool.{key}"] = version
    from importlib import metadata

    for package in ("torch", "jax", "tensorflow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[f"python.{package}"] = metadata.version(package)  # no import: importing torch takes seconds
    return out


def gpu_facts() -> dict[str, str]:
    """GPU models, driver and CUDA version from nvidia-smi (when present); nothing on machines without."""
    out: dict[str, str] = {}
    listing = probe(
        [
            "nvidia-smi",
            "--query-gpu=name,driver_version,memory.total,mig.mode.current",
            "--format=csv,noheader",
        ],
        timeout=20,
    )
    if listing:
        gpus = [[part.strip() for part in line.split(",")] for line in listing.splitlines() if line.strip()]
        out["gpu.count"] = str(len(gpus))
        models = sorted({g[0] for g in gpus})
        out["gpu.model"] = ", ".join(models)
        if gpus and len(gpus[0]) > 1:
            out["gpu.driver"] = gpus[0][1]
        if gpus and len(gpus[0]) > 2:
            out["gpu.memory"] = gpus[0][2]
        if gpus and len(gpus[0]) > 3 and gpus[0][3] not in ("[N/A]", "N/A"):
            out["gpu.mig_mode"] = ",".join(g[3] for g in gpus if len(g) > 3)
    banner = probe(["nvidia-smi"], timeout=20)
    if banner:
        match = re.search(r"CUDA Version:\s*([\d.]+)", banner)
        if match:
            out["gpu.cuda_driver_version"] = match.group(1)
    return out


# --- the plan's source, the environment variables ---------------------------------------------------


def git_facts(directory: str | Path) -> dict[str, str]:
    """Commit, branch and dirtiness of the git work tree holding the plan (remote URL without credentials)."""
    directory = Path(directory)
    if not directory.is_dir() or shutil.which("git") is None:
        return {}
    git = ["git", "-c", f"safe.directory={directory.resolve()}", "-C", str(directory)]
    commit = probe([*git, "rev-parse", "HEAD"], timeout=10)
    if not commit:
        return {}
    out = {"git.commit": commit}
    status = probe([*git, "status", "--porcelain", "--untracked-files=no"], timeout=20)
    out["git.dirty"] = "yes" if status else "no"
    branch = probe([*git, "rev-parse", "--abbrev-ref", "HEAD"], timeout=10)
    if branch:
        out["git.branch"] = branch
    remote = probe([*git, "config", "--get", "remote.origin.url"], timeout=10)
    if remote:
        out["git.remote"] = redact_url(remote)
    return out


def allowed_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env.NAME`` for the allow-listed variables, values redacted where they look secret."""
    environ = os.environ if environ is None else environ
    out = {}
    for name, value in environ.items():
        if any(name == a or (a.endswith("_") and name.startswith(a)) for a in ENV_ALLOW):
            out[f"env.{name}"] = redact_value(name, value)[:2000]
    return out


def _safely(capture: Callable[[], dict[str, str]]) -> dict[str, str]:
    try:
        return capture()
    except Exception:  # a probe that breaks on an unusual machine costs its keys, not the run
        return {}


def capture_environment(
    tool_versions_of_plan: dict[str, str] | None = None,
    plan_dir: str | Path | None = None,
    store_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Everything worth knowing about this machine for comparing a run with another one later."""
    from nearmetal import __version__

    uname = platform.uname()
    env: dict[str, str] = {
        "nearmetal.version": __version__,
        "captured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host.name": uname.node,
        "os.kernel": uname.release,
        "os.kernel_build": uname.version,
        "os.machine": uname.machine,
        "python.version": platform.python_version(),
        "cpu.model": cpu_model(),
        "cpu.logical": str(psutil.cpu_count(logical=True)),
        "cpu.physical": str(psutil.cpu_count(logical=False)),
        "cgroup.version": cgroup_version(),
        "user.euid": str(os.geteuid()),
    }
    release = _read("/etc/os-release") or ""
    for line in release.splitlines():
        if line.startswith("PRETTY_NAME="):
            env["os.distribution"] = line.split("=", 1)[1].strip('"')
    env.update(_safely(cpu_facts))
    env.update(_safely(own_cgroup_limits))
    env.update(_safely(memory_facts))
    container = _safely(lambda: {"virtualization.container": detect_container(environ)})
    vm = _safely(lambda: {"virtualization.vm": detect_vm()})
    env.update(container)
    env.update(vm)
    parts = [v for v in (*container.values(), *vm.values()) if v != "none"]
    env["virtualization"] = " in ".join(parts) if parts else "none"
    env.update(_safely(tool_versions))
    env.update(_safely(gpu_facts))
    for tool, version in (tool_versions_of_plan or {}).items():  # what the plan's workloads report wins
        env[f"tool.{tool}"] = redact_text(str(version))
    if plan_dir is not None:
        env.update(_safely(lambda: git_facts(plan_dir)))
    if store_url:
        env["store.url"] = redact_url(store_url)
    env.update(allowed_environment(environ))
    return env
