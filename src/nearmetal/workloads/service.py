"""Service workloads for resilience experiments: an HTTP load generator and an I/O prober, each recording every
request's time and outcome, so availability and recovery can be measured while a fault is injected.

``http-load`` sends requests at a fixed rate (open loop) or with a fixed number of clients (closed loop) to the
service a topology layer set up (``ctx.endpoints["service_url"]``, the ``clusters`` layer's load balancer), or
else to a built-in HTTP server it starts itself as its ``server`` process (so it also runs over the ``netns``
layer, where the fault layer can kill ``role:server``). ``io-probe`` stats a directory and reads a file in it
at a fixed rate: the trial's test directory (a filesystem layer's mount, e.g. ``bindfs``) or ``path``.

Both write a per-request log in the trial's directory (``requests.tsv.gz``, ``nearmetal.tools.requestlog``)
and are analysed by ``analysis.resilience`` together with the faults the fault layer recorded
(``faults.jsonl``). Metrics: ``availability_pct`` (primary), ``errors`` and ``errors_<kind>``,
``throughput_rps``, ``latency_p50_us`` … ``latency_p99_9_us`` of successful requests, the same per phase
(``latency_before_p99_us``, ``latency_during_p99_us``, ``latency_after_p99_us``) and, when a fault was
injected, ``availability_during_pct``, ``detect_s``, ``recover_s``, ``steady_s``, ``requests_failed``,
``requests_lost`` and ``recovered`` (1 when the service recovered within the trial). The request timeline
(per-bin successes, errors by kind, successes per backend, latency) goes to the events table for the report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, model_validator

from nearmetal import faultlog
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
from nearmetal.workloads.programs import read_result

LOG_FILE = "requests.tsv.gz"
PROBE_FILE = "probe.dat"
PROBE_BYTES = 64 * 1024
PHASE_PERCENTILES = ("p50", "p99")


class ResilienceParams(WorkloadParams):
    duration_s: float = Field(20.0, gt=0, le=3600, description="seconds of load")
    timeout_s: float = Field(1.0, gt=0, le=60, description="a request with no answer by then timed out")
    stable_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="recovered = the first success that starts an error-free stretch this long; steady "
        "state = a window this long as good as before the fault",
    )
    python: str = Field(
        default_factory=lambda: sys.executable, description="Python interpreter that runs the nearmetal tools"
    )


class HttpLoadParams(ResilienceParams):
    rate_rps: float | None = Field(None, gt=0, le=20_000, description="requests per second (open loop)")
    concurrency: int | None = Field(None, ge=1, le=512, description="or: clients back to back (closed loop)")
    keepalive: bool = Field(True, description="closed loop: keep each client's connection alive")
    url: str | None = Field(
        None,
        pattern=r"^http://[A-Za-z0-9.:\[\]_-]+(/[^\s]*)?$",
        description="service URL (default: the topology layer's service, else a built-in server)",
    )

    @model_validator(mode="after")
    def _mode(self) -> HttpLoadParams:
        if self.rate_rps is None and self.concurrency is None:
            self.rate_rps = 200.0
        if self.rate_rps is not None and self.concurrency is not None:
            raise ValueError("set either rate_rps (open loop) or concurrency (closed loop), not both")
        return self


class IoProbeParams(ResilienceParams):
    rate_rps: float = Field(100.0, gt=0, le=10_000, description="operations per second")
    workers: int = Field(
        16,
        ge=1,
        le=64,
        description="threads issuing operations: a hung operation holds one; when all are held the next "
        "operation cannot start and counts as 'stalled'",
    )
    path: str | None = Field(
        None,
        description="directory to probe; a probe file is written into it (default: the trial's test "
        "directory, e.g. a bindfs mount). An absolute path must be allowed with --allow-path",
        json_schema_extra={"nearmetal_path": "writes"},
    )


def _tool(params: ResilienceParams, name: str) -> list[str]:
    return [params.python, "-m", f"nearmetal.tools.{name}"]


ResilienceParamsT = TypeVar("ResilienceParamsT", bound=ResilienceParams)


class ResilienceWorkload(Workload[ResilienceParamsT]):
    """What both workloads share: reading the request log and the faults, and the metrics."""

    primary_metric = "availability_pct"
    program: str = ""

    def __init__(self) -> None:
        self._cache: tuple[int, Any] | None = None

    def summary(self, output: TrialOutput, params: Any | None) -> Any:
        """The trial's ``ResilienceSummary`` (computed once per output)."""
        if self._cache is not None and self._cache[0] == id(output):
            return self._cache[1]
        from nearmetal.analysis.resilience import RequestLog, faults_from_events, summarize
        from nearmetal.tools import requestlog

        doc = read_result(output.stdout, self.program)
        log_path = output.files.get(LOG_FILE)
        if log_path is None:
            named = Path(str(doc.get("log", "")))
            log_path = named if named.is_absolute() else None
        if log_path is None or not Path(log_path).exists():
            raise ParseError(f"no request log {LOG_FILE} in the trial's directory")
        try:
            rows = requestlog.read(Path(log_path))
        except requestlog.RequestLogError as exc:
            raise ParseError(str(exc)) from None
        if not rows.start_s:
            raise ParseError(f"{LOG_FILE} has no requests: the {self.program} program sent nothing")
        events = (
            faultlog.read(output.files[faultlog.FAULTS_FILE]) if faultlog.FAULTS_FILE in output.files else []
        )
        log = RequestLog.of(rows.start_s, rows.latency_s, rows.outcome, rows.backend)
        stable_s = getattr(params, "stable_s", 1.0) if params is not None else 1.0
        summary = summarize(log, faults_from_events(events), stable_s=stable_s)
        self._cache = (id(output), summary)
        return summary

    def parse(self, output: TrialOutput, params: Any | None = None) -> list[Metric]:
        return summary_metrics(self.summary(output, params))

    def parse_file(self, path: Path) -> list[Metric]:
        """``nearmetal parse http-load DIR`` (a trial directory) or ``… requests.tsv.gz`` (faults.jsonl is
        read from beside it)."""
        directory = path if path.is_dir() else path.parent
        log = path if path.is_file() else directory / LOG_FILE
        stdout = ""
        for name in ("main.stdout", f"{self.program}.stdout"):
            if (directory / name).exists():
                stdout = (directory / name).read_text(errors="replace")
        if "NEARMETAL_RESULT" not in stdout:
            stdout = "NEARMETAL_RESULT " + json.dumps({"program": self.program, "format": 1})
        files = {LOG_FILE: log}
        if (directory / faultlog.FAULTS_FILE).exists():
            files[faultlog.FAULTS_FILE] = directory / faultlog.FAULTS_FILE
        return self.parse(TrialOutput(stdout=stdout, stderr="", files=files))

    def events(self, output: TrialOutput, params: Any | None = None) -> list[dict[str, Any]]:
        summary = self.summary(output, params)
        if summary.timeline is None:
            return []
        detail = {
            **summary.timeline.to_dict(),
            "phases": {k: list(v) for k, v in summary.phases.items()},
            "errors_by_kind": summary.errors_by_kind,
            "served_by": summary.served_by,
            "detect_s": summary.detect_s,
            "recover_s": summary.recover_s,
            "first_error_seen_s": summary.first_error_seen_s,
            "steady_s": summary.steady_s,
            "notes": summary.notes,
        }
        return [{"time": summary.timeline.t0, "kind": "timeline", "detail": detail}]

    def tool_versions(self) -> dict[str, str]:
        return {"python": sys.version.split()[0]}


