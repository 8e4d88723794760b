"""What else used the node's CPU while a pod trial ran: the pod trial's contention evidence (issue 27).

The local backend's evidence (``telemetry.contention``) counts the CPU of every process that is not the run's;
a pod trial's run is the pod, so here *outside* is everything on the node that is not the pod's cgroup:

    outside CPU = the node's busy CPU time (``/proc/stat``: user, nice, system, irq, softirq)
                  − the pod cgroup's CPU time (``cpuacct.usage`` / ``cpu.stat usage_usec``)
                  − kernel threads (left out, as the local backend leaves them out)

over the window from the pod seen Running to the pod seen ended, in % of one CPU: the same number, under the
same name (``outside_cpu_pct``) and in the same place (``placement["outside"]``), as a local trial's, so
``analysis.contention`` judges both with one rule ("contended — not interpretable"). Besides the total, the
evidence splits it by who took it, from ``/proc/PID/stat`` of every process read at both ends of the window
(two scans per trial, a few milliseconds; nothing runs in between): the control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler), the kubelet, the container runtime (containerd, its shims, runc,
crun), nearmetal itself (this process), other pods, and the rest (named: the busiest outside programs).

Off the node (nearmetal runs elsewhere) the kubelet's stats summary API (``/stats/summary`` through the API
server's node proxy) gives the node's and the pod's CPU counters: outside = node − pod, without the split
(cAdvisor updates them every few seconds, so a short trial's figure is coarse; ``source`` says which).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nearmetal.host.procstat import read_stat
from nearmetal.metrics import Metric

PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
TOP = 5

# /proc/PID/stat's comm is cut at 15 characters: kube-controller-manager → kube-controller
GROUPS: dict[str, tuple[str, ...]] = {
    "control_plane": ("etcd", "kube-apiserver", "kube-controller", "kube-scheduler"),
    "kubelet": ("kubelet",),
    "containerd": ("containerd", "containerd-shim", "runc", "crun", "runc:[2:INIT]"),
}
SPLIT = ("control_plane", "kubelet", "containerd", "nearmetal", "other_pods", "rest")
SPLIT_TEXT = {
    "control_plane": "control plane",
    "kubelet": "kubelet",
    "containerd": "containerd",
    "nearmetal": "nearmetal",
    "other_pods": "other pods",
    "rest": "the rest",
}


def group_of(comm: str) -> str | None:
    """Which part of the cluster a process of this name is (None: none of them)."""
    for group, names in GROUPS.items():
        if comm in names or (group == "containerd" and comm.startswith("containerd-shim")):
            return group
    return None


def _cpu_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) ticks of all CPUs: busy = user+nice+system+irq+softirq (guest is in user)."""
    with open("/proc/stat", "rb") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    values += [0] * (8 - len(values))
    busy = values[0] + values[1] + values[2] + values[5] + values[6]
    return busy, values[7], sum(values[:8])


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def cgroup_usage_s(version: int, path: Path) -> float | None:
    """A cgroup's CPU time so far (seconds), or None when it is gone."""
    try:
        if version == 1:
            acct = Path(str(path).replace("/sys/fs/cgroup/cpu/", "/sys/fs/cgroup/cpuacct/", 1))
            return int((acct / "cpuacct.usage").read_text()) / 1e9
        for line in (path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    except (OSError, ValueError):
        return None
    return None


@dataclass
class NodeSnapshot:
    """One reading of the node at one end of a pod trial's window."""

    t: float
    cpu: tuple[int, int, int]
    procs: dict[tuple[str, int], tuple[str, int, bool]]
    self_cpu_s: float
    pod_cpu_s: float | None
    loadavg: float

    @classmethod
    def take(cls, pod_cgroup: tuple[int, Path] | None) -> NodeSnapshot:
        procs: dict[tuple[str, int], tuple[str, int, bool]] = {}
        for entry in os.scandir(PROC):
            if entry.name.isdigit():
                stat = read_stat(entry.name)
                if stat is not None:
                    # utime+stime+cutime+cstime (a daemon carries the short-lived helpers it reaped: runc,
                    # CNI plugins), except for containerd's shims, which reap the container's own
                    # processes: their own time only (the pod's is in its cgroup)
                    shim = stat.comm.startswith("containerd-shim")
                    ticks = stat.own_ticks if shim else stat.ticks
                    kthread = stat.kernel_thread or entry.name == "2"
                    procs[(entry.name, stat.starttime)] = (stat.comm, ticks, kthread)
        return cls(
            t=time.monotonic(),
            cpu=_cpu_ticks(),
            procs=procs,
            self_cpu_s=_self_cpu_s(),
            pod_cpu_s=cgroup_usage_s(*pod_cgroup) if pod_cgroup else None,
            loadavg=_loadavg(),
        )


def _in_pod(pid: str, uid: str) -> str | None:
    """ "this" when the process is in the pod's cgroup, "other" when in another pod's, else None."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    if f"pod{uid}" in text or f"pod{uid.replace('-', '_')}" in text:
        return "this"
    return "other" if "kubepods" in text else None


@dataclass
class NodeNoise:
    """The evidence of one pod trial's window, in the local backend's shape plus the cluster's split."""

    seconds: float
    outside_cpu_s: float
    kernel_cpu_s: float
    pod_cpu_s: float
    steal_pct: float
    loadavg: float
    cpus: int
    source: str
    split_s: dict[str, float] = field(default_factory=dict)
    processes: dict[str, dict[str, float]] = field(default_factory=dict)
    top: list[dict[str, Any]] = field(default_factory=list)
    nearmetal_cpu_s: float | None = None

    @property
    def outside_cpu_pct(self) -> float:
        return 100.0 * self.outside_cpu_s / self.seconds if self.seconds > 0 else float("nan")

    def pct(self, seconds: float) -> float:
        return 100.0 * seconds / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "outside_cpu_pct": round(self.outside_cpu_pct, 2),
            "outside_cpu_s": round(self.outside_cpu_s, 3),
            "kernel_cpu_s": round(self.kernel_cpu_s, 3),
            "pod_cpu_s": round(self.pod_cpu_s, 3),
            "steal_pct": round(self.steal_pct, 2),
            "loadavg_1m": self.loadavg,
            "cpus": self.cpus,
            "source": self.source,
            # who took the outside CPU, in % of one CPU over the window
            "split_pct": {k: round(self.pct(v), 2) for k, v in self.split_s.items()},
            "split_cpu_s": {k: round(v, 3) for k, v in self.split_s.items()},
            "processes": self.processes,
            "nearmetal_cpu_s": None if self.nearmetal_cpu_s is None else round(self.nearmetal_cpu_s, 4),
            "top": self.top,
        }

    def metrics(self) -> list[Metric]:
        """The local backend's names (outside_cpu_pct, steal_pct, loadavg_1m …), then the split."""
        out = [
            Metric("outside_cpu_pct", self.outside_cpu_pct, "% of one CPU", "lower", source="telemetry"),
            Metric("outside_cpu_s", self.outside_cpu_s, "s", "lower", source="telemetry"),
            Metric("steal_pct", self.steal_pct, "% of CPU time", "lower", source="telemetry"),
            Metric("loadavg_1m", self.loadavg, "tasks", "lower", source="telemetry"),
        ]
        for key, seconds in self.split_s.items():
            out.append(Metric(f"node_{key}_cpu_pct", self.pct(seconds), "% of one CPU", "lower", "telemetry"))
        if self.nearmetal_cpu_s is not None:
            out.append(Metric("nearmetal_cpu_s", self.nearmetal_cpu_s, "s", "lower", source="telemetry"))
        return out


