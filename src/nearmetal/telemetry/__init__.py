"""What happened around a trial, and the machine it happened on.

The default trial source is the kernel's own accounting: ``wait4`` returns the resource usage of the
process and all descendants it reaped, which costs nothing while the trial runs. A sampler thread adds
what rusage cannot give (the summed memory of the whole process tree) at a low, measured rate.
"""

from nearmetal.telemetry.environment import capture_environment
from nearmetal.telemetry.process import TreeSampler, rusage_metrics

__all__ = ["TreeSampler", "capture_environment", "rusage_metrics"]
