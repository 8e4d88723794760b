"""The Kubernetes API as the backend uses it: the client (from a kubeconfig), the labels every object of a
run carries, deleting a trial's or a run's objects by label, and the ``cleanup`` finder of leftovers."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from nearmetal.backends.base import RemoteBackend
from nearmetal.backends.kubernetes.options import KubernetesOptions
from nearmetal.backends.spec import TrialSpec
from nearmetal.errors import NearmetalError
from nearmetal.host.leftovers import Leftover, finder

RUN_LABEL = "nearmetal.io/run"
TRIAL_LABEL = "nearmetal.io/trial"
MANAGED_LABEL = "app.kubernetes.io/managed-by"


class KubernetesError(NearmetalError):
    """The API server refused or lost something; the message carries its words."""


def k8s_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1123 label from parts (run id, trial key): lower case, dashes, at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return name[:limit].rstrip("-")


class KubeApi(RemoteBackend):
    """The Kubernetes backend's part that talks to the API server."""

    options: KubernetesOptions
    kubeconfig: str | None
    context: str | None
    _api_client: Any | None

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

    def _pods(self, spec: TrialSpec) -> list[Any]:
        selector = f"{RUN_LABEL}={k8s_name(spec.run_id)},{TRIAL_LABEL}={k8s_name(spec.trial_key)}"
        return self._core().list_namespaced_pod(self.options.namespace, label_selector=selector).items


def api_reason(exc: Exception) -> str:
    """What the API server said (its JSON body's message), or the exception's text; at most 500 characters."""
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