def node_noise(
    start: NodeSnapshot, end: NodeSnapshot, pod_uid: str, pod_cpu_s: float | None = None
) -> NodeNoise | None:
    """The outside CPU between two snapshots of this node. The pod's CPU time over the window comes from its
    cgroup at both ends, else from ``pod_cpu_s`` (the container's own count over the program, when the
    kubelet removed the pod's cgroup before the pod was seen ended); None without either."""
    source = "node /proc and the pod's cgroup"
    if start.pod_cpu_s is not None and end.pod_cpu_s is not None:
        pod_s = max(0.0, end.pod_cpu_s - start.pod_cpu_s)
    elif pod_cpu_s is not None:
        pod_s = max(0.0, pod_cpu_s)
        source = "node /proc and the container's cgroup (the pod's was gone at the end)"
    else:
        return None
    seconds = max(end.t - start.t, 1e-9)
    busy = (end.cpu[0] - start.cpu[0]) / _TICK
    total = end.cpu[2] - start.cpu[2]
    steal = 100.0 * (end.cpu[1] - start.cpu[1]) / total if total > 0 else float("nan")
    own_pid = str(os.getpid())
    split = dict.fromkeys(SPLIT, 0.0)
    kernel = 0
    by_name: dict[str, list[int]] = {}
    named: dict[str, dict[str, float]] = {}
    for key, (comm, ticks, kthread) in end.procs.items():
        before = start.procs.get(key)
        delta = ticks - (before[1] if before else 0)
        if delta <= 0:
            continue
        if kthread:
            kernel += delta
            continue
        if key[0] == own_pid:
            split["nearmetal"] += delta / _TICK
            continue
        group = group_of(comm)
        if group is None:
            where = _in_pod(key[0], pod_uid)
            if where == "this":
                continue  # the pod's own (already in its cgroup's time)
            group = "other_pods" if where == "other" else "rest"
        split[group] += delta / _TICK
        if group in ("control_plane", "kubelet", "containerd"):
            named.setdefault(group, {})
            named[group][comm] = round(named[group].get(comm, 0.0) + delta / _TICK, 3)
        entry = by_name.setdefault(comm, [0, 0])
        entry[0] += delta
        entry[1] += 1
    kernel_s = kernel / _TICK
    outside = max(0.0, busy - pod_s - kernel_s)
    # processes that ended inside the window are in the node's busy time but in no scan: the rest
    split["rest"] = max(0.0, outside - sum(v for k, v in split.items() if k != "rest"))
    top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:TOP]
    return NodeNoise(
        seconds=seconds,
        outside_cpu_s=outside,
        kernel_cpu_s=kernel_s,
        pod_cpu_s=pod_s,
        steal_pct=steal,
        loadavg=(start.loadavg + end.loadavg) / 2,
        cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        source=source,
        split_s=split,
        processes=named,
        top=[{"name": name, "processes": n, "cpu_s": round(t / _TICK, 2)} for name, (t, n) in top],
        nearmetal_cpu_s=end.self_cpu_s - start.self_cpu_s,
    )


