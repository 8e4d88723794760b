"""The Kubernetes backend: a Job per trial, one at a time (trials must not overlap on a node), watched until
its Pod ends, its outcome collected, every object deleted on every exit path."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from nearmetal.backends.base import RemoteHooks, register_backend
from nearmetal.backends.kubernetes.api import KubernetesError, api_reason
from nearmetal.backends.kubernetes.manifest import PodManifests
from nearmetal.backends.kubernetes.options import KubernetesOptions
from nearmetal.backends.kubernetes.outcome import PodOutcomes
from nearmetal.backends.podmaps import LAYER_MAPPINGS, PodShape, common_cpu_request
from nearmetal.backends.spec import TrialOutcome, TrialSpec
from nearmetal.errors import NearmetalError
from nearmetal.plan.backend_options import Cli

if TYPE_CHECKING:
    from nearmetal.plan import LoadedPlan


@register_backend
class KubernetesBackend(PodOutcomes, PodManifests):
    """Create a Job per trial, watch it and its Pod, collect the log, delete everything by label."""

    name = "kubernetes"
    summary = "Jobs"
    Options = KubernetesOptions
    cli_only = (
        Cli("--kubeconfig", key="kubeconfig", help="kubeconfig file (default: KUBECONFIG or ~/.kube/config)"),
    )

    @classmethod
    def from_plan(cls, plan: BaseModel | None = None, **given: Any) -> KubernetesBackend:
        """batch/v1 Jobs: the plan's ``kubernetes:`` options, overridden by the command line's."""
        import importlib.util

        if importlib.util.find_spec("kubernetes") is None:  # not in the default install
            raise NearmetalError(
                "the kubernetes backend needs the Kubernetes Python client, which is not installed",
                fix="bash scripts/install.sh --with kubernetes (in a nearmetal checkout), or "
                "pip install 'nearmetal[kubernetes]'",
            )
        options = cls.options_from(plan, given)
        return cls(options, kubeconfig=given.get("kubeconfig"), context=given.get("context"))

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
        self._node_evidence = {}
        # trial key -> the node window of its pod (podnoise), its pod cgroup, the API calls its wait made
        self._windows = {}
        self._cgroups = {}
        self._calls = {}
        # trial key -> when its Job was created, its pod first seen Running and seen ended (monotonic)
        self._timeline = {}
        # the CPU request every pod of the plan shares (``prepare``; options.fair_requests)
        self.common_cpu = None

    def options_record(self) -> dict[str, Any]:
        record: dict[str, Any] = self.options.model_dump(mode="json")
        for attr in ("kubeconfig", "context"):
            if getattr(self, attr, None):
                record[attr] = getattr(self, attr)
        return record

    # --- checks before anything runs -------------------------------------------------------------------
    def prepare(self, loaded: LoadedPlan) -> None:
        """What the backend learns from the whole plan before building any pod: the CPU request its pods
        share (fair variants: the only difference between them is the limit)."""
        self.common_cpu = common_cpu_request(loaded.cells) if self.options.fair_requests else None

    def check(self, loaded: LoadedPlan) -> None:
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
                f"cannot use namespace {self.options.namespace!r}: {api_reason(exc)}",
                fix="check --kubeconfig/--namespace and that the API server answers",
            ) from None

    # --- creating a trial's objects ---------------------------------------------------------------------
    def create(self, spec: TrialSpec) -> tuple[Any, PodShape]:
        job, config_map, shape = self.build(spec)
        ns = self.options.namespace
        try:
            if config_map is not None:
                self._core().create_namespaced_config_map(ns, config_map)
            created = self._batch().create_namespaced_job(ns, job)
        except Exception as exc:
            self.delete_trial(spec)
            raise KubernetesError(f"the API server refused the trial's Job: {api_reason(exc)}") from None
        return created, shape

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
