"""pod → the pod's own settings: resources mode (limits / requests only / none), GPUs, runtime class,
``hostUsers``, security context, node placement and volumes."""

from __future__ import annotations

from typing import Any

from nearmetal.backends.podmaps import PodShape, cpu_quantity, maps_layer, memory_quantity


@maps_layer("pod")
def map_pod(config: Any, shape: PodShape) -> None:
    from kubernetes import client

    shape.resources_mode = config.resources
    # resources the plan set itself (the QoS study's forms) are kept as they are: no common request
    shape.resources_fixed = shape.resources_fixed or bool({"resources", "cpu"} & config.model_fields_set)
    amounts: dict[str, str] = {}
    if config.cpu is not None:
        amounts["cpu"] = cpu_quantity(config.cpu)
    if config.memory is not None:
        amounts["memory"] = memory_quantity(config.memory)
    if config.resources in ("limits", "requests"):
        shape.requests.update(amounts)
    if config.resources == "limits":
        shape.limits.update(amounts)
    if config.cpu_limit is not None:
        shape.limits["cpu"] = cpu_quantity(config.cpu_limit)
    if config.cpu_limit is not None or (config.resources == "limits" and config.cpu is not None):
        shape.cpu_limit = config.cpu_limit or config.cpu
    # extended resources (devices) must be limits; requests default to them
    if config.gpus:
        shape.limits["nvidia.com/gpu"] = str(config.gpus)
    if config.gpu_shared:
        shape.limits["nvidia.com/gpu.shared"] = str(config.gpu_shared)
    if config.mig_profile:
        shape.limits[f"nvidia.com/mig-{config.mig_profile}"] = "1"
    if config.runtime_class:
        shape.runtime_class = config.runtime_class
    if config.host_users is not None:
        shape.host_users = config.host_users
    sec = shape.security
    for key in ("privileged", "run_as_user", "run_as_non_root", "allow_privilege_escalation"):
        if getattr(config, key) is not None:
            sec[key] = getattr(config, key)
    if config.capabilities_add or config.capabilities_drop:
        sec["capabilities"] = client.V1Capabilities(
            add=config.capabilities_add or None, drop=config.capabilities_drop or None
        )
    if config.seccomp:
        sec["seccomp_profile"] = client.V1SeccompProfile(type=config.seccomp)
    shape.node_selector.update(config.node_selector)
    shape.required_nodes += config.nodes
    for vol in config.volumes:
        if vol.type == "emptyDir":
            source = client.V1Volume(
                name=vol.name,
                empty_dir=client.V1EmptyDirVolumeSource(
                    medium=vol.medium or None,
                    size_limit=memory_quantity(vol.size_limit) if vol.size_limit else None,
                ),
            )
        elif vol.type == "pvc":
            source = client.V1Volume(
                name=vol.name,
                persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                    claim_name=vol.claim, read_only=vol.read_only or None
                ),
            )
        else:
            source = client.V1Volume(name=vol.name, host_path=client.V1HostPathVolumeSource(path=vol.path))
        shape.volumes.append(source)
        shape.mounts.append(
            client.V1VolumeMount(
                name=vol.name,
                mount_path=vol.mount_path,
                read_only=vol.read_only or None,
                mount_propagation=vol.mount_propagation,
            )
        )
