"""The Kubernetes backend up to its boundary: every Job it generates validates offline against the OpenAPI
schemas of current Kubernetes versions (kubernetes-validate, strict), the layers map to the pod settings they
stand for, and the container's entry point really runs here under /bin/sh. Submission, watch, logs and cleanup
against a real kube-apiserver + etcd are in test_kube_apiserver.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
from conftest import needs_tool
from helpers import write_plan

from nearmetal.backends.kubernetes import (
    ENTRYPOINT,
    LAYER_MAPPINGS,
    KubernetesBackend,
    KubernetesError,
    k8s_name,
    split_log,
)
from nearmetal.backends.options import KubernetesOptions
from nearmetal.errors import NearmetalError
from nearmetal.layers import LAYERS
from nearmetal.plan import load_plan
from nearmetal.runner import Runner, preflight, schedule
from nearmetal.store import Store
from nearmetal.studies import study_path
from nearmetal.workloads import get_workload
from nearmetal.workloads.base import TrialOutput

PY = sys.executable
IMAGE = "registry.example.org/nearmetal/workloads:2024.1"
# the newest schema versions kubernetes-validate ships (at least three minor versions)
VERSIONS = sorted(kubernetes_validate.utils.all_versions(), key=lambda v: tuple(map(int, v.split("."))))[-4:]

EVERY_POD_SETTING = """
name: k8s-everything
workloads:
  lammps: {kind: lammps, params: {ranks: 2, atoms: 4000, steps: 100}}
  stress: {kind: stress-ng, params: {stressor: cpu, workers: 2, ops: 100}}
variants:
  bare: []
  limit-1.2: [{layer: cpu-quota, cpus: 1.2}]
  limits: [{layer: pod, resources: limits, cpu: 2, memory: 2Gi}]
  requests-only: [{layer: pod, resources: requests, cpu: 2, memory: 2Gi}]
  no-resources: [{layer: pod, resources: none}]
  kata: [{layer: pod, runtime_class: kata-qemu}]
  kata-virtiofs: [{layer: pod, runtime_class: kata-qemu-virtiofs}]
  gvisor: [{layer: pod, runtime_class: gvisor}]
  userns:
    - layer: pod
      host_users: false
      run_as_user: 1000
      run_as_non_root: true
      allow_privilege_escalation: false
      capabilities_drop: [ALL]
      seccomp: RuntimeDefault
  placed: [{layer: pod, node_selector: {node.kubernetes.io/instance-type: hpc7g.4xlarge}, nodes: [node-1, node-2]}]
  gpu: [{layer: pod, gpus: 1}]
  gpu-shared: [{layer: pod, gpu_shared: 2}]
  mig: [{layer: pod, mig_profile: 1g.5gb}]
  volumes:
    - layer: pod
      volumes:
        - {name: scratch, mount_path: /scratch, size_limit: 1Gi}
        - {name: shm, mount_path: /dev/shm, medium: Memory, size_limit: 512Mi}
        - {name: cvmfs, mount_path: /cvmfs, type: pvc, claim: cvmfs, read_only: true, mount_propagation: HostToContainer}
