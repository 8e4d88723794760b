"""`nearmetal advise` end to end: manifests written by the CLI validate, measured losses of a stored run
reach the recommendation, an impossible layout is refused in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from helpers import write_plan
from kube_plans import validate

import nearmetal
from nearmetal.advise import (
    recommend,
)
from nearmetal.advise.gpu_sharing import measured_sharing_losses
from nearmetal.advise.manifests import MigPartedConfig


def test_cli_writes_manifests_that_validate(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "manifests"
    proc = run_cli(
        "advise",
        "gpu-sharing",
        "--use-case",
        "simulation",
        "--card",
        "A100-40GB",
        "--mig-layout",
        "2x2g.10gb,3x1g.5gb",
        "--output-dir",
        str(out),
        "--json",
        check=True,
    )
    doc = json.loads(proc.stdout)
    assert doc["mechanism"] == "mig" and doc["mig_layout"] == {"2g.10gb": 2, "1g.5gb": 3}
    files = sorted(p.name for p in out.iterdir())
    assert files == ["job.yaml", "mig-parted-config.yaml", "mig-parted-configmap.yaml"]
    for name in ("job.yaml", "mig-parted-configmap.yaml"):
        validate(yaml.safe_load((out / name).read_text()))
    job = yaml.safe_load((out / "job.yaml").read_text())
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/mig.config": "2x2g.10gb-3x1g.5gb"}
    MigPartedConfig.model_validate(yaml.safe_load((out / "mig-parted-config.yaml").read_text()))
    # stdout of the plain form is only Kubernetes objects
    plain = run_cli("advise", "gpu-sharing", "-u", "notebooks", "-c", "T4", check=True).stdout
    docs = [d for d in yaml.safe_load_all(plain.split("kubectl apply -f -", 1)[1].split("\n", 1)[1]) if d]
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job"]
    for d in docs:
        validate(d)


def test_cli_refuses_an_impossible_layout_in_one_line(run_cli) -> None:
    proc = run_cli(
        "advise", "gpu-sharing", "-u", "simulation", "-c", "A100-40GB", "--mig-layout", "3x3g.20gb"
    )
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "3g.20gb" in proc.stderr
    tables = run_cli("advise", "gpu-sharing", check=True).stdout
    assert "Hardware isolation" in tables and "CI runners" in tables


def test_measured_losses_from_a_stored_run_reach_the_recommendation(tmp_path: Path, db_url: str) -> None:
    # a stored run of a study named time-slicing (CPU processes stand in for GPU ones on this machine)
    py = sys.executable
    plan = write_plan(
        tmp_path,
        f"""
        name: time-slicing
        workloads:
          burn: {{kind: command, params: {{argv: ["{py}", "-c", "import time; time.sleep(0.05)"]}}}}
        variants:
          passthrough: []
          shared-x2: {{layers: [], params: {{burn.argv: ["{py}", "-c", "import time; time.sleep(0.8)"]}}}}
        baseline: passthrough
        repeats: 3
    """,
    )
    run_id = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs").run_id
    measured = measured_sharing_losses(db_url)
    assert [m.variant for m in measured] == ["shared-x2"] and measured[0].run_id == run_id
    assert measured[0].mechanism == "time-slicing" and measured[0].loss_pct > 20
    rec = recommend("ci-runners", "A100-40GB", measured=measured)
    assert rec.evidence[0].startswith(f"measured here: run {run_id}")
