"""The Kubernetes backend's manifests and its use of the client, offline: every Job it generates validates
against the OpenAPI schemas of the newest Kubernetes versions kubernetes-validate ships (strict), the layers map
to the pod settings they stand for, and ``wait`` lists a trial's pods once and then follows one watch (the
client's own watch over a scripted response).

Integration tier: manifests are built with the client's models (the ``kubernetes`` extra, which the unit tier
runs without) and the validation takes ~20 s on 2 cores."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from conftest import needs_tool
from helpers import write_plan
from kube_plans import EVERY_POD_SETTING, IMAGE

from nearmetal.backends.kubernetes import KubernetesBackend, KubernetesOptions, k8s_name
from nearmetal.layers import LAYERS
from nearmetal.plan import load_plan
from nearmetal.run.runner import Runner, schedule
from nearmetal.store import Store
from nearmetal.studies import study_path

# the newest schema versions kubernetes-validate ships (at least three minor versions)
VERSIONS = sorted(kubernetes_validate.utils.all_versions(), key=lambda v: tuple(map(int, v.split("."))))[-4:]


def _job_of(manifests):
    return next(m for m in manifests if m["kind"] == "Job")


def _specs(tmp_path: Path, plan_path: Path, backend: KubernetesBackend):
    loaded = load_plan(plan_path)
    runner = Runner(loaded, Store(f"sqlite:///{tmp_path / 'k.db'}"), tmp_path / "runs", backend=backend)
    return loaded, [runner.trial_spec(t) for t in schedule(loaded.cells, "sequential", 0, 0, 1, 1)]


@pytest.fixture
def backend() -> KubernetesBackend:
    return KubernetesBackend(KubernetesOptions(image=IMAGE, namespace="research"))


def test_every_generated_manifest_validates_against_current_schemas(tmp_path: Path, backend) -> None:
    assert len(VERSIONS) >= 3
    _, specs = _specs(tmp_path, write_plan(tmp_path, EVERY_POD_SETTING), backend)
    validated: set[tuple[str, str, str]] = set()
    for spec in specs:
        manifests = backend.manifests(spec)
        assert any(m["kind"] == "Job" for m in manifests), spec.trial_key
        for manifest in manifests:
            for version in VERSIONS:
                kubernetes_validate.validate(manifest, version, strict=True)
                validated.add((spec.trial_key, manifest["kind"], version))
    # every trial's Job was validated against every version (a spec without manifests would be missing)
    assert {(key, v) for key, kind, v in validated if kind == "Job"} == {
        (spec.trial_key, v) for spec in specs for v in VERSIONS
    }


def test_the_shipped_cpu_quota_studys_jobs_validate(tmp_path: Path, backend) -> None:
    _, specs = _specs(tmp_path, study_path("cpu-quota"), backend)
    assert specs
    for spec in specs:
        for manifest in backend.manifests(spec):
            kubernetes_validate.validate(manifest, VERSIONS[-1], strict=True)


def test_shipped_cpu_quota_study_becomes_jobs_with_its_quota_as_a_cpu_limit(tmp_path: Path, backend) -> None:
    # that these Jobs validate against the API's schemas: tests/integration/test_kubernetes_manifests.py
    _, specs = _specs(tmp_path, study_path("cpu-quota"), backend)
    for spec in specs:
        job = _job_of(backend.manifests(spec))
        container = job["spec"]["template"]["spec"]["containers"][0]
        if spec.variant == "bare-metal":
            assert "resources" not in container
        else:
            # the quota the local layer writes is what a pod CPU limit writes
            cpus = {"limit-1.6": "1600m", "limit-1.2": "1200m", "limit-0.8": "800m"}[spec.variant]
            assert container["resources"] == {"limits": {"cpu": cpus}, "requests": {"cpu": cpus}}


def test_layers_map_to_the_pod_settings_they_stand_for(tmp_path: Path, backend) -> None:
    _, specs = _specs(tmp_path, write_plan(tmp_path, EVERY_POD_SETTING), backend)
    jobs = {s.variant: _job_of(backend.manifests(s)) for s in specs if s.workload == "stress"}

    def pod(variant):
        return jobs[variant]["spec"]["template"]["spec"]

    def container(variant):
        return pod(variant)["containers"][0]

    assert container("limits")["resources"] == {
        "limits": {"cpu": "2", "memory": "2048Mi"},
        "requests": {"cpu": "2", "memory": "2048Mi"},
    }
    assert container("requests-only")["resources"] == {"requests": {"cpu": "2", "memory": "2048Mi"}}
    assert "resources" not in container("no-resources")
    assert pod("kata")["runtimeClassName"] == "kata-qemu"
    assert pod("kata-virtiofs")["runtimeClassName"] == "kata-qemu-virtiofs"
    assert pod("gvisor")["runtimeClassName"] == "gvisor"
    assert pod("userns")["hostUsers"] is False
    assert container("userns")["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod("placed")["nodeSelector"] == {"node.kubernetes.io/instance-type": "hpc7g.4xlarge"}
    term = pod("placed")["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["node-1", "node-2"]
    assert container("gpu")["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert container("gpu-shared")["resources"]["limits"] == {"nvidia.com/gpu.shared": "2"}
    assert container("mig")["resources"]["limits"] == {"nvidia.com/mig-1g.5gb": "1"}
    vols = {v["name"]: v for v in pod("volumes")["volumes"]}
    assert vols["scratch"]["emptyDir"] == {"sizeLimit": "1024Mi"}
    assert vols["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "512Mi"}
    assert vols["cvmfs"]["persistentVolumeClaim"] == {"claimName": "cvmfs", "readOnly": True}
    mounts = {m["name"]: m for m in container("volumes")["volumeMounts"]}
    assert mounts["cvmfs"] == {
        "mountPath": "/cvmfs",
        "mountPropagation": "HostToContainer",
        "name": "cvmfs",
        "readOnly": True,
    }
    # every object carries the run's label, names are DNS labels, a failed trial is not retried
    for job in jobs.values():
        assert job["metadata"]["labels"]["nearmetal.io/run"] == k8s_name(specs[0].run_id)
        assert len(job["metadata"]["name"]) <= 63
        assert job["spec"]["backoffLimit"] == 0
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_resources_mode_is_recorded_with_the_trial(tmp_path: Path, backend) -> None:
    _, specs = _specs(tmp_path, write_plan(tmp_path, EVERY_POD_SETTING), backend)
    modes = {}
    for spec in specs:
        _, _, shape = backend.build(spec)
        modes[spec.variant] = shape.record()["resources_mode"]
    assert modes["limits"] == "limits" and modes["limit-1.2"] == "limits"
    assert (
        modes["requests-only"] == "requests" and modes["no-resources"] == "none" and modes["bare"] == "none"
    )


def test_lammps_inputs_travel_in_a_config_map(tmp_path: Path, backend) -> None:
    _, specs = _specs(tmp_path, write_plan(tmp_path, EVERY_POD_SETTING), backend)
    spec = next(s for s in specs if s.workload == "lammps")
    manifests = backend.manifests(spec)
    config_map = next(m for m in manifests if m["kind"] == "ConfigMap")
    assert "in.lj" in config_map["data"] and "pair_style" in config_map["data"]["in.lj"]
    job = _job_of(manifests)
    assert (
        job["spec"]["template"]["spec"]["volumes"][1]["configMap"]["name"] == config_map["metadata"]["name"]
    )


@needs_tool("stress-ng")
def test_fair_variants_give_every_pod_the_limited_pods_request(tmp_path: Path, backend) -> None:
    loaded, specs = _specs(tmp_path, study_path("cpu-quota"), backend)
    backend.prepare(loaded)  # what check() does before a run: the request every pod shares
    assert backend.common_cpu == 0.8
    for spec in specs:
        container = _job_of(backend.manifests(spec))["spec"]["template"]["spec"]["containers"][0]
        limit = {"bare-metal": None, "limit-1.6": "1600m", "limit-1.2": "1200m", "limit-0.8": "800m"}
        # the unlimited baseline is Burstable with the same request (cpu.shares 819) as every limited pod:
        # the only difference between the variants is the limit
        assert container["resources"]["requests"] == {"cpu": "800m"}, spec.variant
        assert container["resources"].get("limits") == (
            {"cpu": limit[spec.variant]} if limit[spec.variant] else None
        )
        assert backend.build(spec)[2].record()["common_cpu_request"] == "800m"
    # turned off, a variant without layers is a pod without resources (BestEffort), as before
    plain = KubernetesBackend(KubernetesOptions(image=IMAGE, fair_requests=False))
    plain.prepare(loaded)
    bare = next(s for s in specs if s.variant == "bare-metal")
    assert "resources" not in _job_of(plain.manifests(bare))["spec"]["template"]["spec"]["containers"][0]


def test_the_qos_study_shapes_one_pod_per_qos_class(tmp_path: Path, backend) -> None:
    loaded, specs = _specs(tmp_path, study_path("pod-qos"), backend)
    backend.prepare(loaded)
    assert backend.common_cpu is None  # the pod layers set the resources: nothing is added
    resources = {}
    for spec in specs:
        container = _job_of(backend.manifests(spec))["spec"]["template"]["spec"]["containers"][0]
        resources[spec.variant] = container.get("resources")
    assert resources == {
        "besteffort": None,
        "burstable-requests": {"requests": {"cpu": "800m"}},
        "burstable-limit": {"requests": {"cpu": "800m"}, "limits": {"cpu": "1200m"}},
        "guaranteed": {
            "requests": {"cpu": "1200m", "memory": "1024Mi"},
            "limits": {"cpu": "1200m", "memory": "1024Mi"},
        },
    }
    with pytest.raises(Exception, match="below the request"):
        LAYERS["pod"].Config.model_validate(
            {"layer": "pod", "resources": "requests", "cpu": 2, "cpu_limit": 1}
        )


class _WatchResponse:
    """What urllib3 returns for a watch request: newline-separated JSON events (the client reads stream())."""

    def __init__(self, events: list[dict], hold_s: float) -> None:
        self.events, self.hold_s = events, hold_s

    def stream(self, amt=None, decode_content=False):
        import json
        import time

        for event in self.events:
            yield (json.dumps(event) + "\n").encode()
        if not self.events:
            time.sleep(self.hold_s)  # the API server holds an idle watch open until its timeout

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def _pod(phase: str, version: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nm-trial-x", "uid": "00000000-aaaa-bbbb-cccc-27", "resourceVersion": version},
        "spec": {"containers": [{"name": "trial", "image": IMAGE}]},
        "status": {"phase": phase},
    }


class _PodApi:
    """The two calls ``wait`` may make for the trial's pods — a list, and a watch from a resourceVersion —
    answered from a script of watch streams, and every call recorded."""

    def __init__(self, listed: list[dict], streams: list[list[dict]], list_version: str = "100") -> None:
        self.listed, self.streams, self.list_version = listed, streams, list_version
        self.lists = 0
        self.watches: list[dict] = []

    def list_namespaced_pod(  # the client's signature; the return type tells the watch what it streams
        self,
        namespace,
        label_selector=None,
        watch=False,
        resource_version=None,
        timeout_seconds=None,
        _preload_content=True,
        _request_timeout=None,
    ):
        """:rtype: V1PodList"""  # what the client's watch reads to know the events' type
        from kubernetes import client

        if not watch:
            self.lists += 1
            api = client.ApiClient()
            items = [api._ApiClient__deserialize(p, "V1Pod") for p in self.listed]
            return client.V1PodList(
                items=items, metadata=client.V1ListMeta(resource_version=self.list_version)
            )
        self.watches.append({"resource_version": resource_version, "timeout_seconds": timeout_seconds})
        return _WatchResponse(self.streams.pop(0) if self.streams else [], hold_s=0.2)


def _watching(api: _PodApi, tmp_path: Path, pending_s: float = 30) -> tuple[KubernetesBackend, object]:
    backend = KubernetesBackend(KubernetesOptions(image=IMAGE, pending_timeout_s=pending_s))
    backend._core = lambda: api  # type: ignore[method-assign]
    _, specs = _specs(tmp_path, write_plan(tmp_path, EVERY_POD_SETTING), backend)
    job = type("Job", (), {"metadata": type("Meta", (), {"name": "nm-trial-x"})})()
    return backend, (specs[0], job)


def test_wait_lists_once_then_follows_one_watch_from_the_lists_version(tmp_path: Path) -> None:
    events = [
        {"type": "MODIFIED", "object": _pod("Running", "101")},
        {"type": "MODIFIED", "object": _pod("Succeeded", "102")},
    ]
    api = _PodApi([_pod("Pending", "100")], [events])
    backend, (spec, job) = _watching(api, tmp_path)
    ended, pod, why = backend.wait(spec, job)
    assert (ended, why, pod.metadata.resource_version) == ("Succeeded", "", "102")
    # one list, one watch from the list's resourceVersion: nothing is asked while the pod runs
    assert api.lists == 1 and [w["resource_version"] for w in api.watches] == ["100"]
    assert 25 <= api.watches[0]["timeout_seconds"] <= 31  # held open up to the pending deadline (30 s)
    assert backend._calls[spec.trial_key] == {"lists": 1, "watches": 1, "events": 2, "job_reads": 0}
    # a pod already ended when listed: no watch at all
    api = _PodApi([_pod("Failed", "100")], [])
    backend, (spec, job) = _watching(api, tmp_path)
    assert backend.wait(spec, job)[0] == "Failed" and api.watches == []


def test_wait_lists_again_when_the_watchs_version_is_too_old(tmp_path: Path) -> None:
    expired = {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "old"},
    }
    api = _PodApi(
        [_pod("Running", "100")], [[expired], [{"type": "MODIFIED", "object": _pod("Succeeded", "300")}]]
    )
    api.list_version = "250"
    backend, (spec, job) = _watching(api, tmp_path)
    assert backend.wait(spec, job)[0] == "Succeeded"
    assert api.lists == 2 and [w["resource_version"] for w in api.watches] == ["250", "250"]


def test_an_idle_watch_is_held_open_until_the_deadline_not_polled(tmp_path: Path) -> None:
    class _Batch:
        reads = 0

        def read_namespaced_job_status(self, name, namespace):
            _Batch.reads += 1
            return type("Job", (), {"status": None})()

    api = _PodApi([], [])  # no pod is ever created (no job controller)
    backend, (spec, job) = _watching(api, tmp_path, pending_s=1)
    backend._batch = lambda: _Batch()  # type: ignore[method-assign]
    ended, pod, why = backend.wait(spec, job)
    assert ended == "Pending" and pod is None and "no Pod was created" in why
    # the server holds each watch ~its timeout (here 0.2 s, ``hold_s``): a handful, not a busy loop; the Job is
    # read once, at the deadline
    assert api.lists == 1 and 1 <= len(api.watches) <= 8 and _Batch.reads == 1
