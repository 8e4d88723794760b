"""TCP request/response round trips of small messages (what netperf TCP_RR measures; netperf is not in
Debian main, so nearmetal ships a small client/server pair, ``nearmetal.tools.tcprr``, run as two
processes: the server with role ``server``, the measured client as ``main``).

Metrics: round-trip latency in µs (p50 — the primary one: a few round trips that lost their CPU for a time
slice move the mean by orders of magnitude, the median not —, p90, p99, p99.9, mean, min, max, stdev),
transactions/s, and ``rtt_bimodal`` / ``rtt_slow_pct`` / ``rtt_mode_ratio`` when the round trips formed two
groups far apart. The client prints one JSON object; ``nearmetal parse tcp-rr FILE`` reads it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from nearmetal.host.ports import free_tcp_port
from nearmetal.metrics import Metric
from nearmetal.workloads.base import (
    ParseError,
    ProcessSpec,
    TrialOutput,
    Workload,
    WorkloadContext,
    WorkloadParams,
    register_workload,
)

LATENCY_FIELDS = ("mean", "p50", "p90", "p99", "p99_9", "min", "max", "stdev")


class TcpRrParams(WorkloadParams):
    size: int = Field(1, ge=1, le=1 << 24, description="request and response size in bytes")
    transactions: int | None = Field(None, ge=10, le=100_000_000, description="measured round trips")
    seconds: float | None = Field(None, gt=0, le=3600, description="or: run for this long")
    warmup: int = Field(200, ge=0, le=1_000_000, description="unmeasured round trips first")
    port: int | None = Field(None, ge=1024, le=65535, description="server port (default: a free one)")
    python: str = Field(
        default_factory=lambda: sys.executable,
        description="Python interpreter that runs nearmetal.tools.tcprr",
    )

    @model_validator(mode="after")
    def _amount(self) -> TcpRrParams:
        if self.transactions is None and self.seconds is None:
            self.transactions = 10_000
        if self.transactions is not None and self.seconds is not None:
            raise ValueError("set either transactions or seconds, not both")
        return self


@register_workload
class TcpRrWorkload(Workload[TcpRrParams]):
    kind = "tcp-rr"
    Params = TcpRrParams
    description = (
        "TCP request/response round trips (netperf TCP_RR's measurement): latency and transactions/s"
    )
    primary_metric = "rtt_p50_us"

    def processes(self, params: TcpRrParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        # a layer that forwards a port to the server (a published port) names it
        port = params.port or ctx.endpoints.get("server_port") or free_tcp_port()
        host = str(ctx.endpoints.get("server_host", "127.0.0.1"))
        tool = [params.python, "-m", "nearmetal.tools.tcprr"]
        server = ProcessSpec(
            argv=[*tool, "server", "--port", str(port)],
            role="server",
            name="tcprr-server",
            ready_pattern=r"listening on",
            ready_timeout_s=20,
        )
        argv = [*tool, "client", "--host", host, "--port", str(port), "--size", str(params.size)]
        argv += ["--warmup", str(params.warmup)]
        argv += (
            ["--seconds", f"{params.seconds:g}"] if params.seconds else ["--count", str(params.transactions)]
        )
        return [server, ProcessSpec(argv=argv, name="tcprr-client")]

    def parse(self, output: TrialOutput, params: TcpRrParams | None = None) -> list[Metric]:
        return parse_tcprr_json(output.stdout)

    def parse_file(self, path: Path) -> list[Metric]:
        return parse_tcprr_json(path.read_text(errors="replace"))

    def placement(self, output: TrialOutput, params: TcpRrParams | None = None) -> dict[str, Any]:
        """The host's load average when the client ended (client output version ≥ 2)."""
        for line in reversed(output.stdout.strip().splitlines()):
            if line.strip().startswith("{"):
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(doc, dict) and isinstance(doc.get("load_avg"), list):
                    return {"load_avg": {"end": doc["load_avg"]}}
                return {}
        return {}


def parse_tcprr_json(text: str) -> list[Metric]:
    doc = None
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if not isinstance(doc, dict) or "transactions_per_s" not in doc:
        raise ParseError("no tcp-rr result line (a JSON object with transactions_per_s) in the client output")
    if not doc.get("transactions"):
        raise ParseError("tcp-rr measured no transactions")
    metrics = [
        Metric("transactions_per_s", float(doc["transactions_per_s"]), "1/s", "higher"),
        Metric("transactions", float(doc["transactions"]), "transactions", "higher"),
    ]
    for field in LATENCY_FIELDS:
        key = f"rtt_{field}_us"
        if key in doc:
            metrics.append(Metric(key, float(doc[key]), "µs", "lower"))
    # version 2: two groups of round trips far apart (see nearmetal.tools.iterstats)
    for key, unit in (("rtt_bimodal", "flag"), ("rtt_slow_pct", "%"), ("rtt_mode_ratio", "×")):
        if isinstance(doc.get(key), int | float):
            metrics.append(Metric(key, float(doc[key]), unit, "lower"))
    return metrics
