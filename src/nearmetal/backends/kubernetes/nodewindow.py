"""The node around a pod trial: when nearmetal runs on the pod's node, the node's counters from the pod
first seen Running to seen ended (``podnoise``: outside CPU), the pod's own cgroup (``podevidence``: the
quota the kubelet wrote), and after the trial the wait until its pod and cgroup are gone; off the node, the
kubelet's summary."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from nearmetal.backends.kubernetes.api import KubeApi
from nearmetal.backends.podevidence import find_pod_cgroup, read_pod_cgroup
from nearmetal.backends.podnoise import NodeSnapshot, node_noise, read_summary, summary_noise
from nearmetal.backends.spec import TrialSpec


class NodeWindow(KubeApi):
    """The Kubernetes backend's part that reads the node around a pod."""

    _node_evidence: dict[str, dict[str, Any]]
    _windows: dict[str, dict[str, Any]]
    _cgroups: dict[str, tuple[int, Path]]
    _timeline: dict[str, dict[str, float]]

    def _window_start(self, spec: TrialSpec, pod: Any) -> None:
        """The first sight of the Pod Running: read the node (on it) or the kubelet's summary (off it)."""
        if spec.trial_key in self._windows or not pod.metadata or not pod.metadata.uid:
            return
        self._timeline.setdefault(spec.trial_key, {})["running_at"] = time.monotonic()
        uid = pod.metadata.uid
        found = find_pod_cgroup(uid)
        window: dict[str, Any] = {"uid": uid, "cgroup": found, "node": pod.spec.node_name}
        if found is not None:
            with contextlib.suppress(OSError):
                window["start"] = NodeSnapshot.take(found)
                self._cgroups[spec.trial_key] = found
        elif pod.spec.node_name:
            window["summary"] = read_summary(self._client(), pod.spec.node_name, uid)
        self._windows[spec.trial_key] = window
        self._observe_node(spec, pod)  # the quota and shares now, in case the cgroup is gone at the end

    def _window_end(self, spec: TrialSpec, pod: Any) -> None:
        self._timeline.setdefault(spec.trial_key, {}).setdefault("ended_at", time.monotonic())
        window = self._windows.get(spec.trial_key)
        if window is None or "noise" in window:
            return
        noise = None
        if window.get("start") is not None:
            with contextlib.suppress(OSError):
                window["end"] = NodeSnapshot.take(window["cgroup"])
                noise = node_noise(window["start"], window["end"], window["uid"])
        elif window.get("summary") is not None and window.get("node"):
            end = read_summary(self._client(), window["node"], window["uid"])
            window["summary_end"] = end
            noise = summary_noise(window["summary"], end) if end is not None else None
        window["noise"] = noise

    def _teardown(self, spec: TrialSpec) -> dict[str, Any]:
        """After the trial's objects are deleted: wait (up to ``teardown_timeout_s``) until its Pod is gone
        from the API server and its cgroup from the node (sandbox, containers, cgroup removed), so the next
        trial does not share the node with this one's teardown. The wait is recorded, not measured."""
        started = time.monotonic()
        deadline = started + self.options.teardown_timeout_s
        cgroup = self._cgroups.pop(spec.trial_key, None)
        pod_gone = cgroup_gone = False
        next_api = started
        while True:
            now = time.monotonic()
            if not pod_gone and now >= next_api:
                with contextlib.suppress(Exception):
                    pod_gone = not self._pods(spec)
                next_api = now + 1.0  # the API server at most once a second
            cgroup_gone = cgroup is None or not cgroup[1].exists()
            if (pod_gone and cgroup_gone) or now >= deadline:
                break
            time.sleep(0.25)
        return {
            "wait_s": round(time.monotonic() - started, 2),
            "pod_gone": pod_gone,
            "cgroup_gone": cgroup_gone if cgroup is not None else None,
        }

    def _observe_node(self, spec: TrialSpec, pod: Any) -> None:
        """Read the pod's cgroup when it is on this machine (a single-node cluster): the quota the kubelet
        wrote and the counters, kept until the trial's outcome is written (the kubelet removes the cgroup
        soon after the pod ends)."""
        uid = pod.metadata.uid if pod.metadata else None
        if not uid:
            return
        found = self._cgroups.get(spec.trial_key) or find_pod_cgroup(uid)
        if found is not None:
            self._cgroups.setdefault(spec.trial_key, found)
            with contextlib.suppress(OSError):
                reading = read_pod_cgroup(*found)
                # a cgroup the kubelet removed since the last reading reads empty: keep the last one
                if reading.get("period_us") or spec.trial_key not in self._node_evidence:
                    self._node_evidence[spec.trial_key] = reading

    @staticmethod
    def _record_quota(
        placement: dict[str, Any], evidence: dict[str, Any], node: dict[str, Any] | None
    ) -> None:
        """The pod's own evidence in the trial's placement: the quota as the container saw it, the pod's
        cgroup as the node holds it, and ``cpu_quota`` in the shape the local cpu-quota layer records
        (``quota_us`` None: no quota, the cgroup's "max" / -1)."""
        record = placement["kubernetes"]
        if evidence:
            record["container_cgroup"] = {
                k: evidence[k]
                for k in ("cgroup_version", "quota_us", "period_us", "cpu_shares", "cpu_weight")
                if k in evidence
            }
        if node:
            record["pod_cgroup"] = dict(node)
        source = node if node and node.get("period_us") else evidence
        if source.get("period_us") if source else False:
            placement["cpu_quota"] = {
                "written_by": "kubelet",
                "read_from": "pod cgroup" if source is node else "container cgroup",
                "cgroup_version": source.get("cgroup_version"),
                "cgroup": [node["cgroup"]] if node and source is node else [],
                "quota_us": source.get("quota_us"),
                "period_us": source.get("period_us"),
            }
            for key in ("cpu_shares", "cpu_weight"):
                if source.get(key) is not None:
                    placement["cpu_quota"][key] = source[key]