def summary_metrics(s: Any) -> list[Metric]:
    """Metrics of a ``ResilienceSummary`` (names carry their unit)."""
    duration = max(s.span_s, 1e-3)
    out = [
        Metric("availability_pct", s.availability_pct, "%", "higher"),
        Metric("requests", float(s.requests), "requests", "higher"),
        Metric("errors", float(s.requests - s.ok), "requests", "lower"),
        Metric("throughput_rps", s.ok / duration, "requests/s", "higher"),
    ]
    for kind, count in sorted(s.errors_by_kind.items()):
        out.append(Metric(f"errors_{kind}", float(count), "requests", "lower"))
    for name, value in s.latency_us.get("all", {}).items():
        metric = "latency_mean_us" if name == "mean" else f"latency_{name}_us"
        out.append(Metric(metric, value, "us", "lower"))
    if s.faulted:
        for phase in ("before", "during", "after"):
            for name in PHASE_PERCENTILES:
                value = s.latency_us.get(phase, {}).get(name)
                if value is not None:
                    out.append(Metric(f"latency_{phase}_{name}_us", value, "us", "lower"))
        during = s.phase_availability_pct.get("during")
        if during is not None:
            out.append(Metric("availability_during_pct", during, "%", "higher"))
        for name, value in (
            ("detect_s", s.detect_s),
            ("recover_s", s.recover_s),
            ("steady_s", s.steady_s),
            ("first_error_seen_s", getattr(s, "first_error_seen_s", None)),
        ):
            if value is not None:
                out.append(Metric(name, value, "s", "lower"))
        if s.requests_failed is not None:
            out.append(Metric("requests_failed", float(s.requests_failed), "requests", "lower"))
        if s.requests_lost is not None:
            out.append(Metric("requests_lost", float(s.requests_lost), "requests", "lower"))
        out.append(Metric("recovered", 1.0 if s.recover_s is not None else 0.0, "", "higher"))
    return out


