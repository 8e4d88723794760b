"""Run trials as Kubernetes ``batch/v1`` Jobs.

Each trial becomes one Job (one Pod, no retries) built with the official ``kubernetes`` client models: the
image the plan names, the workload's argv as the command, and the trial's layers mapped to pod settings
(``LAYER_MAPPINGS``, one module per layer kind in ``backends/podmaps``): a cpu-quota layer becomes a CPU limit
(which is exactly what writes the quota, seed 000), a runtime-class layer the pod's ``runtimeClassName``, the
``pod`` layer gives the resources mode (limits / requests only / none, recorded with the trial), runtime
class, ``hostUsers``, security context, node selection, GPUs (``nvidia.com/gpu``, ``nvidia.com/gpu.shared``,
``nvidia.com/mig-<profile>``) and volumes. A layer without a mapping is refused before anything is created.
An image named ``localhost/…`` (``nearmetal image build``: in no registry) runs with ``imagePullPolicy: Never``.

Inputs the workload prepares (LAMMPS' ``in.lj``) travel in a ConfigMap; the container copies them into its
working directory, prints its cgroup's CPU files, runs the program, prints them again, then prints every file
the program wrote between markers, so one log stream carries the output, the files the parser reads and the
pod's own evidence (``podevidence``: the quota the kubelet wrote, throttling and CPU time over the program).
nearmetal watches the Job and its Pod (reading the pod's cgroup too when it runs on the node), stores the
log in the trial's directory, records the node, QoS class, quota and requested devices as placement, and deletes
everything it created (all objects carry the label ``nearmetal.io/run=<run id>``) on every exit path;
``nearmetal cleanup`` deletes by that label.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from nearmetal.backends.base import RemoteBackend, RemoteHooks, register_backend
from nearmetal.backends.options import KubernetesOptions
from nearmetal.backends.podevidence import (
    END_MARK,
    EVIDENCE_SHELL,
    container_evidence,
    evidence_metrics,
    find_pod_cgroup,
    read_pod_cgroup,
    split_evidence,
)
from nearmetal.backends.podmaps import LAYER_MAPPINGS, PodShape, common_cpu_request, pod_shape
from nearmetal.backends.podnoise import NodeSnapshot, node_noise, read_summary, summary_noise
from nearmetal.backends.spec import TrialOutcome, TrialSpec
from nearmetal.errors import NearmetalError
from nearmetal.host.leftovers import Leftover, finder

RUN_LABEL = "nearmetal.io/run"
TRIAL_LABEL = "nearmetal.io/trial"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
WORKDIR = "/nearmetal/trial"
INPUTS = "/nearmetal/inputs"
FILE_MARK = "=== nearmetal-file"
# the entry point's last line: a log without it was read before the runtime had written all of it
DONE_MARK = "=== nearmetal-done"
MAX_INPUT_BYTES = 900 * 1024  # a ConfigMap holds at most 1 MiB

# The container's entry point: copy inputs, print the cgroup's CPU files (podevidence), run the program (argv
# as positional arguments, never interpolated; its stderr into stdout, so the log keeps one order whatever
# the runtime's two stream writers do), print them again, then print every file the program wrote as
# base64 between markers, and a closing mark with the exit status. A constant script.
ENTRYPOINT = (
    EVIDENCE_SHELL + 'cp -r "$NEARMETAL_INPUTS"/. . 2>/dev/null; ls -A > .nearmetal-inputs; '
    'nm_evidence before; "$@" 2>&1; rc=$?; nm_evidence after; '
    "for f in *; do "
    'grep -qxF "$f" .nearmetal-inputs && continue; [ -f "$f" ] || continue; '
    f'echo "{FILE_MARK} $f"; base64 "$f"; echo "{END_MARK}"; '
    f'done; echo "{DONE_MARK} $rc"; exit $rc'
)


class KubernetesError(NearmetalError):
    """The API server refused or lost something; the message carries its words."""


def k8s_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1123 label from parts (run id, trial key): lower case, dashes, at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return name[:limit].rstrip("-")


def split_log(log: str) -> tuple[str, dict[str, bytes]]:
    """The container's log → (the program's own output, {file name: content}) by the entry point's markers
    (the cgroup evidence sections are left out: ``podevidence.split_evidence`` reads them)."""
    log, _ = split_evidence(log, END_MARK)
    lines = log.splitlines(keepends=True)
    out: list[str] = []
    files: dict[str, bytes] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(FILE_MARK + " "):
            name = line[len(FILE_MARK) + 1 :].strip()
            chunk: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith(END_MARK):
                chunk.append(lines[i].strip())
                i += 1
            with contextlib.suppress(ValueError):
                files[Path(name).name] = base64.b64decode("".join(chunk))
        elif not line.startswith(DONE_MARK + " "):
            out.append(line)
        i += 1
    return "".join(out), files


class KubernetesBackend(RemoteBackend):
    """Create a Job per trial, watch it and its Pod, collect the log, delete everything by label."""

    name = "kubernetes"

    def __init__(
        self,
        options: KubernetesOptions | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        api_client: Any | None = None,
    ) -> None:
        self.options = options or KubernetesOptions()
        self.kubeconfig = kubeconfig
        self.context = context
        self._api_client = api_client
        # trial key -> the last reading of the pod's cgroup on this node (podevidence.read_pod_cgroup)
        self._node_evidence: dict[str, dict[str, Any]] = {}
        # trial key -> the node window of its pod (podnoise), its pod cgroup, the API calls its wait made
        self._windows: dict[str, dict[str, Any]] = {}
        self._cgroups: dict[str, tuple[int, Path]] = {}
        self._calls: dict[str, dict[str, int]] = {}
        # trial key -> when its Job was created, its pod first seen Running and seen ended (monotonic)
        self._timeline: dict[str, dict[str, float]] = {}
        # the CPU request every pod of the plan shares (``prepare``; options.fair_requests)
        self.common_cpu: float | None = None

    def pull_policy(self) -> str:
        """The options' pull policy; for an image named ``localhost/…`` (built on the node, in no registry)
        ``Never`` unless the plan says otherwise: a missing image fails at once (ErrImageNeverPull) instead
        of retrying a pull that cannot succeed."""
        image = self.options.image or ""
        if "image_pull_policy" not in self.options.model_fields_set and image.startswith("localhost/"):
            return "Never"
        return self.options.image_pull_policy

    def options_record(self) -> dict[str, Any]:
        record: dict[str, Any] = self.options.model_dump(mode="json")
        for attr in ("kubeconfig", "context"):
            if getattr(self, attr, None):
                record[attr] = getattr(self, attr)
        return record

    # --- building (pure: no API server needed) ---------------------------------------------------------
    def render(self, spec: TrialSpec) -> tuple[Any, dict[str, str], PodShape]:
        """The trial's processes as the container will run them: (main ProcessSpec, input files, shape)."""
        from nearmetal.workloads import get_workload
        from nearmetal.workloads.base import WorkloadContext

        cell = spec.cell()
        workload = get_workload(cell.kind)
        local_dir = Path(spec.trial_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        # prepare writes inputs here; the container sees them (and runs) in WORKDIR
        wctx = WorkloadContext(trial_dir=local_dir, is_root=False, seed=spec.seed, mpi=spec.mpi)
        workload.prepare(cell.params, wctx)
        inputs: dict[str, str] = {}
        total = 0
        for path in sorted(local_dir.iterdir()):
            if path.is_file() and path.name not in ("spec.json", "outcome.json"):
                text = path.read_text(errors="replace")
                total += len(text)
                inputs[path.name] = text
        if total > MAX_INPUT_BYTES:
            raise KubernetesError(
                f"the workload's inputs are {total // 1024} KiB; a ConfigMap holds at most 1 MiB",
                fix="put large inputs in the image or on a volume (pod layer: volumes)",
            )
        pod_ctx = WorkloadContext(trial_dir=Path(WORKDIR), is_root=False, seed=spec.seed, mpi=spec.mpi)
        processes = workload.processes(cell.params, pod_ctx)
        mains = [p for p in processes if p.role == "main"]
        if len(processes) != 1 or len(mains) != 1:
            raise KubernetesError(
                f"workload {cell.kind} runs {len(processes)} processes; the Kubernetes backend runs one per pod",
                fix="run this workload with --backend local or slurm",
            )
        return mains[0], inputs, pod_shape(spec, self.common_cpu)

    def build(self, spec: TrialSpec) -> tuple[Any, Any | None, PodShape]:
        """(V1Job, V1ConfigMap or None, shape) for one trial, built with the official client models."""
        from kubernetes import client

        if not self.options.image:
            raise KubernetesError(
                "the Kubernetes backend needs an image with the workload's programs",
                fix="give --image REGISTRY/IMAGE:TAG (or kubernetes: {image: …} in the plan)",
            )
        main, inputs, shape = self.render(spec)
        name = k8s_name("nm", spec.run_id, spec.trial_key)
        labels = {
            RUN_LABEL: k8s_name(spec.run_id),
            TRIAL_LABEL: k8s_name(spec.trial_key),
            MANAGED_LABEL: "nearmetal",
        }
        annotations = {
            "nearmetal.io/cell": f"{spec.workload}/{spec.variant}",
            "nearmetal.io/run-id": spec.run_id,
        }
        env = [client.V1EnvVar(name="NEARMETAL_INPUTS", value=INPUTS)]
        # images often run as root; OpenMPI's mpirun refuses that unless told (the workload cannot know)
        env += [
            client.V1EnvVar(name="OMPI_ALLOW_RUN_AS_ROOT", value="1"),
            client.V1EnvVar(name="OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", value="1"),
        ]
        env += [client.V1EnvVar(name=k, value=v) for k, v in {**main.env, **shape.env}.items()]
        mounts = [client.V1VolumeMount(name="trial", mount_path=WORKDIR)]
        volumes = [client.V1Volume(name="trial", empty_dir=client.V1EmptyDirVolumeSource())]
        config_map = None
        if inputs:
            config_map = client.V1ConfigMap(
                api_version="v1",
                kind="ConfigMap",
                metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=annotations),
                data=inputs,
            )
            volumes.append(
                client.V1Volume(name="inputs", config_map=client.V1ConfigMapVolumeSource(name=name))
            )
            mounts.append(client.V1VolumeMount(name="inputs", mount_path=INPUTS, read_only=True))
        volumes += shape.volumes
        mounts += shape.mounts
        resources = None
        if shape.requests or shape.limits:
            resources = client.V1ResourceRequirements(
                requests=shape.requests or None, limits=shape.limits or None
            )
        security = client.V1SecurityContext(**shape.security) if shape.security else None
        container = client.V1Container(
            name="trial",
            image=self.options.image,
            image_pull_policy=self.pull_policy(),
            command=["/bin/sh", "-c", ENTRYPOINT, "nearmetal-trial"],
            args=[str(a) for a in main.argv],
            working_dir=WORKDIR,
            env=env,
            resources=resources,
            security_context=security,
            volume_mounts=mounts,
        )
        affinity = None
        if shape.required_nodes:
            affinity = client.V1Affinity(
                node_affinity=client.V1NodeAffinity(
                    required_during_scheduling_ignored_during_execution=client.V1NodeSelector(
                        node_selector_terms=[
                            client.V1NodeSelectorTerm(
                                match_expressions=[
                                    client.V1NodeSelectorRequirement(
                                        key="kubernetes.io/hostname",
                                        operator="In",
                                        values=shape.required_nodes,
                                    )
                                ]
                            )
                        ]
                    )
                )
            )
        pod_spec = client.V1PodSpec(
            restart_policy="Never",
            containers=[container],
            volumes=volumes,
            runtime_class_name=shape.runtime_class,
            host_users=shape.host_users,
            node_selector={**self.options.node_selector, **shape.node_selector} or None,
            affinity=affinity,
            service_account_name=self.options.service_account,
            automount_service_account_token=False,
            enable_service_links=False,
        )
        job = client.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=annotations),
            spec=client.V1JobSpec(
                backoff_limit=0,  # a failed trial is a result, not something to retry
                active_deadline_seconds=max(1, int(spec.timeout)),
                ttl_seconds_after_finished=3600,  # a safety net if nearmetal itself dies
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels, annotations=annotations), spec=pod_spec
                ),
            ),
        )
        return job, config_map, shape

    def manifests(self, spec: TrialSpec) -> list[dict[str, Any]]:
        """The trial's objects as plain dicts (what ``kubectl apply`` would take)."""
        from kubernetes import client

        job, config_map, _ = self.build(spec)
        sanitize = client.ApiClient().sanitize_for_serialization
        return [sanitize(o) for o in (config_map, job) if o is not None]

    # --- checks before anything runs -------------------------------------------------------------------
    def prepare(self, loaded: Any) -> None:
        """What the backend learns from the whole plan before building any pod: the CPU request its pods
        share (fair variants: the only difference between them is the limit)."""
        self.common_cpu = common_cpu_request(loaded.cells) if self.options.fair_requests else None

    def check(self, loaded: Any) -> None:
        self.prepare(loaded)
        unmapped: dict[str, list[str]] = {}
        for cell in loaded.cells:
            for config in cell.layers:
                if config.layer not in LAYER_MAPPINGS:
                    unmapped.setdefault(config.layer, []).append(cell.key)
        if unmapped:
            lines = [f"{layer} (cells {', '.join(cells[:3])})" for layer, cells in unmapped.items()]
            raise KubernetesError(
                "these layers have no Kubernetes form; nothing was created: " + "; ".join(lines),
                fix="run those variants with --backend local or slurm, or use the pod layer's settings",
            )
        if not self.options.image:
            raise KubernetesError(
                "the Kubernetes backend needs an image with the workload's programs",
                fix="give --image REGISTRY/IMAGE:TAG (or kubernetes: {image: …} in the plan)",
            )
        core = self._core()
        try:
            core.read_namespace(self.options.namespace)
        except Exception as exc:
            raise KubernetesError(
                f"cannot use namespace {self.options.namespace!r}: {_reason(exc)}",
                fix="check --kubeconfig/--namespace and that the API server answers",
            ) from None

    # --- API ------------------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._api_client is None:
            from kubernetes import config

            try:
                self._api_client = config.new_client_from_config(
                    config_file=self.kubeconfig, context=self.context
                )
            except Exception as exc:
                raise KubernetesError(
                    f"cannot load a kubeconfig: {exc}", fix="give --kubeconfig FILE or set KUBECONFIG"
                ) from None
        return self._api_client

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._client())

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self._client())

    def create(self, spec: TrialSpec) -> tuple[Any, PodShape]:
        job, config_map, shape = self.build(spec)
        ns = self.options.namespace
        try:
            if config_map is not None:
                self._core().create_namespaced_config_map(ns, config_map)
            created = self._batch().create_namespaced_job(ns, job)
        except Exception as exc:
            self.delete_trial(spec)
            raise KubernetesError(f"the API server refused the trial's Job: {_reason(exc)}") from None
        return created, shape

    def delete_trial(self, spec: TrialSpec) -> None:
        selector = f"{RUN_LABEL}={k8s_name(spec.run_id)},{TRIAL_LABEL}={k8s_name(spec.trial_key)}"
        self._delete(selector)

    def delete_run(self, run_id: str) -> None:
        self._delete(f"{RUN_LABEL}={k8s_name(run_id)}")

    def _delete(self, selector: str) -> None:
        ns = self.options.namespace
        with contextlib.suppress(Exception):
            self._batch().delete_collection_namespaced_job(
                ns, label_selector=selector, propagation_policy="Background"
            )
        # pods too: without a garbage collector (or before it acts) they would outlive their Job
        with contextlib.suppress(Exception):
            self._core().delete_collection_namespaced_pod(ns, label_selector=selector, grace_period_seconds=0)
        with contextlib.suppress(Exception):
            self._core().delete_collection_namespaced_config_map(ns, label_selector=selector)

    # --- watching ---------------------------------------------------------------------------------------
    def _pods(self, spec: TrialSpec) -> list[Any]:
        selector = f"{RUN_LABEL}={k8s_name(spec.run_id)},{TRIAL_LABEL}={k8s_name(spec.trial_key)}"
        return self._core().list_namespaced_pod(self.options.namespace, label_selector=selector).items

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

    # --- the node around a pod trial: outside CPU, the pod's teardown -----------------------------------
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
                log_error = _reason(exc)
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

    # --- the loop -------------------------------------------------------------------------------------
    def run_trials(
        self, specs: list[TrialSpec], hooks: RemoteHooks
    ) -> Generator[tuple[TrialSpec, TrialOutcome], None, None]:
        """One Job at a time (trials must not overlap on a node); every object is deleted on every exit."""
        run_ids = {s.run_id for s in specs}
        try:
            for spec in specs:
                try:
                    job, shape = self.create(spec)
                except KubernetesError as exc:
                    now = time.time()
                    yield spec, TrialOutcome(
                        status="error", wall_s=0.0, error=str(exc), started_at=now, ended_at=now,
                        placement={"backend": "kubernetes"}, output_dir=spec.trial_dir,
                    )  # fmt: skip
                    continue
                hooks.submitted(spec, {"backend": self.name, "job": job.metadata.name})
                hooks.started(spec)
                try:
                    ended, pod, why = self.wait(spec, job)
                    outcome = self.outcome(spec, ended, pod, why, shape)
                finally:
                    self.delete_trial(spec)
                # the next trial starts on a node without this one's pod (recorded, not measured)
                teardown = self._teardown(spec)
                if isinstance(outcome.placement.get("kubernetes"), dict):
                    outcome.placement["kubernetes"]["teardown"] = teardown
                yield spec, outcome
        finally:
            for run_id in run_ids:
                self.delete_run(run_id)


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


