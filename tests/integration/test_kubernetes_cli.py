"""The Kubernetes backend through the CLI: no image and bad pod settings are clear one-line errors; the local
backend refuses the runtime-class layer."""

from __future__ import annotations

from pathlib import Path

from helpers import write_plan
from kube_plans import EVERY_POD_SETTING


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
