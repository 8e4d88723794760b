"""iperf3 (Debian ``iperf3``): TCP bandwidth between a server and a client process.

The server (role ``server``, ``iperf3 -s -1``: one test, then it exits) starts first; the client (the
measured ``main``) connects to ``endpoints["server_host"]`` — loopback on bare metal, the other namespace's
address or a user-mode stack's gateway under the network layers. The client's ``-J`` report is parsed:
bits per second as the receiver saw them (what arrived, not what was queued), retransmits, and the CPU use
of each end (iperf3's own ``cpu_utilization_percent``, so a CPU-bound path shows as such).

JSON shape across versions: 3.0/3.1 have ``end.sum_sent``/``sum_received`` without the ``sender`` flag;
3.7+ add ``sender``; 3.16+ add per-stream RTT fields and ``sum_sent_bidir_reverse`` for ``--bidir``. An
``error`` key (with an empty ``end``) is what a failed test prints.

``nearmetal parse iperf3`` also reads reports made elsewhere: UDP tests (``-u``; jitter, loss and what
arrived, see ``parse_iperf3_udp``) and a server's own ``-J`` report (``start.accepted_connection``), whose
``host`` CPU figures are the server's (``server_cpu_pct``) and ``remote`` ones the client's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field

from nearmetal.host import hostcmd
from nearmetal.host.ports import free_tcp_port
from nearmetal.metrics import Metric
from nearmetal.workloads.base import (
    ParseError,
    ProcessSpec,
    Requirement,
    TrialOutput,
    Workload,
    WorkloadContext,
    WorkloadParams,
    register_workload,
)


class Iperf3Params(WorkloadParams):
    seconds: float = Field(3.0, gt=0, le=3600, description="test length (-t)")
    parallel: int = Field(1, ge=1, le=128, description="parallel TCP streams (-P)")
    reverse: bool = Field(False, description="server sends, client receives (-R)")
    length: str | None = Field(
        None, pattern=r"^[0-9]+[KMG]?$", description="buffer size per write (-l), e.g. 128K"
    )
    omit: float = Field(0.0, ge=0, le=60, description="seconds of slow start to leave out (-O)")
    port: int | None = Field(None, ge=1024, le=65535, description="server port (default: a free one)")


@register_workload
class Iperf3Workload(Workload[Iperf3Params]):
    kind = "iperf3"
    Params = Iperf3Params
    description = "iperf3 TCP bandwidth between a server and a client process"
    primary_metric = "throughput_Gbps"

    def requires(self, params: Iperf3Params) -> list[Requirement]:
        return [Requirement("iperf3", "iperf3", purpose="TCP bandwidth")]

    def processes(self, params: Iperf3Params, ctx: WorkloadContext) -> list[ProcessSpec]:
        # a layer that forwards a port to the server (a published port) names it
        port = params.port or ctx.endpoints.get("server_port") or free_tcp_port()
        host = str(ctx.endpoints.get("server_host", "127.0.0.1"))
        server = ProcessSpec(
            argv=["iperf3", "-s", "-1", "-p", str(port), "--forceflush"],
            role="server",
            name="iperf3-server",
            ready_pattern=r"Server listening on",
            ready_timeout_s=15,
        )
        argv = [
            "iperf3",
            "-c",
            host,
            "-p",
            str(port),
            "-t",
            f"{params.seconds:g}",
            "-P",
            str(params.parallel),
        ]
        argv += ["-J", "--connect-timeout", "10000"]
        if params.reverse:
            argv.append("-R")
        if params.length:
            argv += ["-l", params.length]
        if params.omit:
            argv += ["-O", f"{params.omit:g}"]
        return [server, ProcessSpec(argv=argv, name="iperf3-client")]

    def parse(self, output: TrialOutput, params: Iperf3Params | None = None) -> list[Metric]:
        return parse_iperf3_json(output.stdout)

    def parse_file(self, path: Path) -> list[Metric]:
        return parse_iperf3_json(path.read_text(errors="replace"), allow_interrupted=True)

    def tool_versions(self) -> dict[str, str]:
        if not shutil.which("iperf3"):
            return {}
        found = hostcmd.version(["iperf3", "--version"], r"iperf\s+(\S+)")
        return {"iperf3": found} if found else {}


def _load(text: str) -> dict[str, Any]:
    start = text.find("{")
    if start < 0:
        raise ParseError("no JSON in the iperf3 output (was it run with -J?)")
    try:
        doc, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ParseError(f"iperf3 JSON is cut short or malformed: {exc}") from None
    if not isinstance(doc, dict):
        raise ParseError("iperf3 JSON is not an object")
    return doc


def _is_server_report(doc: dict[str, Any]) -> bool:
    """A server's ``-J`` report names the client it accepted; a client's names the server it connected to."""
    start = doc.get("start") or {}
    return "accepted_connection" in start and "connecting_to" not in start


def _is_udp(doc: dict[str, Any]) -> bool:
    test = (doc.get("start") or {}).get("test_start") or {}
    if str(test.get("protocol", "")).upper() == "UDP":
        return True
    end_sum = (doc.get("end") or {}).get("sum")
    return isinstance(end_sum, dict) and "jitter_ms" in end_sum


def _cpu_metrics(doc: dict[str, Any]) -> list[Metric]:
    """iperf3's ``host_*`` figures are the reporting end's, ``remote_*`` the other end's. In a server's
    report the remote (client) figures are all 0 when the server never received them (iperf3 3.7): then no
    client CPU is claimed."""
    cpu = (doc.get("end") or {}).get("cpu_utilization_percent") or {}
    server = _is_server_report(doc)
    own, other = ("server_cpu_pct", "client_cpu_pct") if server else ("client_cpu_pct", "server_cpu_pct")
    out = []
    if "host_total" in cpu:
        out.append(Metric(own, float(cpu["host_total"]), "%", "lower"))
    remote = [float(cpu.get(k) or 0) for k in ("remote_total", "remote_user", "remote_system")]
    if "remote_total" in cpu and not (server and not any(remote)):
        out.append(Metric(other, float(cpu["remote_total"]), "%", "lower"))
    return out


def _interval_sums(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each reporting interval's ``sum`` once: an iperf3 3.7 server stopped by its client prints the last
    interval twice."""
    sums: dict[tuple[Any, Any], dict[str, Any]] = {}
    for interval in doc.get("intervals") or []:
        s = interval.get("sum")
        if isinstance(s, dict):
            sums.setdefault((s.get("start"), s.get("end")), s)
    return list(sums.values())


