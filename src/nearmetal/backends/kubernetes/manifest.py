"""A trial as Kubernetes objects, built with the official client models and no API server: the workload's
processes rendered for the container, its inputs as a ConfigMap, the layers' pod settings (``podmaps``) and
the Job that runs the constant entry point (``protocol.ENTRYPOINT``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nearmetal.backends.kubernetes.api import (
    MANAGED_LABEL,
    RUN_LABEL,
    TRIAL_LABEL,
    KubeApi,
    KubernetesError,
    k8s_name,
)
from nearmetal.backends.kubernetes.protocol import COMMAND
from nearmetal.backends.podmaps import PodShape, pod_shape
from nearmetal.backends.spec import TrialSpec

WORKDIR = "/nearmetal/trial"
INPUTS = "/nearmetal/inputs"
MAX_INPUT_BYTES = 900 * 1024  # a ConfigMap holds at most 1 MiB


class PodManifests(KubeApi):
    """The Kubernetes backend's part that builds a trial's objects."""

    common_cpu: float | None

    def pull_policy(self) -> str:
        """The options' pull policy; for an image named ``localhost/…`` (built on the node, in no registry)
        ``Never`` unless the plan says otherwise: a missing image fails at once (ErrImageNeverPull) instead
        of retrying a pull that cannot succeed."""
        image = self.options.image or ""
        if "image_pull_policy" not in self.options.model_fields_set and image.startswith("localhost/"):
            return "Never"
        return self.options.image_pull_policy

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
            command=list(COMMAND),
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
