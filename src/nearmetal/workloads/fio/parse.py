"""fio's JSON and json+ output, from 2.x to 3.x, into bandwidth, IOPS, latency and CPU metrics.

Latencies are in µs under ``clat``/``lat`` (2.x) or in ns under ``clat_ns``/``lat_ns`` (3.x), ``io_bytes`` in
KiB (2.x) or bytes (3.x, with ``io_kbytes``), ``bw`` always in KiB/s, percentile keys are strings
(``"99.900000"``), keys can repeat (fio 3.1 repeated ``"0.00"`` in an empty side's percentiles; any fio
repeats ``filename`` in ``job options``); one entry per job or one per group (``group_reporting``),
``read``/``write``/``trim`` sides or ``mixed`` (``unified_rw_reporting``), ``client_stats`` (client/server
mode), and json+ latency histograms (``bins``), which make exact percentiles when several jobs are merged.
Groups run one after another (``stonewall``, ``new_group``) are reported per group, ``g<groupid>_…`` (see
``parse_fio_json``)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from nearmetal.metrics import Metric
from nearmetal.workloads.base import ParseError

# percentiles the metrics carry: (fio's key as a number, metric name suffix)
PERCENTILES: list[tuple[float, str]] = [(50.0, "p50"), (95.0, "p95"), (99.0, "p99"), (99.9, "p99_9")]
SIDES = ("read", "write", "trim", "mixed")


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """fio sometimes repeats a key in one object (``"0.00"`` in empty percentiles, ``filename`` in job
    options); the first value is the one fio meant for that position, later ones are noise."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def load_fio_json(text: str) -> dict[str, Any]:
    """The JSON document in fio's output, skipping anything fio (or a console) printed around it."""
    text = text.replace("\r\n", "\n")
    decoder = json.JSONDecoder(object_pairs_hook=_first_wins)
    for match in re.finditer(r"^\s*\{", text, flags=re.MULTILINE):
        start = text.index("{", match.start())
        try:
            doc, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and ("jobs" in doc or "client_stats" in doc):
            return doc
    if "{" not in text:
        raise ParseError("no JSON in fio's output (run fio with --output-format=json or json+)")
    raise ParseError("fio's output has no complete JSON document with 'jobs' (was the run cut short?)")


@dataclass
class SideStats:
    """One direction (read, write, …) summed over the job entries of a run."""

    io_bytes: float = 0.0
    bw_kibps: float = 0.0
    iops: float = 0.0
    ios: float = 0.0
    # (mean µs, weight) per job entry, and percentile µs per job entry
    clat_means: list[tuple[float, float]] = field(default_factory=list)
    lat_means: list[tuple[float, float]] = field(default_factory=list)
    percentiles: list[tuple[dict[float, float], float]] = field(default_factory=list)
    bins_us: dict[float, float] = field(default_factory=dict)
    bins_complete: bool = True

    @property
    def active(self) -> bool:
        return self.io_bytes > 0 or self.iops > 0


def _latency_block(side: dict[str, Any]) -> tuple[dict[str, Any] | None, float]:
    """The completion-latency block and its scale to µs: ``clat_ns`` (3.x) or ``clat`` in µs (2.x);
    total latency (``lat_ns``/``lat``) when fio reported no completion latency."""
    for key, scale in (("clat_ns", 1e-3), ("clat", 1.0), ("clat_us", 1.0), ("lat_ns", 1e-3), ("lat", 1.0)):
        block = side.get(key)
        if isinstance(block, dict) and block:
            return block, scale
    return None, 1.0


def _io_bytes(side: dict[str, Any], version: tuple[int, ...]) -> float:
    if "io_kbytes" in side:  # fio 3.x: io_bytes is bytes and io_kbytes KiB
        return float(side.get("io_bytes", float(side["io_kbytes"]) * 1024))
    raw = float(side.get("io_bytes", 0))
    # fio 2.x wrote io_bytes in KiB
    return raw * 1024 if version and version[0] < 3 else raw


def _fio_version(doc: dict[str, Any]) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)", str(doc.get("fio version", "")))
    return (int(match.group(1)), int(match.group(2))) if match else ()