def _interval_series(doc: dict[str, Any]) -> list[Metric]:
    intervals = [s["bits_per_second"] / 1e9 for s in _interval_sums(doc) if not s.get("omitted")]
    return [Metric.series("interval_Gbps", intervals, "Gbit/s", "higher")] if intervals else []


def parse_iperf3_udp(doc: dict[str, Any]) -> list[Metric]:
    """UDP: what arrived and how (``throughput_Gbps``, ``udp_jitter_ms``, ``udp_lost_pct``,
    ``udp_lost_packets``, ``udp_packets``), from the receiver's figures wherever the report has them.

    - ``end.sum_received`` (newer clients) is the receiver's own summary;
    - ``end.sum`` of the sender's report (a client's; a server's with ``-R``) carries the receiver's jitter
      and loss but its own sent rate (``sent_Gbps``): the received rate is the sent rate × (1 −
      lost/packets), all datagrams being one size;
    - the receiver's report (a server's; a client's with ``-R``): its ``end.sum`` rate, or its intervals'
      bytes over their time when the summary says 0 bytes (iperf3 3.7 servers do).
    """
    end = doc.get("end") or {}
    summary = end.get("sum_received") or end.get("sum")
    if not isinstance(summary, dict) or "packets" not in summary:
        raise ParseError("iperf3 UDP JSON has no end.sum (the test did not finish)")
    # the end that wrote the report received the datagrams: a server, or a client with -R
    reverse = bool(((doc.get("start") or {}).get("test_start") or {}).get("reverse"))
    receiver = _is_server_report(doc) != reverse
    packets = float(summary.get("packets") or 0)
    lost = float(summary.get("lost_packets") or 0)
    metrics = []
    received_bps: float | None = None
    if "sum_received" in end or receiver:
        received_bps = float(summary.get("bits_per_second") or 0)
        seconds = float(summary.get("seconds") or 0)
        if receiver and not received_bps:
            sums = [x for x in _interval_sums(doc) if not x.get("omitted")]
            if sums:
                total = float(sums[-1].get("end") or 0) - float(sums[0].get("start") or 0)
                if total > 0:
                    received_bps = sum(float(x.get("bytes") or 0) for x in sums) * 8 / total
                    seconds = total
    else:
        sent = float(summary.get("bits_per_second") or 0)
        seconds = float(summary.get("seconds") or 0)
        metrics.append(Metric("sent_Gbps", sent / 1e9, "Gbit/s", "higher"))
        if packets > 0:
            received_bps = sent * (packets - lost) / packets
    sent_sum = end.get("sum_sent")
    if not metrics and isinstance(sent_sum, dict) and float(sent_sum.get("bits_per_second") or 0) > 0:
        metrics.append(Metric("sent_Gbps", float(sent_sum["bits_per_second"]) / 1e9, "Gbit/s", "higher"))
    if received_bps is not None:
        metrics.insert(0, Metric("throughput_Gbps", received_bps / 1e9, "Gbit/s", "higher"))
    metrics += [
        Metric("udp_jitter_ms", float(summary.get("jitter_ms") or 0), "ms", "lower"),
        Metric("udp_lost_pct", 100.0 * lost / packets if packets else 0.0, "%", "lower"),
        Metric("udp_lost_packets", lost, "packets", "lower"),
        Metric("udp_packets", packets, "packets", "higher"),
    ]
    if seconds > 0:
        metrics.append(Metric("test_s", seconds, "s", "higher"))
    return metrics + _cpu_metrics(doc) + _interval_series(doc)