baseline: bare
repeats: 1
timeout: 120s
"""


def _specs(tmp_path: Path, plan_path: Path, backend: KubernetesBackend):
    loaded = load_plan(plan_path)
    runner = Runner(loaded, Store(f"sqlite:///{tmp_path / 'k.db'}"), tmp_path / "runs", backend=backend)
    return loaded, [runner.trial_spec(t) for t in schedule(loaded.cells, "sequential", 0, 0, 1, 1)]


def _job_of(manifests):
    return next(m for m in manifests if m["kind"] == "Job")


@pytest.fixture
def backend() -> KubernetesBackend:
    return KubernetesBackend(KubernetesOptions(image=IMAGE, namespace="research"))


def test_every_generated_manifest_validates_against_current_schemas(tmp_path: Path, backend) -> None:
    assert len(VERSIONS) >= 3
    _, specs = _specs(tmp_path, write_plan(tmp_path, EVERY_POD_SETTING), backend)
    checked = 0
    for spec in specs:
        for manifest in backend.manifests(spec):
            for version in VERSIONS:
                kubernetes_validate.validate(manifest, version, strict=True)
                checked += 1
    assert checked >= len(specs) * len(VERSIONS) * 1


def test_shipped_cpu_quota_study_becomes_valid_jobs(tmp_path: Path, backend) -> None:
    _, specs = _specs(tmp_path, study_path("cpu-quota"), backend)
    for spec in specs:
        manifests = backend.manifests(spec)
        for manifest in manifests:
            kubernetes_validate.validate(manifest, VERSIONS[-1], strict=True)
        job = _job_of(manifests)
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
def test_the_entry_point_runs_the_program_and_returns_its_files_in_the_log(tmp_path: Path) -> None:
    # the container's script, run for real by /bin/sh here: inputs copied, argv run, new files in the log
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "input.txt").write_text("given\n")
    work = tmp_path / "work"
    work.mkdir()
    argv = [
        "stress-ng",
        "--cpu",
        "1",
        "--cpu-ops",
        "50",
        "--metrics-brief",
        "--yaml",
        str(work / "stress-ng.yaml"),
    ]
    proc = subprocess.run(
        ["/bin/sh", "-c", ENTRYPOINT, "nearmetal-trial", *argv],
        cwd=work,
        env={**os.environ, "NEARMETAL_INPUTS": str(inputs)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    stdout, files = split_log(proc.stdout + proc.stderr)
    assert set(files) == {"stress-ng.yaml"}
    assert files["stress-ng.yaml"] == (work / "stress-ng.yaml").read_bytes()
    (tmp_path / "stress-ng.yaml").write_bytes(files["stress-ng.yaml"])
    metrics = get_workload("stress-ng").parse(
        TrialOutput(stdout=stdout, stderr="", files={"stress-ng.yaml": tmp_path / "stress-ng.yaml"})
    )
    assert any(m.name == "bogo_ops_per_s" and m.value > 0 for m in metrics)
    # the program's exit code is the container's
    failing = subprocess.run(
        ["/bin/sh", "-c", ENTRYPOINT, "nearmetal-trial", PY, "-c", "import sys; sys.exit(3)"],
        cwd=work,
        env={**os.environ, "NEARMETAL_INPUTS": str(inputs)},
        capture_output=True,
        timeout=60,
    )
    assert failing.returncode == 3


def test_a_layer_without_a_kubernetes_form_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    unmapped = sorted(set(LAYERS) - set(LAYER_MAPPINGS))
    if not unmapped:
        pytest.skip("every registered layer has a Kubernetes mapping")
    layer = unmapped[0]
    from nearmetal.layers import layer_class

    example = layer_class(layer).example_config()
    if example is None:
        pytest.skip(f"layer {layer} has no example configuration")
    import yaml

    plan = write_plan(
        tmp_path,
        f"""
        name: k8s-unmapped
        workloads:
          w: {{kind: stress-ng, params: {{stressor: cpu, workers: 1, ops: 10}}}}
        variants:
          bare: []
          other: [{yaml.safe_dump(example, default_flow_style=True).strip()}]
        """,
    )
    backend = KubernetesBackend(KubernetesOptions(image=IMAGE))
    with pytest.raises(KubernetesError, match="no Kubernetes form"):
        backend.check(load_plan(plan))


def test_the_pod_layer_is_refused_by_backends_that_cannot_apply_it(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: pod-local
        workloads:
          w: {kind: stress-ng, params: {stressor: cpu, workers: 1, ops: 10}}
        variants:
          bare: []
          kata: [{layer: pod, runtime_class: kata-qemu}]
        """,
    )
    with pytest.raises(NearmetalError, match="cannot run on the local backend"):
        preflight(load_plan(plan))


def test_no_image_and_bad_pod_settings_are_clear_errors(tmp_path: Path, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: pod-bad
        workloads:
          w: {kind: stress-ng, params: {stressor: cpu, workers: 1, ops: 10}}
        variants:
          bad: [{layer: pod, resources: limits}]
        """,
    )
    proc = run_cli("run", str(plan), "--backend", "kubernetes")
    assert proc.returncode == 2
    assert "plan.yaml:5 variants.bad[0]" in proc.stderr and "needs cpu and/or memory" in proc.stderr
    plan = write_plan(tmp_path, EVERY_POD_SETTING.replace("name: k8s-everything", "name: k8s-noimage"))
    proc = run_cli("run", str(plan), "--backend", "kubernetes")
    assert proc.returncode == 1 and "needs an image" in proc.stderr and "--image" in proc.stderr


def test_the_local_backend_refuses_the_runtime_class_layer(tmp_path: Path, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: rtc-local
        workloads:
          stress: {kind: stress-ng, params: {stressor: cpu, workers: 1, ops: 10}}
        variants:
          bare: []
          crun: [{layer: runtime-class, name: crun}]
        """,
    )
    proc = run_cli("run", str(plan))
    assert proc.returncode != 0
    assert "runtime-class cannot run on the local backend" in proc.stderr