@register_workload
class HttpLoadWorkload(ResilienceWorkload[HttpLoadParams]):
    kind = "http-load"
    Params = HttpLoadParams
    description = (
        "HTTP requests at a fixed rate or concurrency, every request recorded: availability, detect and "
        "recover times, latency before/during/after a fault"
    )
    program = "httpload"

    def processes(self, params: HttpLoadParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        procs: list[ProcessSpec] = []
        url = params.url or ctx.endpoints.get("service_url")
        if not url:
            # no topology layer: a built-in server of our own, placed wherever layers put a server
            port = ctx.endpoints.get("server_port") or free_tcp_port()
            host = str(ctx.endpoints.get("server_host", "127.0.0.1"))
            listen = "0.0.0.0" if host != "127.0.0.1" else host
            procs.append(
                ProcessSpec(
                    argv=[*_tool(params, "httpserver"), "--listen", f"{listen}:{port}", "--name", "server-0"],
                    role="server",
                    name="httpserver",
                    ready_pattern=r"listening on",
                    ready_timeout_s=30,
                )
            )
            url = f"http://{host}:{port}/"
        argv = [*_tool(params, "httpload"), "--url", str(url), "--duration", f"{params.duration_s:g}"]
        if params.rate_rps is not None:
            argv += ["--rate", f"{params.rate_rps:g}"]
        else:
            argv += ["--concurrency", str(params.concurrency)]
            argv += ["--keepalive" if params.keepalive else "--no-keepalive"]
        argv += ["--timeout", f"{params.timeout_s:g}", "--out", LOG_FILE]
        procs.append(
            ProcessSpec(argv=argv, cwd=ctx.trial_dir, name="httpload", env={"PYTHONUNBUFFERED": "1"})
        )
        return procs

    def longer_params(self, params: HttpLoadParams, factor: float) -> dict[str, Any]:
        return {"duration_s": min(3600.0, params.duration_s * factor)}


@register_workload
class IoProbeWorkload(ResilienceWorkload[IoProbeParams]):
    kind = "io-probe"
    Params = IoProbeParams
    description = (
        "stat + open/read of a file at a fixed rate, every operation recorded: what a busy reader sees when "
        "the mount under it breaks (ENOTCONN, hangs) and how long until it works again"
    )
    program = "ioprobe"

    def probe_dir(self, params: IoProbeParams, ctx: WorkloadContext) -> Path:
        if params.path:
            return Path(params.path)
        test_dir = ctx.endpoints.get("test_dir")
        return Path(str(test_dir)) if test_dir else ctx.trial_dir / "probe"

    def prepare(self, params: IoProbeParams, ctx: WorkloadContext) -> None:
        directory = self.probe_dir(params, ctx)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / PROBE_FILE).write_bytes(bytes(range(256)) * (PROBE_BYTES // 256))

    def processes(self, params: IoProbeParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        argv = [
            *_tool(params, "ioprobe"),
            "--path", str(self.probe_dir(params, ctx)),
            "--file", PROBE_FILE,
            "--rate", f"{params.rate_rps:g}",
            "--duration", f"{params.duration_s:g}",
            "--timeout", f"{params.timeout_s:g}",
            "--workers", str(params.workers),
            "--out", LOG_FILE,
        ]  # fmt: skip
        return [ProcessSpec(argv=argv, cwd=ctx.trial_dir, name="ioprobe", env={"PYTHONUNBUFFERED": "1"})]

    def longer_params(self, params: IoProbeParams, factor: float) -> dict[str, Any]:
        return {"duration_s": min(3600.0, params.duration_s * factor)}
