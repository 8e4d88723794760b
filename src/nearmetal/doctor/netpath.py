"""Network path or CPU limit? (seed 000: MPI in user-space Kubernetes ran ~50% slower; slirp4netns was blamed,
the pod's CPU quota was the cause.)

Two parts:
- a host check, ``user-mode-net``: does this process's default route leave through a TAP device (the
  mark of slirp4netns/pasta/VPNKit), i.e. is every byte carried by a user-space TCP/IP stack?
- a run-level explanation, :func:`attribute`: for each variant that loses against the baseline, weigh the
  two kinds of evidence the run recorded — CFS throttling (``throttled_pct`` from the cpu-quota layer) and
  the round trip the path adds (``rtt_p50_us`` of tcp-rr, ``latency_small_p50_us`` of MPI, measured on the
  path alone) — and, where a variant stacks both, split its loss into the path's share (the same path
  without the quota) and the rest (what the quota adds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nearmetal.doctor.base import Finding, Severity, check
from nearmetal.host.hostnet import ip_json

LESSON = (
    "seed 000: MPI benchmarks and LAMMPS in user-space Kubernetes ran ~50% slower; slirp4netns's TAP device "
    "was blamed, but ping-pong latency was near bare metal and one-node runs were just as slow — the pod's "
    "CPU limit (cpu.max) was throttling every collective. Measure each suspect separately"
)
# evidence metrics: round trip (lower is better) measured by the network workloads
RTT_METRICS = ("rtt_p50_us", "latency_small_p50_us", "latency_small_us")
THROTTLED_ENOUGH_PCT = 5.0


def default_route_device(routes: list[dict[str, Any]], links: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The link the default route leaves through (with its gateway), from ``ip -j route`` and
    ``ip -j -d link`` output."""
    default = next((r for r in routes if r.get("dst") == "default"), None)
    if not default:
        return None
    link = next((row for row in links if row.get("ifname") == default.get("dev")), None)
    if link is None:
        return None
    return {**link, "gateway": default.get("gateway", "")}


@check(
    "user-mode-net",
    inspects="ip -j route show default; ip -j -d link show (is the default route's device a TAP, as made by "
    "slirp4netns/pasta?)",
    explains=("network",),
)
def check_user_mode_net(
    routes: list[dict[str, Any]] | None = None, links: list[dict[str, Any]] | None = None
) -> list[Finding]:
    routes = ip_json("route", "show", "default") if routes is None else routes
    links = ip_json("-d", "link", "show") if links is None else links
    device = default_route_device(routes, links)
    if device is None:
        return [Finding("user-mode-net", "info", "no default route: nothing to say about the network path")]
    info = device.get("linkinfo") or {}
    kind = info.get("info_kind", "")
    tap = kind == "tun" and (info.get("info_data") or {}).get("type") == "tap"
    evidence = (
        f"default route via {device.get('gateway') or '-'} dev {device.get('ifname')} ({kind or 'device'})"
    )
    if not tap:
        return [
            Finding(
                "user-mode-net",
                "ok",
                "traffic leaves through a kernel network device",
                evidence,
                lesson=LESSON,
            )
        ]
    return [
        Finding(
            "user-mode-net",
            "warning",
            "traffic leaves through a TAP device: a user-mode TCP/IP stack (slirp4netns, pasta) carries every "
            "byte, with lower bandwidth and longer round trips than the kernel's path",
            evidence,
            fix="before blaming it, measure it: `nearmetal study net-paths` (path alone vs CPU quota); then use "
            "host networking, bypass4netns, or an RDMA/EFA path that bypasses the stack for MPI",
            lesson=LESSON,
        )
    ]


@dataclass(frozen=True)
class CellEvidence:
    """What a run recorded about one cell, as the attribution needs it."""

    workload: str
    point: str
    variant: str
    layers: tuple[str, ...]
    metric: str
    loss: float | None  # fraction; positive = the variant costs
    significant: bool | None
    throttled_pct: float | None
    rtt_us: float | None  # the cell's own round-trip evidence (tcp-rr p50 / MPI small-message latency)


def network_layers() -> tuple[str, ...]:
    """The network path layers on one host (the ``network`` family of the layer registry)."""
    from nearmetal.layers import layer_kinds

    return layer_kinds("network")


def user_mode_layers() -> tuple[str, ...]:
    """The network layers that are a user-mode TCP/IP stack (slirp4netns, pasta …)."""
    from nearmetal.layers import LAYERS
    from nearmetal.layers.usernet import UserNetLayer

    return tuple(k for k in network_layers() if issubclass(LAYERS[k], UserNetLayer))


