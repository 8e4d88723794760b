"""Where the backends' option models went (kept for imports written before each backend owned its options):
``Resources`` is the plan's (``plan.backend_options``), ``parse_memory_mib`` is in ``units``, and each backend's
``Options`` sits beside it (``backends.slurm.options``, ``backends.kubernetes.options``)."""

from nearmetal.backends.kubernetes.options import KubernetesOptions
from nearmetal.backends.slurm.options import SlurmOptions
from nearmetal.plan.backend_options import SAFE_WORD, Resources, StrictOptions
from nearmetal.units import parse_memory_mib

__all__ = ["SAFE_WORD", "KubernetesOptions", "Resources", "SlurmOptions", "StrictOptions", "parse_memory_mib"]
