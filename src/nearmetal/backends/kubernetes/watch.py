"""Following a trial's Pod until it ends, quietly (issue 27): one list, then one watch stream from that
list's ``resourceVersion``; the Job is read only when a deadline passes or the Pod is gone; what a pod that
never starts says (its pending reasons, the kubelet's last warning)."""

from __future__ import annotations

import time
from typing import Any

from nearmetal.backends.kubernetes.api import RUN_LABEL, TRIAL_LABEL, k8s_name
from nearmetal.backends.kubernetes.nodewindow import NodeWindow
from nearmetal.backends.spec import TrialSpec

# a container waiting for one of these never starts: waiting longer only costs the pending timeout
NEVER_STARTS = {
    "ErrImageNeverPull": "the image is not on the node and its pull policy is Never (build and load it here: "
    "nearmetal image build)",
    "InvalidImageName": "the image name is not valid",
}


def _never_starts(pod: Any) -> str:
    for status in (pod.status.container_statuses or []) if pod.status else []:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in NEVER_STARTS:
            return (
                f"{waiting.reason}: {NEVER_STARTS[waiting.reason]} ({(waiting.message or '').strip()[:300]})"
            )
    return ""


class PodWatch(NodeWindow):
    """The Kubernetes backend's part that waits for a trial's Pod."""

    _calls: dict[str, dict[str, int]]

    def wait(self, spec: TrialSpec, job: Any) -> tuple[str, Any | None, str]:
        """Follow the trial's Pod until it ends, the Job fails, or nothing happens for too long. Returns (how
        it ended, the last Pod seen, why).

        Quiet by design (issue 27: a loop of list/read/watch calls took 30–45% of a CPU from the pod under
        test, and as much again in the API server): one list, then one watch stream from that list's
        ``resourceVersion`` that blocks until the API server sends a change or the next deadline comes; the
        Job is read only when a deadline passes or the Pod is gone. While the Pod runs, nothing is asked."""
        from kubernetes import watch

        ns = self.options.namespace
        name = job.metadata.name
        core = self._core()
        selector = f"{RUN_LABEL}={k8s_name(spec.run_id)},{TRIAL_LABEL}={k8s_name(spec.trial_key)}"
        now = time.monotonic()
        deadline_pending = now + self.options.pending_timeout_s
        deadline_total = now + self.options.pending_timeout_s + spec.timeout + 60
        pod: Any | None = None
        version: str | None = None
        calls = {"lists": 0, "watches": 0, "events": 0, "job_reads": 0}
        self._calls[spec.trial_key] = calls
        self._timeline[spec.trial_key] = {"waited_at": now}
        while True:
            if version is None:
                listing = core.list_namespaced_pod(ns, label_selector=selector)
                calls["lists"] += 1
                version = listing.metadata.resource_version
                pod = listing.items[0] if listing.items else pod
                if pod is not None:
                    decided = self._judge(spec, pod)
                    if decided is not None:
                        return decided
            if pod is not None and pod.status is not None and pod.status.phase == "Running":
                deadline_pending = deadline_total
            now = time.monotonic()
            if now > deadline_pending or now > deadline_total:
                ended = self._job_ended(spec, name, pod, calls)
                if ended is not None:
                    return ended
                if now > deadline_pending:
                    return "Pending", pod, self._pending_why(name, pod)
                return "Timeout", pod, "the trial did not end within its timeout"
            wait_s = min(deadline_pending, deadline_total) - now
            w = watch.Watch()
            gone = False
            calls["watches"] += 1
            try:
                for event in w.stream(
                    core.list_namespaced_pod,
                    ns,
                    label_selector=selector,
                    resource_version=version,
                    timeout_seconds=max(1, min(int(wait_s) + 1, 3600)),
                    _request_timeout=max(1, min(int(wait_s) + 1, 3600)) + 30,
                ):
                    calls["events"] += 1
                    obj = event["object"]
                    version = getattr(getattr(obj, "metadata", None), "resource_version", None) or version
                    if event["type"] == "DELETED":
                        gone = True  # the job controller or someone else deleted it: the Job says why
                        break
                    if event["type"] not in ("ADDED", "MODIFIED"):
                        continue
                    pod = obj
                    decided = self._judge(spec, pod)
                    if decided is not None:
                        return decided
                    if pod.status is not None and pod.status.phase == "Running":
                        deadline_pending = deadline_total
            except Exception as exc:
                # 410 Gone (the version is too old) or a broken stream: list again, after a pause so that an
                # API server that refuses at once is not asked in a loop
                version = None
                if getattr(exc, "status", None) != 410:
                    time.sleep(1.0)
            finally:
                w.stop()
            if gone:
                ended = self._job_ended(spec, name, pod, calls)
                if ended is not None:
                    return ended
                version = None

    def _judge(self, spec: TrialSpec, pod: Any) -> tuple[str, Any, str] | None:
        """The end of the trial from one view of its Pod (None: not yet). Starts the node window when the
        Pod is first seen Running and closes it when the Pod is seen ended."""
        phase = pod.status.phase if pod.status else None
        if phase == "Running":
            self._window_start(spec, pod)
        if phase in ("Succeeded", "Failed"):
            self._window_end(spec, pod)
            self._observe_node(spec, pod)
            return phase, pod, ""
        stuck = _never_starts(pod)
        if stuck:
            return "Pending", pod, stuck
        return None

    def _job_ended(
        self, spec: TrialSpec, name: str, pod: Any | None, calls: dict[str, int]
    ) -> tuple[str, Any | None, str] | None:
        """The Job's own verdict when it has one (Failed: its deadline, a pod deleted under it)."""
        calls["job_reads"] += 1
        try:
            current = self._batch().read_namespaced_job_status(name, self.options.namespace)
        except Exception:
            return None
        for cond in (current.status.conditions or []) if current.status else []:
            if cond.type in ("Failed", "Complete") and cond.status == "True":
                # the pod may have ended just before: its own phase is the outcome then
                pods = self._pods(spec)
                pod = pods[0] if pods else pod
                phase = pod.status.phase if pod is not None and pod.status else None
                if phase in ("Succeeded", "Failed"):
                    self._window_end(spec, pod)
                    self._observe_node(spec, pod)
                    return phase, pod, ""
                return cond.type, pod, f"{cond.reason or ''}: {cond.message or ''}".strip(": ")
        return None

    def _pending_why(self, name: str, pod: Any | None) -> str:
        if pod is None:
            return (
                f"no Pod was created for Job {name} within {self.options.pending_timeout_s:g}s "
                "(is the job controller — kube-controller-manager — running?)"
            )
        why = f"Pod {pod.metadata.name} stayed {pod.status.phase} for {self.options.pending_timeout_s:g}s"
        reasons = [
            f"{c.reason}: {c.message}"
            for c in (pod.status.conditions or [])
            if c.status != "True" and (c.reason or c.message)
        ]
        if reasons:
            why += " (" + "; ".join(reasons) + ")"
        elif not pod.spec.node_name:
            why += " (no node was assigned: is a scheduler running, and does a node fit?)"
        else:
            why += f" on node {pod.spec.node_name} (its kubelet never started it)"
        return why + self._pod_warning(pod)

    def _pod_warning(self, pod: Any) -> str:
        """The pod's latest Warning event, as "; last warning: REASON: MESSAGE" (what the kubelet said when
        it could not start the pod: a sandbox the runtime refused, an image it does not have), or ""."""
        try:
            events = (
                self._core()
                .list_namespaced_event(
                    self.options.namespace,
                    field_selector=f"involvedObject.name={pod.metadata.name},type=Warning",
                )
                .items
            )
        except Exception:
            return ""
        if not events:
            return ""

        def when(event: Any) -> float:
            stamp = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
            return stamp.timestamp() if stamp else 0.0

        last = max(events, key=when)
        return f"; last warning: {last.reason}: {(last.message or '').strip()[:500]}"