def attribute(cells: list[CellEvidence], baseline_rtt: dict[str, float] | None = None) -> list[Finding]:
    """One finding per losing cell: network path, CPU limit, or both (with the split)."""
    findings = []
    network, user_mode_stacks = network_layers(), user_mode_layers()
    by_key = {(c.workload, c.point, c.layers): c for c in cells}
    for cell in cells:
        if cell.loss is None or not cell.layers:
            continue
        net = tuple(k for k in cell.layers if k in network)
        quota = "cpu-quota" in cell.layers
        throttled = cell.throttled_pct or 0.0
        label = f"{cell.workload}{f' ({cell.point})' if cell.point else ''}/{cell.variant}"
        loss_txt = f"{cell.loss * 100:+.0f}% {cell.metric}"
        if cell.significant is False or cell.loss <= 0:
            findings.append(
                Finding(
                    "net-vs-cpu", "ok", f"{label}: {loss_txt}, no significant loss to explain", lesson=LESSON
                )
            )
            continue
        evidence = []
        if quota:
            evidence.append(f"throttled in {throttled:.0f}% of CFS periods")
        base_rtt = (baseline_rtt or {}).get(cell.workload)
        if cell.rtt_us is not None and base_rtt:
            evidence.append(
                f"round trip {base_rtt:.1f} → {cell.rtt_us:.1f} µs ({cell.rtt_us - base_rtt:+.1f} µs)"
            )
        path_alone = by_key.get((cell.workload, cell.point, net)) if net and quota else None
        if quota and throttled >= THROTTLED_ENOUGH_PCT and net and path_alone and path_alone.loss is not None:
            share = max(0.0, path_alone.loss)
            title = (
                f"{label}: {loss_txt}; the path alone ({path_alone.variant}) costs {share * 100:+.0f}%, the "
                f"CPU limit adds the other {max(0.0, cell.loss - share) * 100:+.0f} points"
            )
            cause = "both"
        elif quota and net and path_alone and path_alone.loss is not None:
            share = max(0.0, path_alone.loss)
            title = (
                f"{label}: {loss_txt}; the path alone ({path_alone.variant}) costs {share * 100:+.0f}%, and the "
                f"other {max(0.0, cell.loss - share) * 100:+.0f} points are not throttling (the limit did not "
                "bind): the ranks were short of CPU for another reason (contention)"
            )
            cause = "contention"
        elif quota and throttled >= THROTTLED_ENOUGH_PCT:
            title = f"{label}: {loss_txt} comes from the CPU limit, not the network"
            cause = "cpu"
        elif net:
            stack = " and ".join(net)
            user_mode = any(k in user_mode_stacks for k in net)
            title = f"{label}: {loss_txt} comes from the network path ({stack}" + (
                ", a user-mode TCP/IP stack)" if user_mode else ")"
            )
            cause = "network"
        elif quota:
            # a limit that never bit cannot explain the loss: the CPUs were short for another reason
            findings.append(
                Finding(
                    "net-vs-cpu",
                    "info",
                    f"{label}: {loss_txt}, but the CPU limit did not bind (throttled in {throttled:.1f}% of "
                    "periods) and the path is the host's: look for CPU contention (other processes, CPU use "
                    "below what the ranks ask for)",
                    "; ".join(evidence),
                    "compare CPU use with the number of busy ranks; rerun on a quieter host",
                    LESSON,
                )
            )
            continue
        else:
            continue
        fix = {
            "cpu": "remove or raise the CPU limit (Kubernetes: drop resources.limits.cpu; map pods 1:1 with "
            "affinity instead)",
            "network": "use the host's network or an RDMA/EFA path that bypasses the stack; raise the MTU",
            "both": "remove the CPU limit first (the larger share); then look at the path",
            "contention": "compare CPU use with the number of busy ranks; rerun on a quieter host",
        }[cause]
        severity: Severity = "warning" if cell.loss < 0.25 else "critical"
        findings.append(Finding("net-vs-cpu", severity, title, "; ".join(evidence), fix, LESSON))
    return findings


def evidence_from_results(
    results: Any, metric: str | None = None
) -> tuple[list[CellEvidence], dict[str, float]]:
    """CellEvidence for every cell of a stored run (``nearmetal.api.Results``), and the baseline's round trip
    per workload."""
    analysis = results.analysis
    layers_by_cell: dict[str, tuple[str, ...]] = {}
    for trial in results.trials:
        layers_by_cell.setdefault(
            trial.cell_id,
            tuple(layer.get("layer", "") for layer in (trial.layers or []) if isinstance(layer, dict)),
        )
    out: list[CellEvidence] = []
    baseline_rtt: dict[str, float] = {}
    for cell in results.cells:
        name = metric or cell.primary_metric
        comp = analysis.comparison(cell.cell_id, name)
        throttled = analysis.metric(cell.cell_id, "throttled_pct")
        rtt = next((m for r in RTT_METRICS if (m := analysis.metric(cell.cell_id, r))), None)
        if cell.is_baseline and rtt:
            baseline_rtt[cell.workload] = rtt.summary.mean
        out.append(
            CellEvidence(
                cell.workload,
                cell.point_label,
                cell.variant,
                layers_by_cell.get(cell.cell_id, ()),
                name,
                comp.loss.loss if comp else None,
                comp.loss.significant if comp else None,
                throttled.summary.mean if throttled else None,
                rtt.summary.mean if rtt else None,
            )
        )
    return out, baseline_rtt


# what a job feels, stalls included: CFS throttling stops both ranks once per period and moves the mean of
# the iterations while their median (the primary metric, the path's latency) stays where it was
JOB_METRICS = ("latency_small_us",)


def attribute_run(results: Any) -> list[Finding]:
    """:func:`attribute` on every cell's primary metric, then on the MPI mean per iteration (the seed's
    "MPI ran ~50% slower" is a job's time: where the primary metric is the median, a CPU limit shows here)."""
    cells, baseline_rtt = evidence_from_results(results)
    findings = attribute(cells, baseline_rtt)
    primary = {(c.workload, c.point, c.variant): c.metric for c in cells}
    for metric in JOB_METRICS:
        extra, _ = evidence_from_results(results, metric)
        extra = [
            c for c in extra if c.loss is not None and primary.get((c.workload, c.point, c.variant)) != metric
        ]
        findings += attribute(extra, baseline_rtt)
    return findings
