"""A pod's own evidence of its CPU limit: the CFS quota the kubelet wrote and the throttling it caused.

Two places hold it, and the Kubernetes backend reads both:

- the **container's cgroup**, read by the container itself (``ENTRYPOINT_EVIDENCE``): the trial's entry point
  prints its cgroup's CPU files before and after the program (cgroup v1: ``cpu/cpu.cfs_quota_us``,
  ``cpu/cpu.cfs_period_us``, ``cpu/cpu.stat``, ``cpuacct/cpuacct.usage``, ``cpuacct/cpuacct.stat``; v2:
  ``cpu.max``, ``cpu.stat``) and the time in nanoseconds, between markers in its log. This works on any cluster
  (nearmetal need not run on the node) and its counters are final: the program has ended when they are read.
  The quota there is the one the kubelet asked the runtime for (CRI ``cpu_quota``/``cpu_period``).
- the **pod's cgroup** on the node (``kubepods[/burstable|/besteffort]/pod<uid>``, or the systemd driver's
  ``kubepods-…-pod<uid>.slice``), which the kubelet writes itself; readable when nearmetal runs on the node
  (a single-node cluster), while the pod exists.

The metrics have the names the local backend's ``cpu-quota`` layer and process telemetry use
(``throttled_pct``, ``cgroup_cpu_s``, ``cpu_util_pct`` …), so a Kubernetes run and a local run of the same
plan compare metric by metric.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from nearmetal.host.cgroups import parse_flat_keyed
from nearmetal.metrics import Metric

EVIDENCE_MARK = "=== nearmetal-evidence"
CGROUP_ROOT = Path("/sys/fs/cgroup")
END_MARK = "=== nearmetal-end"  # closes a section of the container's log (evidence or a written file)
# the files the entry point prints, relative to the container's /sys/fs/cgroup (v1 names, then v2 names)
CGROUP_FILES_TEXT = (
    "cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu/cpu.shares cpu/cpu.stat cpuacct/cpuacct.usage "
    "cpuacct/cpuacct.stat cpu.max cpu.weight cpu.stat"
)
CGROUP_FILES = tuple(CGROUP_FILES_TEXT.split())
# Shell that defines ``nm_evidence WHEN``: print the cgroup files and the time between markers. A constant
# script (tests/unit/test_hostile_plans.py follows it into the Pod's entry point).
EVIDENCE_SHELL = (
    "nm_evidence() { "
    f"for f in {CGROUP_FILES_TEXT}; do "
    '[ -r "/sys/fs/cgroup/$f" ] || continue; '
    f'echo "{EVIDENCE_MARK} $1 $f"; cat "/sys/fs/cgroup/$f"; echo "{END_MARK}"; '
    "done; "
    f'echo "{EVIDENCE_MARK} $1 time_ns"; date +%s%N; echo "{END_MARK}"; '
    "}; "
)
USER_HZ = 100  # cpuacct.stat's unit (clock ticks); 100 on every Linux architecture Kubernetes runs on


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    with contextlib.suppress(ValueError):
        return int(text.strip())
    return None


def quota_of(files: dict[str, str]) -> tuple[int | None, int | None, int | None]:
    """(cgroup version, quota µs or None for no limit, period µs) from a cgroup's CPU files."""
    if "cpu/cpu.cfs_quota_us" in files:
        quota = _int(files.get("cpu/cpu.cfs_quota_us"))
        return 1, quota if quota is not None and quota > 0 else None, _int(files.get("cpu/cpu.cfs_period_us"))
    if "cpu.max" in files:
        parts = files["cpu.max"].split()
        if len(parts) == 2:
            return 2, _int(parts[0]) if parts[0] != "max" else None, _int(parts[1])
    return None, None, None


def shares_of(files: dict[str, str]) -> dict[str, int]:
    """The cgroup's CPU weight: v1 ``cpu.shares`` (the kubelet writes requests × 1024, 2 for BestEffort),
    v2 ``cpu.weight`` (1–10000), as ``{"cpu_shares": …}`` / ``{"cpu_weight": …}`` ({} when unread)."""
    out: dict[str, int] = {}
    for key, name in (("cpu/cpu.shares", "cpu_shares"), ("cpu.weight", "cpu_weight")):
        value = _int(files.get(key))
        if value is not None:
            out[name] = value
    return out


def counters_of(files: dict[str, str]) -> dict[str, float]:
    """Throttling and CPU-time counters in one shape for both cgroup versions (seconds, periods)."""
    out: dict[str, float] = {}
    if "cpu/cpu.stat" in files:
        stat = parse_flat_keyed(files["cpu/cpu.stat"])
        out["nr_periods"] = stat.get("nr_periods", 0)
        out["nr_throttled"] = stat.get("nr_throttled", 0)
        out["throttled_s"] = stat.get("throttled_time", 0) / 1e9
        usage = _int(files.get("cpuacct/cpuacct.usage"))
        if usage is not None:
            out["usage_s"] = usage / 1e9
        acct = parse_flat_keyed(files.get("cpuacct/cpuacct.stat", ""))
        if "user" in acct and "system" in acct:
            out["user_s"] = acct["user"] / USER_HZ
            out["system_s"] = acct["system"] / USER_HZ
    elif "cpu.stat" in files:
        stat = parse_flat_keyed(files["cpu.stat"])
        out["nr_periods"] = stat.get("nr_periods", 0)
        out["nr_throttled"] = stat.get("nr_throttled", 0)
        out["throttled_s"] = stat.get("throttled_usec", 0) / 1e6
        for key, name in (("usage_usec", "usage_s"), ("user_usec", "user_s"), ("system_usec", "system_s")):
            if key in stat:
                out[name] = stat[key] / 1e6
    return out


