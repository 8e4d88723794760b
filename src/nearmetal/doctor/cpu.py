"""Is this process under a CPU quota, and how often is it throttled? (seed 000)"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nearmetal.doctor.base import Finding, Severity, check
from nearmetal.host.cgroups import parse_flat_keyed

LESSON_000 = (
    "seed 000: a Kubernetes pod CPU limit writes a quota into cpu.max; LAMMPS ran at ~60% CPU until "
    "the limit was removed (99%). Burstable QoS still caps; requests/limits are not a way to map "
    "pods 1:1 to nodes — use affinity or whole-node resources instead"
)


@dataclass(frozen=True)
class QuotaLevel:
    path: Path
    quota_us: int | None  # None = no limit ("max" / -1)
    period_us: int
    nr_periods: int
    nr_throttled: int

    @property
    def cpus(self) -> float | None:
        return None if self.quota_us is None else self.quota_us / self.period_us


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


def _read_level(directory: Path, version: int) -> QuotaLevel | None:
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
    return QuotaLevel(directory, quota, period, stat.get("nr_periods", 0), stat.get("nr_throttled", 0))


def quota_chain(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None) -> list[QuotaLevel]:
    """The CPU quota at this process's cgroup and every ancestor, innermost first."""
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    paths = own_cgroup_paths(proc_cgroup)
    candidates: list[tuple[Path, int]] = []
    if "cpu" in paths and (root / "cpu").is_dir():
        candidates.append((root / "cpu", 1))
        rel = paths["cpu"]
    elif (root / "cpu.max").exists() or (root / "cgroup.controllers").exists():
        candidates.append((root, 2))
        rel = paths.get("", "/")
    else:
        return []
    base, version = candidates[0]
    levels = []
    current = base / rel.lstrip("/")
    while True:
        if current.is_dir():
            level = _read_level(current, version)
            if level is not None:
                levels.append(level)
        if current == base or base not in current.parents:
            break
        current = current.parent
    return levels


@check(
    "cpu-quota",
    inspects="/proc/self/cgroup; cpu.max (v2) or cpu.cfs_quota_us/cpu.cfs_period_us (v1) and cpu.stat of "
    "this cgroup and every ancestor",
    explains=("cpu", "variance"),
)
def check_cpu_quota(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None) -> list[Finding]:
    levels = quota_chain(root, proc_cgroup)
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
        chain = ", ".join(str(lvl.path) for lvl in levels)
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
        f"{tightest.path}: quota {tightest.quota_us} µs per {tightest.period_us} µs period = "
        f"{tightest.cpus:.2f} CPUs; throttled in {tightest.nr_throttled} of {tightest.nr_periods} periods "
        f"({throttled:.0f}%)"
    )
    others = [lvl for lvl in limited if lvl is not tightest]
    if others:
        # a quota on a parent (the pod, a Slurm job, a systemd slice) caps every child even when the
        # child's own cgroup says "max"
        evidence += "; also limited: " + ", ".join(f"{lvl.path} = {lvl.cpus:.2f} CPUs" for lvl in others)
    if tightest is not levels[0]:
        evidence += f"; the limit sits on an ancestor of this process's cgroup ({levels[0].path})"
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


def cpu_weight(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None) -> tuple[str, int] | None:
    """The innermost visible ``cpu.shares`` (v1) or ``cpu.weight`` (v2) of this process's cgroup:
    ("cpu.shares", 819) — the kubelet writes requests × 1024 / 1000 per milli-CPU (2 for BestEffort)."""
    levels = quota_chain(root, proc_cgroup)
    for level in levels:
        for name in ("cpu.shares", "cpu.weight"):
            with contextlib.suppress(OSError, ValueError):
                return name, int((level.path / name).read_text())
    return None


def _in_a_pod() -> bool:
    """Inside a container a pod runs (cgroup namespace: no kubepods path to see): the API server's
    address the kubelet puts in every container's environment."""
    return "KUBERNETES_SERVICE_HOST" in os.environ


@check(
    "k8s-cpu-limits",
    inspects="/proc/self/cgroup (kubepods QoS path), cpu.shares/cpu.weight and the CPU quota chain",
    explains=("cpu",),
)
def check_k8s_cpu_limits(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None, in_pod: bool | None = None
) -> list[Finding]:
    """Inside a pod: its QoS class, CPU weight (requests), quota (limit) — and that Burstable does not lift a
    limit. Run ``nearmetal doctor`` in the pod (``kubectl exec``) to see what the pod's processes get."""
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    qos = kubernetes_qos(proc_cgroup)
    weight = cpu_weight(root, proc_cgroup)
    if qos is None and (in_pod if in_pod is not None else _in_a_pod()):
        # a cgroup namespace hides the kubepods path; the weight still tells BestEffort (shares 2, weight 1)
        qos = "besteffort" if weight in (("cpu.shares", 2), ("cpu.weight", 1)) else "unknown"
    if qos is None:
        return [
            Finding(
                "k8s-cpu-limits",
                "ok",
                "not in a Kubernetes pod",
                evidence="no kubepods cgroup in /proc/self/cgroup",
                lesson=LESSON_000,
            )
        ]
    qos_name = {"besteffort": "BestEffort", "burstable": "Burstable", "guaranteed": "Guaranteed"}.get(
        qos, "unknown"
    )
    limited = [lvl for lvl in quota_chain(root, proc_cgroup) if lvl.quota_us is not None]
    shares = ""
    if weight is not None:
        name, value = weight
        requested = f" ≈ requests.cpu {value / 1024:.2f}" if name == "cpu.shares" and value > 2 else ""
        shares = f"; {name} {value}{requested}"
    if not limited:
        if qos == "besteffort":
            return [
                Finding(
                    "k8s-cpu-limits",
                    "warning",
                    "Kubernetes pod (BestEffort QoS) without a CPU limit: no quota, but the lowest CPU weight "
                    "on the node — any other work there wins the CPU over it",
                    evidence=f"QoS {qos_name}{shares}; no quota on the pod's cgroups",
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
                evidence=f"QoS {qos_name}{shares}; no quota on the pod's cgroups",
                lesson=LESSON_000,
            )
        ]
    tightest = min(limited, key=lambda lvl: lvl.cpus or 0)
    cpus = tightest.cpus or 0
    throttled = (100.0 * tightest.nr_throttled / tightest.nr_periods) if tightest.nr_periods else 0.0
    evidence = (
        f"QoS {qos_name}{shares}; quota {tightest.quota_us} µs per {tightest.period_us} µs = {cpus:.2f} CPUs "
        f"at {tightest.path}; throttled in {tightest.nr_throttled} of {tightest.nr_periods} periods "
        f"({throttled:.0f}%)"
    )
    if qos == "burstable":
        evidence += "; Burstable pods are capped by their limit too: " + SEED_000_QUOTE
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
