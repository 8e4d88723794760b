"""Is this process under a CPU quota, and how often is it throttled? (seed 000)"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from nearmetal.doctor.base import Finding, Severity, check
from nearmetal.host.cgroups import parse_flat_keyed
from nearmetal.host.mountinfo import MOUNTINFO, parse_mountinfo

LESSON_000 = (
    "seed 000: a Kubernetes pod CPU limit writes a quota into cpu.max; LAMMPS ran at ~60% CPU until "
    "the limit was removed (99%). Burstable QoS still caps; requests/limits are not a way to map "
    "pods 1:1 to nodes — use affinity or whole-node resources instead"
)


@dataclass(frozen=True)
class QuotaLevel:
    path: Path  # the directory holding its files, in this mount namespace
    quota_us: int | None  # None = no limit ("max" / -1)
    period_us: int
    nr_periods: int
    nr_throttled: int
    cgroup: str = ""  # its path in the cgroup hierarchy ("/kubepods/burstable/pod…/…"), as /proc names it

    @property
    def cpus(self) -> float | None:
        return None if self.quota_us is None else self.quota_us / self.period_us

    @property
    def where(self) -> str:
        """The cgroup, and where its files are when that is not the same path (inside a container)."""
        if self.cgroup in ("", "/") or str(self.path).endswith(self.cgroup):
            return str(self.path)
        return f"{self.cgroup} (seen at {self.path})"


def own_cgroup_paths(proc_cgroup: str) -> dict[str, str]:
    """controller → path from /proc/<pid>/cgroup (``""`` is the v2 unified path)."""
    out: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def _read_level(directory: Path, version: int, cgroup: str = "") -> QuotaLevel | None:
    try:
        if version == 2:
            raw = (directory / "cpu.max").read_text().split()
            quota = None if raw[0] == "max" else int(raw[0])
            period = int(raw[1]) if len(raw) > 1 else 100_000
        else:
            q = int((directory / "cpu.cfs_quota_us").read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
            quota = None if q < 0 else q
        stat = (
            parse_flat_keyed((directory / "cpu.stat").read_text())
            if (directory / "cpu.stat").exists()
            else {}
        )
    except (OSError, ValueError, IndexError):
        return None
    return QuotaLevel(
        directory, quota, period, stat.get("nr_periods", 0), stat.get("nr_throttled", 0), cgroup
    )


@dataclass(frozen=True)
class CgroupView:
    """Where this process's CPU cgroup is in this mount namespace.

    /proc/self/cgroup names the cgroup by its path in the hierarchy, but a mount of the hierarchy can show a
    subtree at its mount point: on the host the mount's root is ``/``; inside a container on cgroup v1 (no
    cgroup namespace) the runtime bind-mounts the container's own cgroup at /sys/fs/cgroup/cpu, so /proc says
    ``/kubepods/burstable/pod<uid>/<container>`` while its files are at /sys/fs/cgroup/cpu itself; on v2 with
    a cgroup namespace /proc says ``0::/`` and the mount's root is ``/`` again. The mount's root
    (/proc/self/mountinfo, 4th field) maps the one onto the other."""

    base: Path  # the hierarchy's mount point: ROOT/cpu (v1) or ROOT (v2)
    version: int
    path: str  # the cgroup path /proc/self/cgroup names
    mount_root: str  # the cgroup the mount shows at ``base`` ("/" on the host)
    directory: Path  # this process's cgroup directory here

    @property
    def subtree_only(self) -> bool:
        """Only a subtree is mounted here (a container's own cgroup): its ancestors are not visible."""
        return self.mount_root not in ("", "/")

    def cgroup_of(self, directory: Path) -> str:
        rel = directory.relative_to(self.base).as_posix()
        joined = posixpath.normpath(posixpath.join(self.mount_root or "/", rel))
        return joined if joined.startswith("/") else "/" + joined


def _mount_root(base: Path, mountinfo: str | None) -> str:
    """The cgroup path shown at ``base`` by the last cgroup mount there ("/" when none is known)."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return "/"
    target = os.path.realpath(base)  # /sys/fs/cgroup/cpu is a link to cpu,cpuacct on v1
    root = "/"
    for mount in parse_mountinfo(mountinfo):
        if mount.fstype in ("cgroup", "cgroup2") and mount.mount_point == target:
            root = mount.root
    return root


def cgroup_view(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None, mountinfo: str | None = None
) -> CgroupView | None:
    """This process's CPU cgroup as seen under ``root`` (None: no CPU controller visible). ``mountinfo``
    defaults to /proc/self/mountinfo for the real root and to none (every mount's root "/") for another."""
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    if mountinfo is None and root != Path("/sys/fs/cgroup"):
        mountinfo = ""
    paths = own_cgroup_paths(proc_cgroup)
    if "cpu" in paths and (root / "cpu").is_dir():
        base, version, path = root / "cpu", 1, paths["cpu"]
    elif (root / "cpu.max").exists() or (root / "cgroup.controllers").exists():
        base, version, path = root, 2, paths.get("", "/")
    else:
        return None
    mount_root = _mount_root(base, mountinfo)
    prefix = mount_root.rstrip("/")
    if path == mount_root or path.startswith(prefix + "/"):
        directory = base / path[len(prefix) :].lstrip("/")
    else:
        # outside the mounted subtree (a cgroup namespace's "/.." paths): the mount's own cgroup
        directory = base
    return CgroupView(base, version, path, mount_root, directory)


def quota_chain(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None, mountinfo: str | None = None
) -> list[QuotaLevel]:
    """The CPU quota at this process's cgroup and every visible ancestor, innermost first."""
    view = cgroup_view(root, proc_cgroup, mountinfo)
    if view is None:
        return []
    levels = []
    current = view.directory
    while True:
        if current.is_dir():
            level = _read_level(current, view.version, view.cgroup_of(current))
            if level is not None:
                levels.append(level)
        if current == view.base or view.base not in current.parents:
            break
        current = current.parent
    return levels


@check(
    "cpu-quota",
    inspects="/proc/self/cgroup, /proc/self/mountinfo; cpu.max (v2) or cpu.cfs_quota_us/cpu.cfs_period_us (v1) "
    "and cpu.stat of this cgroup and every ancestor visible",
    explains=("cpu", "variance"),
)
def check_cpu_quota(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None, mountinfo: str | None = None
) -> list[Finding]:
    levels = quota_chain(root, proc_cgroup, mountinfo)
    if not levels:
        return [
            Finding(
                "cpu-quota",
                "info",
                "no cgroup CPU controller visible; CPU quota cannot be checked",
                evidence=f"no cpu controller under {root}",
                lesson=LESSON_000,
            )
        ]
    limited = [lvl for lvl in levels if lvl.quota_us is not None]
    if not limited:
        chain = ", ".join(lvl.where for lvl in levels)
        return [
            Finding(
                "cpu-quota",
                "ok",
                "no CPU quota on this process's cgroup or its ancestors",
                evidence=f"quota unlimited at: {chain}",
                lesson=LESSON_000,
            )
        ]
    tightest = min(limited, key=lambda lvl: lvl.cpus or 0)
    throttled = (100.0 * tightest.nr_throttled / tightest.nr_periods) if tightest.nr_periods else 0.0
    severity: Severity = "critical" if throttled >= 10 else "warning"
    evidence = (
        f"{tightest.where}: quota {tightest.quota_us} µs per {tightest.period_us} µs period = "
        f"{tightest.cpus:.2f} CPUs; throttled in {tightest.nr_throttled} of {tightest.nr_periods} periods "
        f"({throttled:.0f}%)"
    )
    others = [lvl for lvl in limited if lvl is not tightest]
    if others:
        # a quota on a parent (the pod, a Slurm job, a systemd slice) caps every child even when the
        # child's own cgroup says "max"
        evidence += "; also limited: " + ", ".join(f"{lvl.where} = {lvl.cpus:.2f} CPUs" for lvl in others)
    if tightest is not levels[0]:
        evidence += f"; the limit sits on an ancestor of this process's cgroup ({levels[0].where})"
    return [
        Finding(
            "cpu-quota",
            severity,
            f"CPU quota of {tightest.cpus:.2f} CPUs caps every process here "
            f"(throttled {throttled:.0f}% of periods)",
            evidence=evidence,
            fix="remove the CPU limit (Kubernetes: drop resources.limits.cpu, keep requests; or use the "
            "static CPU manager with Guaranteed pods); on a plain host: write 'max' to cpu.max "
            "(v2) or -1 to cpu.cfs_quota_us (v1)",
            lesson=LESSON_000,
        )
    ]


# Kubernetes names pod cgroups after their QoS class: kubepods/burstable/pod<uid>,
# kubepods.slice/kubepods-besteffort.slice/…, and Guaranteed pods sit directly under kubepods
_QOS_PATTERN = re.compile(r"kubepods.*?(?P<qos>burstable|besteffort)|kubepods", re.IGNORECASE)


def kubernetes_qos(proc_cgroup: str) -> str | None:
    """The pod QoS class read from the cgroup path (None when not in a Kubernetes pod)."""
    for path in own_cgroup_paths(proc_cgroup).values():
        match = _QOS_PATTERN.search(path)
        if match:
            return (match.group("qos") or "guaranteed").lower()
    return None


SEED_000_QUOTE = (
    '"I had incorrectly thought that Burstable QoS meant that you could go over those limits" (seed 000): '
    "Burstable only means requests < limits (or no limit); a CPU limit is a CFS quota whatever the QoS class"
)


def cpu_weight(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None, mountinfo: str | None = None
) -> tuple[str, int] | None:
    """The innermost visible ``cpu.shares`` (v1) or ``cpu.weight`` (v2) of this process's cgroup:
    ("cpu.shares", 819) — the kubelet writes requests × 1024 / 1000 per milli-CPU (2 for BestEffort)."""
    levels = quota_chain(root, proc_cgroup, mountinfo)
    for level in levels:
        for name in ("cpu.shares", "cpu.weight"):
            with contextlib.suppress(OSError, ValueError):
                return name, int((level.path / name).read_text())
    return None


def requested_cpus(name: str, value: int) -> float | None:
    """The CPU request a weight stands for (None: the minimum, BestEffort's). v1: shares = milli-CPUs ×
    1024 / 1000; v2: the runtime's weight = 1 + (shares − 2) × 9999 / 262142 (integer division), turned back
    into the middle of the shares that give this weight (one weight step is ~26 shares, 0.026 CPU)."""
    if name == "cpu.shares":
        return value / 1024 if value > 2 else None
    return (2 + (value - 0.5) * 262142 / 9999) / 1024 if value > 1 else None


def _in_a_pod() -> bool:
    """Inside a container a pod runs (cgroup namespace: no kubepods path to see): the API server's
    address the kubelet puts in every container's environment."""
    return "KUBERNETES_SERVICE_HOST" in os.environ


QOS_NAMES = {"besteffort": "BestEffort", "burstable": "Burstable", "guaranteed": "Guaranteed"}


def _infer_qos(request: float | None, limit: float | None) -> tuple[str, str]:
    """(qos key, its name) from the CPU weight and quota alone, when a cgroup namespace hides the kubepods
    path: no request → BestEffort; a request without a limit, or below it → Burstable; request = limit →
    Guaranteed if the memory request equals its limit too (which the CPU files cannot tell)."""
    if request is None:
        return "besteffort", "BestEffort"
    if limit is None or request < limit * 0.99:
        return "burstable", "Burstable"
    return "guaranteed?", "Guaranteed or Burstable (requests.cpu = limits.cpu)"


@check(
    "k8s-cpu-limits",
    inspects="/proc/self/cgroup (kubepods QoS path), /proc/self/mountinfo (where the cgroup is mounted), "
    "cpu.shares/cpu.weight and the CPU quota chain",
    explains=("cpu",),
)
def check_k8s_cpu_limits(
    root: Path = Path("/sys/fs/cgroup"),
    proc_cgroup: str | None = None,
    in_pod: bool | None = None,
    mountinfo: str | None = None,
) -> list[Finding]:
    """Inside a pod: its QoS class, CPU weight (requests), quota (limit) — and that Burstable does not lift a
    limit. Run ``nearmetal doctor`` in the pod (``kubectl exec``) to see what the pod's processes get.

    On the host and in a container alike: a container sees only its own cgroup, mounted at /sys/fs/cgroup[/cpu]
    (``cgroup_view`` maps /proc's path onto it), so the quota and shares read are the container's."""
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    view = cgroup_view(root, proc_cgroup, mountinfo)
    levels = quota_chain(root, proc_cgroup, mountinfo)
    weight = cpu_weight(root, proc_cgroup, mountinfo)
    limited = [lvl for lvl in levels if lvl.quota_us is not None]
    tightest = min(limited, key=lambda lvl: lvl.cpus or 0) if limited else None
    request = requested_cpus(*weight) if weight is not None else None
    qos = kubernetes_qos(proc_cgroup)
    if qos is not None:
        qos_name = QOS_NAMES[qos]
        qos_text = f"QoS {qos_name} (from the cgroup path)"
    elif in_pod if in_pod is not None else _in_a_pod():
        # a cgroup namespace hides the kubepods path: the weight and the quota tell the class
        qos, qos_name = _infer_qos(request, tightest.cpus if tightest else None)
        qos_text = (
            f"QoS {qos_name} (inferred from the CPU weight and quota: a cgroup namespace hides the path)"
        )
    else:
        return [
            Finding(
                "k8s-cpu-limits",
                "ok",
                "not in a Kubernetes pod",
                evidence="no kubepods cgroup in /proc/self/cgroup",
                lesson=LESSON_000,
            )
        ]
    shares = ""
    if weight is not None:
        name, value = weight
        shares = f"; {name} {value}" + (f" ≈ requests.cpu {request:.2f}" if request is not None else "")
    seen = ""
    if view is not None and view.subtree_only:
        seen = (
            f"; only the container's own cgroup is mounted at {view.base}: the pod's cgroup, whose quota caps "
            "all its containers together, is not visible"
        )
    if tightest is None:
        visible = ", ".join(lvl.where for lvl in levels) or "the cgroups visible here"
        if qos == "besteffort":
            return [
                Finding(
                    "k8s-cpu-limits",
                    "warning",
                    "Kubernetes pod (BestEffort QoS) without a CPU limit: no quota, but the lowest CPU weight "
                    "on the node — any other work there wins the CPU over it",
                    evidence=f"{qos_text}{shares}; no quota on {visible}{seen}",
                    fix="set resources.requests.cpu (no limit): a Burstable pod keeps no quota and gets its "
                    "share when the node is busy",
                    lesson=LESSON_000,
                )
            ]
        return [
            Finding(
                "k8s-cpu-limits",
                "ok",
                f"Kubernetes pod ({qos_name} QoS) without a CPU limit",
                evidence=f"{qos_text}{shares}; no quota on {visible}{seen}",
                lesson=LESSON_000,
            )
        ]
    cpus = tightest.cpus or 0
    throttled = (100.0 * tightest.nr_throttled / tightest.nr_periods) if tightest.nr_periods else 0.0
    evidence = (
        f"{qos_text}{shares}; quota {tightest.quota_us} µs per {tightest.period_us} µs = {cpus:.2f} CPUs "
        f"at {tightest.where}; throttled in {tightest.nr_throttled} of {tightest.nr_periods} periods "
        f"({throttled:.0f}%){seen}"
    )
    if qos.startswith("burstable"):
        evidence += "; Burstable pods are capped by their limit too: " + SEED_000_QUOTE
    elif qos.startswith("guaranteed"):
        evidence += (
            "; Guaranteed (requests = limits) is capped by the same quota: "
            + SEED_000_QUOTE.split(": ", 1)[1]
        )
    return [
        Finding(
            "k8s-cpu-limits",
            "warning",
            f"Kubernetes pod ({qos_name} QoS) with a CPU limit of {cpus:.2f} CPUs: requests/limits are not a "
            "1:1 pod-to-node mapping, they cap the CPU",
            evidence=evidence,
            fix="to give a pod a whole node use nodeSelector/affinity plus pod anti-affinity (or a "
            "topologySpreadConstraint) and set only resources.requests.cpu; drop resources.limits.cpu, or use "
            "the static CPU manager policy with integer CPUs for exclusive cores",
            lesson=LESSON_000,
        )
    ]
