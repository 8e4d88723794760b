"""nearmetal's own sharing programs run for real (flops, particles on numpy and torch CPU) and refuse CUDA
with the reason on a host without it (their parsers: tests/unit/test_sharing_workloads.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_program, write_plan

import nearmetal
from nearmetal.errors import MissingToolError
from nearmetal.host.gpu import cuda_status
from nearmetal.workloads.programs import program_path

CUDA_OK, CUDA_WHY = cuda_status()


# --- GPU paths on a host without CUDA ------------------------------------------------------------------
@pytest.mark.skipif(CUDA_OK, reason="this host has CUDA: the refusal is not reachable")
def test_gpu_plan_is_refused_before_anything_runs(tmp_path: Path, db_url: str, run_cli) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: gpu-here
        workloads:
          f: {kind: flops, params: {device: cuda, precision: tf32}}
          p: {kind: particles, params: {device: "cuda:0"}}
        variants: {bare: []}
        """,
    )
    with pytest.raises(MissingToolError) as info:
        nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    message = str(info.value)
    assert "a CUDA GPU is not available" in message and CUDA_WHY in message
    assert "f/bare" in message and "p/bare" in message and "nothing was run" in message
    proc = run_cli("run", str(plan))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "a CUDA GPU is not available" in proc.stderr


@pytest.mark.skipif(CUDA_OK, reason="this host has CUDA")
def test_the_programs_refuse_cuda_with_the_reason(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(program_path("flops")), "--backend=torch", "--device=cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "sees no CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr


def test_particles_track_the_same_particles_on_every_backend_and_worker_count() -> None:
    args = ("--particles=3000", "--turns=5", "--chunk=1000")
    one = run_program("particles", *args, "--workers=1")
    two = run_program("particles", *args, "--workers=2")
    torch_cpu = run_program("particles", *args, "--backend=torch")
    assert one["survived"] == two["survived"] == torch_cpu["survived"] == 3000
    assert one["checksum"] == two["checksum"]
    assert torch_cpu["checksum"] == pytest.approx(one["checksum"], rel=1e-12)


NUMPY_BEST = """
import time, numpy as np
a = np.random.default_rng(0).standard_normal((256, 256)); c = np.empty_like(a)
best = float("inf")
for _ in range(50):
    t0 = time.perf_counter(); np.matmul(a, a, out=c); best = min(best, time.perf_counter() - t0)
print(best)
"""


def test_flops_measures_what_numpy_does() -> None:
    """Measurement validity: the workload's fastest matmul is numpy's own, both single-threaded (generous
    bounds: the machine is shared; benchmarks/flops_cpu.py compares the steady-state mean)."""
    doc = run_program("flops", "--size=256", "--duration=0.5", "--warmup=0.1", "--threads=1")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", NUMPY_BEST], capture_output=True, text=True, timeout=120, env=env, check=True
    )
    numpy_best = float(proc.stdout)
    ours_best = doc["best_sample_s"] / doc["iterations_per_sample"]
    assert 1 / 3 < ours_best / numpy_best < 3
    flops = 2 * 256**3 * doc["iterations"]
    assert doc["tflops"] == pytest.approx(flops / doc["elapsed_s"] / 1e12)
    assert doc["iterations"] >= 3 and doc["threads"] == 1


def test_a_plan_runs_the_cpu_forms(tmp_path: Path, db_url: str) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: cpu-forms
        workloads:
          flops: {kind: flops, params: {size: 128, duration_s: 0.3, warmup_s: 0.1, threads: 1}}
          particles: {kind: particles, params: {particles: 2000, turns: 5, workers: 1}}
          train: {kind: train, params: {dataset_size: 300, epochs: 1, warmup_epochs: 0, threads: 1}}
          ddp: {kind: ddp, params: {dataset_size: 300, epochs: 2, warmup_epochs: 0, workers: 2}}
        variants: {bare: []}
        repeats: 1
        timeout: 300s
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert [r.status for r in result.records] == ["ok"] * 4, [r.error for r in result.records]
    results = nearmetal.load_results(result.run_id, db=db_url)
    by_workload = {t.workload: t for t in results.trials}
    assert by_workload["ddp"].placement["ddp"]["world_size"] == 2
    assert by_workload["particles"].placement["workload"]["workers"] == 1
    rows = {r["workload"]: r for r in results.table()}
    assert rows["flops"]["metric"] == "tflops" and rows["flops"]["mean"] > 0
    assert rows["ddp"]["metric"] == "epoch_s" and rows["ddp"]["mean"] > 0
    # the epochs of a ddp trial are kept as its values
    _, values = results.store.metric_values(results.run_id, "epoch_s")
    assert len(values) == 2 + 1  # ddp's two epochs and train's one
