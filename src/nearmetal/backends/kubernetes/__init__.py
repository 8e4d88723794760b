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

The parts, one module each: ``options`` (what a plan and the command line may set), ``protocol`` (the
container's entry point and the log it writes), ``manifest`` (a trial's Job and ConfigMap, pure), ``api``
(the client, deleting a trial's or a run's objects by label, the ``cleanup`` finder), ``watch`` (following
a trial's Pod quietly until it ends), ``nodewindow`` (the node around a pod trial: outside CPU, the pod's
cgroup, its teardown), ``outcome`` (the finished pod's log and evidence → a ``TrialOutcome``) and
``backend`` (creating a trial's objects, the loop that puts the parts together).
"""

from nearmetal.backends.kubernetes.api import (
    MANAGED_LABEL,
    RUN_LABEL,
    TRIAL_LABEL,
    KubernetesError,
    find_objects,
    k8s_name,
)
from nearmetal.backends.kubernetes.backend import KubernetesBackend
from nearmetal.backends.kubernetes.manifest import INPUTS, MAX_INPUT_BYTES, WORKDIR
from nearmetal.backends.kubernetes.options import KubernetesOptions
from nearmetal.backends.kubernetes.protocol import DONE_MARK, END_MARK, ENTRYPOINT, FILE_MARK, split_log
from nearmetal.backends.podmaps import LAYER_MAPPINGS

__all__ = [
    "DONE_MARK",
    "END_MARK",
    "ENTRYPOINT",
    "FILE_MARK",
    "INPUTS",
    "LAYER_MAPPINGS",
    "MANAGED_LABEL",
    "MAX_INPUT_BYTES",
    "RUN_LABEL",
    "TRIAL_LABEL",
    "WORKDIR",
    "KubernetesBackend",
    "KubernetesError",
    "KubernetesOptions",
    "find_objects",
    "k8s_name",
    "split_log",
]
