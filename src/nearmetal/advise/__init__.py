"""``nearmetal advise``: recommendations with reasons, and ready configuration to apply them."""

from nearmetal.advise.gpu_sharing import (
    FEATURES,
    MECHANISMS,
    USE_CASES,
    Recommendation,
    measured_sharing_losses,
    recommend,
)
from nearmetal.advise.manifests import (
    mig_layout_name,
    mig_parted_config,
    mig_parted_configmap,
    time_slicing_config,
    time_slicing_configmap,
    workload_manifest,
)

__all__ = [
    "FEATURES",
    "MECHANISMS",
    "USE_CASES",
    "Recommendation",
    "measured_sharing_losses",
    "mig_layout_name",
    "mig_parted_config",
    "mig_parted_configmap",
    "recommend",
    "time_slicing_config",
    "time_slicing_configmap",
    "workload_manifest",
]