# --- off the node: the kubelet's stats summary ---------------------------------------------------------
@dataclass
class SummaryReading:
    """The node's and the pod's CPU counters from one stats summary (nanoseconds, and when cAdvisor read
    them)."""

    node_ns: int
    node_time: float
    pod_ns: int | None
    system: dict[str, int] = field(default_factory=dict)
    self_cpu_s: float = 0.0


def _stamp(text: str | None) -> float | None:
    if not text:
        return None
    from datetime import datetime

    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    return None


def parse_summary(doc: dict[str, Any], pod_uid: str) -> SummaryReading | None:
    """The counters a pod trial needs from a ``/stats/summary`` document (None when the node's are absent)."""
    cpu = (doc.get("node") or {}).get("cpu") or {}
    node_ns, when = cpu.get("usageCoreNanoSeconds"), _stamp(cpu.get("time"))
    if node_ns is None or when is None:
        return None
    pod_ns = None
    for pod in doc.get("pods") or []:
        if (pod.get("podRef") or {}).get("uid") == pod_uid:
            pod_ns = ((pod.get("cpu") or {}).get("usageCoreNanoSeconds")) or 0
    system = {
        str(c.get("name")): int((c.get("cpu") or {}).get("usageCoreNanoSeconds") or 0)
        for c in (doc.get("node") or {}).get("systemContainers") or []
        if (c.get("cpu") or {}).get("usageCoreNanoSeconds") is not None
    }
    return SummaryReading(int(node_ns), when, None if pod_ns is None else int(pod_ns), system, _self_cpu_s())


def summary_noise(
    start: SummaryReading,
    end: SummaryReading,
    pod_cpu_s: float | None = None,
    pod_span: tuple[float, float] | None = None,
) -> NodeNoise | None:
    """Outside = node − pod between two summaries; the kubelet's and the runtime's system containers when
    the kubelet reports them (with ``--kubelet-cgroups``/``--runtime-cgroups``).

    The pod's CPU over the window: from the two summaries when both list the pod; else (a pod that ended has
    left the summary by the time it is seen ended, and one just started is not in it yet) the container's own
    count over its program (``pod_cpu_s`` over ``pod_span``, epoch seconds by the node's clock, as cAdvisor's
    stamps), the part of it inside the window taken as spread evenly over the program."""
    seconds = end.node_time - start.node_time
    if seconds <= 0:
        return None
    source = "kubelet stats summary"
    if start.pod_ns is not None and end.pod_ns is not None:
        pod_s = max(0, end.pod_ns - start.pod_ns) / 1e9
    elif pod_cpu_s is not None and pod_span is not None and pod_span[1] > pod_span[0]:
        inside = min(end.node_time, pod_span[1]) - max(start.node_time, pod_span[0])
        share = max(0.0, inside) / (pod_span[1] - pod_span[0])
        pod_s = max(0.0, pod_cpu_s) * min(1.0, share)
        source = (
            f"kubelet stats summary (node) and the container's cgroup (pod; {100 * min(1.0, share):.0f}% of "
            "its program inside the window)"
        )
    else:
        return None
    outside = max(0.0, (end.node_ns - start.node_ns) / 1e9 - pod_s)
    split: dict[str, float] = {}
    for name, key in (("kubelet", "kubelet"), ("runtime", "containerd")):
        if name in start.system and name in end.system:
            split[key] = max(0, end.system[name] - start.system[name]) / 1e9
    return NodeNoise(
        seconds=seconds,
        outside_cpu_s=outside,
        kernel_cpu_s=0.0,
        pod_cpu_s=pod_s,
        steal_pct=float("nan"),
        loadavg=float("nan"),
        cpus=1,
        source=source,
        split_s=split,
        nearmetal_cpu_s=end.self_cpu_s - start.self_cpu_s,
    )


def read_summary(api_client: Any, node: str, pod_uid: str) -> SummaryReading | None:
    """One stats summary of ``node`` through the API server's node proxy, or None when it cannot be read.
    The raw body (``_preload_content=False``): the client's own decoding of a proxied answer, typed ``str``,
    gives the Python repr of the JSON, not JSON (and ``ApiClient.call_api`` changed its signature in client
    v31)."""
    from kubernetes import client

    try:
        response: Any = client.CoreV1Api(api_client).connect_get_node_proxy_with_path(
            node, "stats/summary", _preload_content=False, _request_timeout=10
        )
        return parse_summary(json.loads(response.data), pod_uid)
    except Exception:
        return None