def _reason(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        with contextlib.suppress(Exception):
            import json

            return json.loads(body).get("message", str(body))[:500]
        return str(body)[:500]
    return str(exc)[:500]


@finder
def find_objects(run_id: str | None = None) -> list[Any]:
    """``cleanup`` finder: Jobs, Pods and ConfigMaps labelled by nearmetal in every namespace the current
    kubeconfig can list. No kubeconfig or no API server: nothing to find."""

    try:
        from kubernetes import client, config
    except ImportError:
        return []
    import os

    if not (os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().exists()):
        return []
    try:
        api = config.new_client_from_config()
    except Exception:
        return []
    selector = f"{RUN_LABEL}={k8s_name(run_id)}" if run_id else f"{MANAGED_LABEL}=nearmetal"
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    found: list[Leftover] = []
    listings = (
        ("kubernetes job", batch.list_job_for_all_namespaces, batch.delete_namespaced_job),
        ("kubernetes pod", core.list_pod_for_all_namespaces, core.delete_namespaced_pod),
        ("kubernetes configmap", core.list_config_map_for_all_namespaces, core.delete_namespaced_config_map),
    )
    for kind, lister, deleter in listings:
        try:
            items = lister(label_selector=selector, _request_timeout=10).items
        except Exception:
            continue
        for item in items:
            meta: Any = item.metadata
            name, ns = meta.name, meta.namespace

            def remove(deleter: Any = deleter, name: str = name, ns: str = ns) -> None:
                deleter(name, ns, propagation_policy="Background")

            owner = (meta.annotations or {}).get("nearmetal.io/run-id") or run_id
            found.append(Leftover(kind, f"{ns}/{name}", remove, run_id=owner, priority=10))
    return found


@register_backend("kubernetes")
def kubernetes_backend(plan: Any | None = None, **given: Any) -> KubernetesBackend:
    """batch/v1 Jobs: the plan's ``kubernetes:`` options, overridden by the command line's."""
    import importlib.util

    if importlib.util.find_spec("kubernetes") is None:  # not in the default install
        raise NearmetalError(
            "the kubernetes backend needs the Kubernetes Python client, which is not installed",
            fix="bash scripts/install.sh --with kubernetes (in a nearmetal checkout), or "
            "pip install 'nearmetal[kubernetes]'",
        )
    base = getattr(plan, "kubernetes", None) or KubernetesOptions()
    fields = set(KubernetesOptions.model_fields)
    options = KubernetesOptions.model_validate(
        {**base.model_dump(exclude_unset=True), **{k: v for k, v in given.items() if k in fields}}
    )
    return KubernetesBackend(options, kubeconfig=given.get("kubeconfig"), context=given.get("context"))