def _has_summary(doc: dict[str, Any]) -> bool:
    end = doc.get("end") or {}
    return any(isinstance(end.get(k), dict) and end[k] for k in ("sum", "sum_sent", "sum_received"))


def parse_iperf3_json(text: str, allow_interrupted: bool = False) -> list[Metric]:
    """Metrics from an iperf3 ``-J`` report (TCP or UDP, client's or server's), any version from 3.0 on.

    A report with an ``error`` is refused, except with ``allow_interrupted`` (files made elsewhere) when the
    error says the other end terminated and the report still has its end summary: an open-ended test
    (``-t 0``) stopped by its user ends that way, and its figures up to then are the measurement."""
    doc = _load(text)
    error = str(doc.get("error") or "")
    if error and not (allow_interrupted and "terminated" in error and _has_summary(doc)):
        raise ParseError(f"iperf3 reported an error: {error}")
    if _is_udp(doc):
        return parse_iperf3_udp(doc)
    end = doc.get("end") or {}
    sent, received = end.get("sum_sent"), end.get("sum_received")
    if not sent or not received:
        raise ParseError("iperf3 JSON has no end.sum_sent/sum_received (the test did not finish)")
    seconds = float(received.get("seconds") or (received["end"] - received["start"]))
    metrics = [
        Metric("throughput_Gbps", received["bits_per_second"] / 1e9, "Gbit/s", "higher"),
        Metric("sent_Gbps", sent["bits_per_second"] / 1e9, "Gbit/s", "higher"),
        Metric("bytes_received", float(received["bytes"]), "B", "higher"),
        Metric("test_s", seconds, "s", "higher"),
    ]
    if "retransmits" in sent:
        metrics.append(Metric("retransmits", float(sent["retransmits"]), "segments", "lower"))
    metrics += _cpu_metrics(doc)
    metrics += _interval_series(doc)
    rtts = [
        s["sender"]["mean_rtt"]
        for s in end.get("streams") or []
        if isinstance(s.get("sender"), dict) and "mean_rtt" in s["sender"]
    ]
    if rtts:
        metrics.append(Metric("tcp_mean_rtt_us", sum(rtts) / len(rtts), "µs", "lower"))
    return metrics