def split_evidence(log: str, end_mark: str) -> tuple[str, dict[str, dict[str, str]]]:
    """The container's log → (the log without evidence sections, {when: {file: content}})."""
    kept: list[str] = []
    found: dict[str, dict[str, str]] = {}
    lines = log.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(EVIDENCE_MARK + " "):
            when, _, name = line[len(EVIDENCE_MARK) + 1 :].strip().partition(" ")
            chunk: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith(end_mark):
                chunk.append(lines[i])
                i += 1
            found.setdefault(when, {})[name] = "".join(chunk).strip()
        else:
            kept.append(line)
        i += 1
    return "".join(kept), found


def container_evidence(sections: dict[str, dict[str, str]]) -> dict[str, Any]:
    """What the container saw of its own cgroup: the quota, and the counters' change over the program."""
    before, after = sections.get("before", {}), sections.get("after", {})
    if not after:
        return {}
    version, quota, period = quota_of(after)
    record: dict[str, Any] = {"cgroup_version": version, "quota_us": quota, "period_us": period}
    record.update(shares_of(after))
    start, end = _int(before.get("time_ns")), _int(after.get("time_ns"))
    if start is not None and end is not None and end >= start:
        record["wall_s"] = (end - start) / 1e9
    c0, c1 = counters_of(before), counters_of(after)
    for key, value in c1.items():
        record[key] = value - c0.get(key, 0)
    return record


def program_span(sections: dict[str, dict[str, str]]) -> tuple[float, float] | None:
    """When the container's program started and ended (epoch seconds, the node's clock), from the entry
    point's ``time_ns`` before and after it; None when either is missing."""
    start = _int(sections.get("before", {}).get("time_ns"))
    end = _int(sections.get("after", {}).get("time_ns"))
    return (start / 1e9, end / 1e9) if start is not None and end is not None and end >= start else None


def evidence_metrics(record: dict[str, Any]) -> list[Metric]:
    """The container's evidence as metrics, named as the local backend names them."""
    metrics: list[Metric] = []
    if "nr_periods" in record:
        periods, throttled = record["nr_periods"], record["nr_throttled"]
        metrics += [
            Metric("cpu_periods", periods, "periods", "lower", source="cgroup"),
            Metric("throttled_periods", throttled, "periods", "lower", source="cgroup"),
            Metric(
                "throttled_pct",
                100.0 * throttled / periods if periods else 0.0,
                "%",
                "lower",
                source="cgroup",
            ),
            Metric("throttled_s", record["throttled_s"], "s", "lower", source="cgroup"),
        ]
    if "usage_s" in record:
        metrics.append(Metric("cgroup_cpu_s", record["usage_s"], "s", "lower", source="cgroup"))
        metrics.append(Metric("cpu_s", record["usage_s"], "s", "lower", source="cgroup"))
        if record.get("wall_s"):
            # 100% = one CPU busy for the whole program; two busy ranks give 200% (as process telemetry)
            util = 100.0 * record["usage_s"] / record["wall_s"]
            metrics.append(Metric("cpu_util_pct", util, "%", "higher", source="cgroup"))
    if "user_s" in record:
        metrics.append(Metric("cpu_user_s", record["user_s"], "s", "lower", source="cgroup"))
        metrics.append(Metric("cpu_sys_s", record["system_s"], "s", "lower", source="cgroup"))
    if record.get("wall_s") is not None:
        metrics.append(Metric("wall_s", record["wall_s"], "s", "lower", source="telemetry"))
    return metrics


def find_pod_cgroup(uid: str, root: Path = CGROUP_ROOT) -> tuple[int, Path] | None:
    """(cgroup version, directory holding the CPU files) of the pod with this uid on this node, or None."""
    v1 = root / "cpu"
    base, version = (v1, 1) if (v1 / "cpu.cfs_quota_us").exists() else (root, 2)
    names = {f"pod{uid}", f"pod{uid.replace('-', '_')}.slice"}
    for top in base.glob("kubepods*"):
        if not top.is_dir():
            continue
        for candidate in (top, *top.glob("*"), *top.glob("*/*")):
            if candidate.name in names or any(candidate.name.endswith("-" + n) for n in names):
                return version, candidate
    return None


def read_pod_cgroup(version: int, path: Path) -> dict[str, Any]:
    """The quota the kubelet wrote into the pod's cgroup, and its counters now."""
    files: dict[str, str] = {}
    names = (
        {"cpu/cpu.cfs_quota_us": "cpu.cfs_quota_us", "cpu/cpu.cfs_period_us": "cpu.cfs_period_us"}
        | {"cpu/cpu.stat": "cpu.stat", "cpu/cpu.shares": "cpu.shares"}
        if version == 1
        else {"cpu.max": "cpu.max", "cpu.stat": "cpu.stat", "cpu.weight": "cpu.weight"}
    )
    for key, name in names.items():
        with contextlib.suppress(OSError):
            files[key] = (path / name).read_text()
    if version == 1:
        usage = Path(str(path).replace(f"{CGROUP_ROOT}/cpu/", f"{CGROUP_ROOT}/cpuacct/", 1)) / "cpuacct.usage"
        with contextlib.suppress(OSError):
            files["cpuacct/cpuacct.usage"] = usage.read_text()
    _, quota, period = quota_of(files)
    return {
        "cgroup": str(path),
        "cgroup_version": version,
        "quota_us": quota,
        "period_us": period,
        **shares_of(files),
        **counters_of(files),
    }
