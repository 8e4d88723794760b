"""A finished trial pod → its ``TrialOutcome``: the container's log read until it is complete, split into
the program's output, its files and the cgroup evidence; the workload's parser; placement (node, QoS,
quota, devices, API calls, timeline, outside CPU)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nearmetal.backends.kubernetes.api import api_reason
from nearmetal.backends.kubernetes.protocol import DONE_MARK, END_MARK, split_log
from nearmetal.backends.kubernetes.watch import PodWatch
from nearmetal.backends.podevidence import container_evidence, evidence_metrics, program_span, split_evidence
from nearmetal.backends.podmaps import PodShape
from nearmetal.backends.podnoise import node_noise, summary_noise
from nearmetal.backends.spec import TrialOutcome, TrialSpec


class PodOutcomes(PodWatch):
    """The Kubernetes backend's part that turns an ended pod into a ``TrialOutcome``."""

    def _read_log(self, pod: Any, settle: bool) -> tuple[str, dict[str, Any]]:
        """The finished container's log, read again (up to ``log_settle_s``) until it has the entry point's
        closing line: the API server can report a pod done while the runtime is still
        writing the end of its log, and that end holds the cgroup evidence and the program's files."""
        started = time.monotonic()
        reads, pause = 0, 0.2
        while True:
            log = self._core().read_namespaced_pod_log(pod.metadata.name, self.options.namespace)
            reads += 1
            complete = log.startswith(DONE_MARK + " ") or f"\n{DONE_MARK} " in log
            waited = time.monotonic() - started
            if complete or not settle or waited >= self.options.log_settle_s:
                return log, {"reads": reads, "complete": complete, "waited_s": round(waited, 2)}
            time.sleep(min(pause, max(0.0, self.options.log_settle_s - waited)))
            pause = min(pause * 2, 2.0)

    def outcome(
        self, spec: TrialSpec, ended: str, pod: Any | None, why: str, shape: PodShape
    ) -> TrialOutcome:
        from nearmetal.workloads import get_workload
        from nearmetal.workloads.base import ParseError, TrialOutput

        trial_dir = Path(spec.trial_dir)
        now = time.time()
        placement: dict[str, Any] = {"backend": "kubernetes", "kubernetes": shape.record()}
        placement["kubernetes"]["namespace"] = self.options.namespace
        started = ended_at = now
        exit_code = None
        if pod is not None:
            placement["host"] = pod.spec.node_name or ""
            placement["nodes"] = [pod.spec.node_name] if pod.spec.node_name else []
            placement["kubernetes"].update(
                {
                    "pod": pod.metadata.name,
                    "uid": pod.metadata.uid,
                    "node": pod.spec.node_name,
                    "host_ip": pod.status.host_ip if pod.status else None,
                    "qos_class": pod.status.qos_class if pod.status else None,
                    "devices": {k: v for k, v in shape.limits.items() if k.startswith("nvidia.com/")},
                }
            )
            for status in (pod.status.container_statuses or []) if pod.status else []:
                term = status.state.terminated if status.state else None
                if term is not None:
                    exit_code = term.exit_code
                    if term.started_at and term.finished_at:
                        started, ended_at = term.started_at.timestamp(), term.finished_at.timestamp()
                    if term.reason == "OOMKilled":
                        why = "the container was OOM-killed (memory limit)"
                        ended = "OOMKilled"
        log = ""
        log_error = None
        if pod is not None and ended in ("Succeeded", "Failed", "OOMKilled"):
            try:
                log, reading = self._read_log(pod, settle=ended != "OOMKilled")
                placement["kubernetes"]["log"] = reading
            except Exception as exc:
                log_error = api_reason(exc)
            else:
                if ended == "Succeeded" and not reading["complete"]:
                    log_error = (
                        f"it was read {reading['reads']} times over {reading['waited_s']:g}s ({len(log)} "
                        f"characters) and never ended with the entry point's closing line {DONE_MARK!r}: the "
                        "runtime had not written all of it, so the program's files and its cgroup evidence "
                        "would be incomplete (raise the backend option log_settle_s on a slow node)"
                    )
        _, evidence_sections = split_evidence(log, END_MARK)
        evidence = container_evidence(evidence_sections)
        if evidence.get("wall_s") is not None:
            started, ended_at = ended_at - evidence["wall_s"], ended_at  # the program's own time, in ns
        node = self._node_evidence.pop(spec.trial_key, None)
        self._record_quota(placement, evidence, node)
        calls = self._calls.pop(spec.trial_key, None)
        if calls is not None:
            placement["kubernetes"]["api_calls"] = calls
        marks = self._timeline.pop(spec.trial_key, {})
        if "waited_at" in marks:
            # the pod's own overhead: Job created → pod seen Running (scheduling, sandbox, image, start)
            placement["kubernetes"]["timeline"] = {
                f"{name}_s": round(marks[at] - marks["waited_at"], 3)
                for name, at in (("to_running", "running_at"), ("to_ended", "ended_at"))
                if at in marks
            }
        window = self._windows.pop(spec.trial_key, None) or {}
        noise = window.get("noise")
        if noise is None and window.get("end") is not None and evidence.get("usage_s") is not None:
            # the kubelet removed the pod's cgroup before the pod was seen ended: its container's own count
            noise = node_noise(window["start"], window["end"], window["uid"], pod_cpu_s=evidence["usage_s"])
        if noise is None and window.get("summary_end") is not None:
            # off the node the pod has left the kubelet's summary by its end: its container's own count
            span = program_span(evidence_sections)
            noise = summary_noise(window["summary"], window["summary_end"], evidence.get("usage_s"), span)
        if noise is not None:
            placement["outside"] = noise.to_dict()
        elif pod is not None:
            placement["kubernetes"]["outside_missing"] = (
                "the pod was never seen Running (it ended before the kubelet reported it running)"
                if not window
                else "the node's counters could not be read at both ends of the pod's run"
            )
        stdout, files = split_log(log)
        (trial_dir / "main.stdout").write_text(stdout)
        for name, content in files.items():
            (trial_dir / name).write_bytes(content)
        base: dict[str, Any] = {
            "wall_s": max(0.0, ended_at - started),
            "placement": placement,
            "caveats": list(shape.notes),
            "started_at": started,
            "ended_at": ended_at,
            "output_dir": str(trial_dir),
            "exit_code": exit_code,
        }
        if ended == "OOMKilled":
            return TrialOutcome(status="oom", error=why, **base)
        if log_error is not None:
            pod_name = pod.metadata.name if pod is not None else "?"
            return TrialOutcome(
                status="error",
                error=f"Pod {pod_name} ended {ended} but its log could not be read: {log_error}"
                + self._pod_warning(pod),
                **base,
            )
        if ended == "Succeeded":
            workload = get_workload(spec.kind)
            output = TrialOutput(
                stdout=stdout,
                stderr="",
                files={p.name: p for p in trial_dir.iterdir() if p.is_file()},
                wall_s=base["wall_s"],
            )
            try:
                metrics = workload.parse(output, spec.cell().params)
            except ParseError as exc:
                return TrialOutcome(status="failed", error=f"output not understood: {exc}", **base)
            named = {m.name for m in metrics}
            metrics += [m for m in evidence_metrics(evidence) if m.name not in named]
            if noise is not None:
                metrics += noise.metrics()
            return TrialOutcome(status="ok", metrics=metrics, **base)
        if ended == "Failed":
            return TrialOutcome(
                status="failed",
                error=f"exited with code {exit_code}" + (f" ({why})" if why else ""),
                stderr_tail=stdout[-4000:] or None,
                **base,
            )
        status = "timeout" if ended == "Timeout" else "error"
        return TrialOutcome(status=status, error=why or f"the Job ended {ended}", **base)
