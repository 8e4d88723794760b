"""Ready-to-apply configuration for GPU sharing on Kubernetes with the NVIDIA GPU operator (seed 001 part
2): the device plugin's time-slicing ConfigMap, a mig-parted configuration, and a Pod or Job that asks for
the shared resource. Everything is returned as plain dicts (``yaml.safe_dump`` them); the embedded
configuration files are checked against models of the upstream formats before they are emitted."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nearmetal.host.gpu_profiles import GpuModel, layout_problem, normalise_profile

SHARED_RESOURCE = "nvidia.com/gpu.shared"  # what renameByDefault: true makes of nvidia.com/gpu


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- the NVIDIA device plugin's config file (version v1), sharing.timeSlicing part --------------------
class ReplicatedResource(_Strict):
    name: str = Field(pattern=r"^nvidia\.com/(gpu|mig-\d+g\.\d+gb(\+me)?)$")
    rename: str | None = None
    devices: Literal["all"] | list[int | str] | None = None
    replicas: int = Field(ge=2)


class TimeSlicing(_Strict):
    renameByDefault: bool = False
    failRequestsGreaterThanOne: bool = False
    resources: list[ReplicatedResource] = Field(min_length=1)


class Sharing(_Strict):
    timeSlicing: TimeSlicing


class DevicePluginConfig(_Strict):
    version: Literal["v1"] = "v1"
    flags: dict[str, Any] | None = None
    sharing: Sharing


# --- mig-parted's config file (version v1) -------------------------------------------------------------
class MigConfigSpec(_Strict):
    device_filter: str | list[str] | None = Field(None, alias="device-filter")
    devices: Literal["all"] | list[int]
    mig_enabled: bool = Field(alias="mig-enabled")
    mig_devices: dict[str, int] | None = Field(None, alias="mig-devices")

    @field_validator("mig_devices")
    @classmethod
    def _profiles(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        for name, count in (value or {}).items():
            normalise_profile(name)
            if count < 1:
                raise ValueError(f"{name}: count must be at least 1")
        return value


class MigPartedConfig(_Strict):
    version: Literal["v1"] = "v1"
    mig_configs: dict[str, list[MigConfigSpec]] = Field(alias="mig-configs")


def _configmap(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def _literal_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def time_slicing_config(
    replicas: int, resource: str = "nvidia.com/gpu", rename_by_default: bool = True
) -> dict[str, Any]:
    """The device plugin config that splits ``resource`` into ``replicas`` time-sliced shares."""
    config = {
        "version": "v1",
        "sharing": {
            "timeSlicing": {
                # nvidia.com/gpu.shared: pods that asked for a whole GPU do not land on a shared one
                "renameByDefault": rename_by_default,
                # a request for 2 shares would get 2 slices of one card, not 2 cards: refuse it
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": resource, "replicas": replicas}],
            }
        },
    }
    DevicePluginConfig.model_validate(config)
    return config


def time_slicing_configmap(
    replicas: int, namespace: str = "kube-system", name: str = "nvidia-time-slicing-config"
) -> dict[str, Any]:
    """The ConfigMap the GPU operator's device plugin reads (``devicePlugin.config.name``); each key is a
    profile a node selects with the label ``nvidia.com/device-plugin.config=<key>``."""
    return _configmap(name, namespace, {f"slice-{replicas}": _literal_yaml(time_slicing_config(replicas))})


def mig_layout_name(layout: dict[str, int]) -> str:
    """``{"2g.10gb": 2, "1g.5gb": 3}`` → ``2x2g.10gb-3x1g.5gb`` (the naming of the seed's mig config)."""
    parts = sorted(layout.items(), key=lambda kv: (-int(normalise_profile(kv[0]).split("g")[0]), kv[0]))
    return "-".join(f"{count}x{normalise_profile(name)}" for name, count in parts)


def mig_parted_config(model: GpuModel, layout: dict[str, int]) -> dict[str, Any]:
    """A mig-parted config with ``disabled`` and the layout (every GPU of the node partitioned alike)."""
    problem = layout_problem(model, layout)
    if problem:
        raise ValueError(f"MIG layout {layout} is not valid: {problem}")
    config = {
        "version": "v1",
        "mig-configs": {
            "disabled": [{"devices": "all", "mig-enabled": False}],
            mig_layout_name(layout): [
                {
                    "devices": "all",
                    "mig-enabled": True,
                    "mig-devices": {normalise_profile(n): c for n, c in layout.items()},
                }
            ],
        },
    }
    MigPartedConfig.model_validate(config)
    return config


def mig_parted_configmap(
    model: GpuModel, layout: dict[str, int], namespace: str = "kube-system", name: str = "nvidia-mig-config"
) -> dict[str, Any]:
    """The ConfigMap the GPU operator's MIG manager reads (``migManager.config.name``); a node picks a
    layout with the label ``nvidia.com/mig.config=<layout name>``."""
    return _configmap(name, namespace, {"config.yaml": _literal_yaml(mig_parted_config(model, layout))})


def workload_manifest(
    kind: Literal["Pod", "Job"],
    resource: str,
    name: str = "gpu-workload",
    namespace: str = "default",
    image: str = "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
    command: list[str] | None = None,
    node_label: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A Pod or Job with one container that asks for one unit of ``resource`` (``nvidia.com/gpu.shared``,
    ``nvidia.com/mig-2g.10gb`` …), optionally pinned to nodes carrying ``node_label``."""
    container = {
        "name": "main",
        "image": image,
        "command": command or ["nvidia-smi", "-L"],
        # a quantity is a string in the API (the Python client's models refuse a bare int)
        "resources": {"limits": {resource: "1"}},
    }
    pod_spec: dict[str, Any] = {"containers": [container], "restartPolicy": "Never"}
    if node_label:
        pod_spec["nodeSelector"] = {node_label[0]: node_label[1]}
    if kind == "Pod":
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": pod_spec,
        }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}},
    }


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the config files inside ConfigMaps) as ``|`` blocks, as people write them."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_BlockDumper.add_representer(str, _str_representer)


def dump_yaml(*docs: dict[str, Any]) -> str:
    """One or more documents as YAML (``---`` between them), config files inside ConfigMaps as blocks."""
    return yaml.dump_all(list(docs), Dumper=_BlockDumper, sort_keys=False, default_flow_style=False)