def _accumulate(stats: SideStats, side: dict[str, Any], version: tuple[int, ...]) -> None:
    io = _io_bytes(side, version)
    if io <= 0 and float(side.get("iops", 0) or 0) <= 0:
        return
    stats.io_bytes += io
    stats.bw_kibps += float(side.get("bw", 0) or 0)
    stats.iops += float(side.get("iops", 0) or 0)
    block, scale = _latency_block(side)
    ios = float(side.get("total_ios", 0) or 0) or (float(block.get("N", 0)) if block else 0.0) or 1.0
    stats.ios += ios
    if block is not None:
        if "mean" in block:
            stats.clat_means.append((float(block["mean"]) * scale, ios))
        pct = block.get("percentile")
        if isinstance(pct, dict) and pct:
            stats.percentiles.append(
                ({float(k): float(v) * scale for k, v in pct.items() if _is_number(k)}, ios)
            )
        bins = block.get("bins")
        if isinstance(bins, dict) and bins:
            for k, v in bins.items():
                if _is_number(k):
                    stats.bins_us[float(k) * scale] = stats.bins_us.get(float(k) * scale, 0.0) + float(v)
        else:
            stats.bins_complete = False
    for key, scale in (("lat_ns", 1e-3), ("lat", 1.0)):
        lat = side.get(key)
        if isinstance(lat, dict) and "mean" in lat:
            stats.lat_means.append((float(lat["mean"]) * scale, ios))
            break


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _weighted(pairs: list[tuple[float, float]]) -> float | None:
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def _histogram_percentile(bins: dict[float, float], pct: float) -> float:
    """The smallest latency at or below which ``pct`` % of I/Os completed (fio's own definition)."""
    total = sum(bins.values())
    target = math.ceil(total * pct / 100.0 - 1e-9)
    running = 0.0
    for latency in sorted(bins):
        running += bins[latency]
        if running >= target:
            return latency
    return max(bins)


def _side_percentiles(stats: SideStats) -> dict[str, float]:
    """p50…p99.9 in µs. One entry: fio's own figures. Several (jobs without group_reporting): exact from the
    merged json+ histograms when every entry has them, else the I/O-weighted mean of each entry's figure."""
    out: dict[str, float] = {}
    if len(stats.percentiles) == 1 or (stats.percentiles and not (stats.bins_complete and stats.bins_us)):
        for pct, suffix in PERCENTILES:
            pairs = [(table[pct], w) for table, w in stats.percentiles if pct in table]
            value = _weighted(pairs)
            if value is not None:
                out[suffix] = value
        return out
    if stats.bins_us:
        for pct, suffix in PERCENTILES:
            out[suffix] = _histogram_percentile(stats.bins_us, pct)
    return out


def _side_metrics(stats: SideStats, prefix: str) -> list[Metric]:
    metrics = [
        Metric(f"{prefix}bw_MiBps", stats.bw_kibps / 1024.0, "MiB/s", "higher", "fio"),
        Metric(f"{prefix}iops", stats.iops, "IO/s", "higher", "fio"),
        Metric(f"{prefix}io_MiB", stats.io_bytes / 1024.0**2, "MiB", "higher", "fio"),
    ]
    mean = _weighted(stats.clat_means)
    if mean is not None:
        metrics.append(Metric(f"{prefix}clat_mean_us", mean, "µs", "lower", "fio"))
    lat = _weighted(stats.lat_means)
    if lat is not None:
        metrics.append(Metric(f"{prefix}lat_mean_us", lat, "µs", "lower", "fio"))
    for suffix, value in _side_percentiles(stats).items():
        metrics.append(Metric(f"{prefix}clat_{suffix}_us", value, "µs", "lower", "fio"))
    return metrics


def _combined(active: dict[str, SideStats]) -> SideStats:
    total = SideStats()
    for stats in active.values():
        total.io_bytes += stats.io_bytes
        total.bw_kibps += stats.bw_kibps
        total.iops += stats.iops
        total.ios += stats.ios
        total.clat_means += stats.clat_means
        total.lat_means += stats.lat_means
        total.percentiles += stats.percentiles
        total.bins_complete = total.bins_complete and stats.bins_complete
        for k, v in stats.bins_us.items():
            total.bins_us[k] = total.bins_us.get(k, 0.0) + v
    if len(active) > 1:
        # a percentile over reads and writes together is not any mean of their two percentiles: it comes
        # from their merged json+ histograms, or there is none (read_… and write_… percentiles remain)
        total.percentiles = []
        if not total.bins_complete:
            total.bins_us = {}
    return total


