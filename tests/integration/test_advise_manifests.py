"""The GPU-sharing advisor's manifests are ones the Kubernetes OpenAPI schema (kubernetes-validate, strict) and
the official client's models accept, and the configs inside them parse as the device plugin and mig-parted
read them. Integration tier: the client is the ``kubernetes`` extra."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from kube_plans import validate

from nearmetal.advise import (
    mig_parted_config,
    mig_parted_configmap,
    time_slicing_configmap,
    workload_manifest,
)
from nearmetal.advise.manifests import DevicePluginConfig, MigPartedConfig
from nearmetal.host.gpu_profiles import GPU_MODELS


def test_time_slicing_configmap_and_a_job_on_the_shared_resource_validate() -> None:
    configmap = time_slicing_configmap(4)
    validate(configmap)
    inner = yaml.safe_load(configmap["data"]["slice-4"])
    DevicePluginConfig.model_validate(inner)
    sharing = inner["sharing"]["timeSlicing"]
    assert sharing["renameByDefault"] is True and sharing["failRequestsGreaterThanOne"] is True
    assert sharing["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    job = workload_manifest(
        "Job", "nvidia.com/gpu.shared", node_label=("nvidia.com/device-plugin.config", "slice-4")
    )
    validate(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu.shared": "1"}


def test_mig_parted_config_and_a_pod_on_a_mig_profile_validate() -> None:
    model = GPU_MODELS["A100-40GB"]
    layout = {"2g.10gb": 2, "1g.5gb": 3}
    config = mig_parted_config(model, layout)
    MigPartedConfig.model_validate(config)
    assert config["mig-configs"]["2x2g.10gb-3x1g.5gb"][0]["mig-devices"] == {"2g.10gb": 2, "1g.5gb": 3}
    assert config["mig-configs"]["disabled"] == [{"devices": "all", "mig-enabled": False}]
    configmap = mig_parted_configmap(model, layout)
    validate(configmap)
    assert yaml.safe_load(configmap["data"]["config.yaml"]) == config
    pod = workload_manifest("Pod", "nvidia.com/mig-2g.10gb")
    validate(pod)
    with pytest.raises(ValueError):
        mig_parted_config(model, {"3g.20gb": 3})


def test_a_broken_manifest_is_refused_by_the_validation() -> None:
    pod = workload_manifest("Pod", "nvidia.com/gpu.shared")
    pod["spec"]["containers"][0]["resourcez"] = pod["spec"]["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)
    with pytest.raises(ValueError):
        DevicePluginConfig.model_validate({"version": "v1", "sharing": {"timeSlicing": {"resources": []}}})
