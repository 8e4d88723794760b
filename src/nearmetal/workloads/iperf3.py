"""iperf3 (Debian ``iperf3``): TCP bandwidth between a server and a client process.

The server (role ``server``, ``iperf3 -s -1``: one test, then it exits) starts first; the client (the
measured ``main``) connects to ``endpoints["server_host"]`` — loopback on bare metal, the other namespace's
address or a user-mode stack's gateway under the network layers. The client's ``-J`` report is parsed:
bits per second as the receiver saw them (what arrived, not what was queued), retransmits, and the CPU use
of each end (iperf3's own ``cpu_utilization_percent``, so a CPU-bound path shows as such).

JSON shape across versions: 3.0/3.1 have ``end.sum_sent``/``sum_received`` without the ``sender`` flag;
3.7+ add ``sender``; 3.16+ add per-stream RTT fields and ``sum_sent_bidir_reverse`` for ``--bidir``. An
``error`` key (with an empty ``end``) is what a failed test prints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pydantic import Field

from nearmetal.metrics import Metric
from nearmetal.workloads.base import (
    ParseError,
    ProcessSpec,
    Requirement,
    TrialOutput,
    Workload,
    WorkloadContext,
    WorkloadParams,
)
from nearmetal.workloads.netutil import free_tcp_port


class Iperf3Params(WorkloadParams):
    seconds: float = Field(3.0, gt=0, le=3600, description="test length (-t)")
    parallel: int = Field(1, ge=1, le=128, description="parallel TCP streams (-P)")
    reverse: bool = Field(False, description="server sends, client receives (-R)")
    length: str | None = Field(
        None, pattern=r"^[0-9]+[KMG]?$", description="buffer size per write (-l), e.g. 128K"
    )
    omit: float = Field(0.0, ge=0, le=60, description="seconds of slow start to leave out (-O)")
    port: int | None = Field(None, ge=1024, le=65535, description="server port (default: a free one)")


class Iperf3Workload(Workload):
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
        return parse_iperf3_json(path.read_text(errors="replace"))

    def tool_versions(self) -> dict[str, str]:
        if not shutil.which("iperf3"):
            return {}
        try:
            out = subprocess.run(["iperf3", "--version"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
        match = re.search(r"iperf\s+(\S+)", out)
        return {"iperf3": match.group(1)} if match else {}


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


def parse_iperf3_json(text: str) -> list[Metric]:
    """Metrics from ``iperf3 -c … -J`` output (TCP), any version from 3.0 on."""
    doc = _load(text)
    if doc.get("error"):
        raise ParseError(f"iperf3 reported an error: {doc['error']}")
    end = doc.get("end") or {}
    sent, received = end.get("sum_sent"), end.get("sum_received")
    if not sent or not received:
        if "sum" in end:
            raise ParseError("this is a UDP iperf3 report; the iperf3 workload measures TCP")
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
    cpu = end.get("cpu_utilization_percent") or {}
    if "host_total" in cpu:
        metrics.append(Metric("client_cpu_pct", float(cpu["host_total"]), "%", "lower"))
    if "remote_total" in cpu:
        metrics.append(Metric("server_cpu_pct", float(cpu["remote_total"]), "%", "lower"))
    intervals = [
        i["sum"]["bits_per_second"] / 1e9
        for i in doc.get("intervals") or []
        if isinstance(i.get("sum"), dict) and not i["sum"].get("omitted")
    ]
    if intervals:
        metrics.append(Metric.series("interval_Gbps", intervals, "Gbit/s", "higher"))
    rtts = [
        s["sender"]["mean_rtt"]
        for s in end.get("streams") or []
        if isinstance(s.get("sender"), dict) and "mean_rtt" in s["sender"]
    ]
    if rtts:
        metrics.append(Metric("tcp_mean_rtt_us", sum(rtts) / len(rtts), "µs", "lower"))
    return metrics