def _group_metrics(jobs: list[dict[str, Any]], version: tuple[int, ...], prefix: str) -> list[Metric]:
    """The metrics of one group's job entries (``prefix`` names the group when there are several)."""
    sides = {name: SideStats() for name in SIDES}
    usr, sys_cpu, ctx_switches = [], [], 0.0
    for job in jobs:
        for name in SIDES:
            side = job.get(name)
            if isinstance(side, dict):
                _accumulate(sides[name], side, version)
        if "usr_cpu" in job:
            usr.append(float(job["usr_cpu"]))
            sys_cpu.append(float(job.get("sys_cpu", 0)))
        ctx_switches += float(job.get("ctx", 0) or 0)
    active = {name: s for name, s in sides.items() if s.active}
    if not active:
        return []
    metrics = _side_metrics(_combined(active), prefix)
    if len(active) > 1:
        for name, stats in active.items():
            metrics += _side_metrics(stats, f"{prefix}{name}_")
    if usr:
        # per client, as fio reports it (a group_reporting entry averages its jobs)
        metrics.append(Metric(f"{prefix}fio_usr_cpu_pct", sum(usr) / len(usr), "%", "lower", "fio"))
        metrics.append(Metric(f"{prefix}fio_sys_cpu_pct", sum(sys_cpu) / len(sys_cpu), "%", "lower", "fio"))
        metrics.append(Metric(f"{prefix}fio_ctx_switches", ctx_switches, "switches", "lower", "fio"))
    return metrics


def _groupid(job: dict[str, Any]) -> int:
    try:
        return int(job.get("groupid", 0))
    except (TypeError, ValueError):
        return 0


def parse_fio_json(text: str) -> list[Metric]:
    """fio's JSON or json+ output (fio 2.x–3.x) → bandwidth, IOPS, latency and CPU metrics.

    One group (every job of nearmetal's own runs): the unprefixed metrics (``bw_MiBps``, ``iops``,
    ``clat_p99_us``…) cover every direction that did I/O; when reads and writes both did, ``read_…`` and
    ``write_…`` metrics follow for each side, and the unprefixed percentiles come from the merged json+
    histograms of both sides, or are left out (json without ``bins``): two directions' percentiles are not
    averaged into one.

    Several groups (``stonewall``/``new_group`` job files: groups run one after another, each its own
    measurement): every metric of a group is named ``g<groupid>_…`` (``g1_bw_MiBps``,
    ``g2_read_clat_p99_us``), fio's own group numbers, and nothing is summed or averaged across groups."""
    doc = load_fio_json(text)
    version = _fio_version(doc)
    jobs = doc.get("jobs") or []
    if not jobs and doc.get("client_stats"):
        # client/server mode: the "All clients" entry sums the others when there are several
        clients = doc["client_stats"]
        jobs = [c for c in clients if c.get("jobname") == "All clients"] or clients
    if not jobs:
        raise ParseError("fio's JSON has no jobs (did every job fail to start?)")
    errors = [f"{j.get('jobname', '?')}: error {j['error']}" for j in jobs if j.get("error")]
    groups: dict[int, list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(_groupid(job), []).append(job)
    if len(groups) == 1:
        metrics = _group_metrics(jobs, version, "")
    else:
        metrics = []
        for gid, group_jobs in sorted(groups.items()):
            metrics += _group_metrics(group_jobs, version, f"g{gid}_")
    if not metrics:
        detail = f" ({'; '.join(errors)})" if errors else ""
        raise ParseError(f"fio did no I/O in any direction{detail}")
    direct = _option(doc, jobs, "direct")
    if direct is not None:
        metrics.append(
            Metric("direct_io", 1.0 if direct not in ("0", "false") else 0.0, "flag", "higher", "fio")
        )
    if errors:
        raise ParseError(f"fio reported errors: {'; '.join(errors)}")
    return metrics


def _option(doc: dict[str, Any], jobs: list[dict[str, Any]], name: str) -> str | None:
    for job in jobs:
        value = (job.get("job options") or {}).get(name)
        if value is not None:
            return str(value).strip().lower()
    value = (doc.get("global options") or {}).get(name)
    return None if value is None else str(value).strip().lower()
