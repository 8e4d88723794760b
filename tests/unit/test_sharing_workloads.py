"""The flops, particles, train and ddp workloads: parsers on recorded outputs, parameter checks, GPU paths
refused with a reason on a host without CUDA, and the CPU programs run for real (small sizes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import run_program, write_plan
from paths import DATA

from nearmetal.errors import PlanError
from nearmetal.host.gpu import cuda_status
from nearmetal.plan import load_plan
from nearmetal.workloads import get_workload
from nearmetal.workloads.base import ParseError, TrialOutput, WorkloadContext
from nearmetal.workloads.flops import parse_dcgmproftester, steady_intervals

CUDA_OK, CUDA_WHY = cuda_status()
needs_cuda = pytest.mark.skipif(not CUDA_OK, reason=f"needs a CUDA GPU: {CUDA_WHY}")


def metrics_of(kind: str, name: str) -> dict[str, object]:
    return {m.name: m for m in get_workload(kind).parse_file(DATA / name)}


def output_of(name: str) -> TrialOutput:
    return TrialOutput(stdout=(DATA / name).read_text(), stderr="")


# --- parsers on recorded outputs -------------------------------------------------------------------------
def test_flops_program_outputs() -> None:
    doc = json.loads((DATA / "flops-numpy-fp64.txt").read_text().splitlines()[-1].split(" ", 1)[1])
    m = metrics_of("flops", "flops-numpy-fp64.txt")
    assert m["tflops"].unit == "TFLOPS" and m["tflops"].direction == "higher"
    # all the flops over all the time, not a mean of per-sample rates
    flops = 2 * 512**3 * doc["iterations"]
    assert m["tflops"].value == pytest.approx(flops / doc["elapsed_s"] / 1e12)
    # each sample is 2·n³ flops over its time: the best sample is the fastest matmul
    assert m["matmul_best_s"].value == pytest.approx(2 * 512**3 / max(doc["sample_tflops"]) / 1e12, rel=1e-6)
    bf16 = metrics_of("flops", "flops-torch-bf16.txt")
    assert bf16["tflops"].value > 0


@pytest.mark.parametrize(
    ("name", "precision", "expected"),
    [
        # the first interval is the ramp-up and is left out
        ("dcgmproftester11-fp32.txt", "fp32", [16.8791, 16.9016, 16.8703, 16.9048, 16.8882]),
        ("dcgmproftester-3.1-tensor.txt", "fp16-tensor", [165.917, 165.9717, 166.1002, 165.9805]),
        ("dcgmproftester12-3.3-fp64.txt", "fp64", [8.05, 8.06, 8.04]),
    ],
)
def test_dcgmproftester_output_of_three_dcgm_releases(
    name: str, precision: str, expected: list[float]
) -> None:
    found, per_gpu = parse_dcgmproftester((DATA / name).read_text())
    assert found == precision and list(per_gpu) == [0]
    m = metrics_of("flops", name)
    assert m["tflops"].values == pytest.approx(expected)
    assert m["tflops"].source == "dcgmproftester"


def test_dcgmproftester_ramp_up_interval_is_not_averaged_in() -> None:
    # NVIDIA/DCGM issue #239: dcgmproftester12 3.1.3 -t 1007, first interval "(0.0 gflops)"
    text = (DATA / "dcgmproftester12-3.1.3-fp32-rampup.txt").read_text()
    _, per_gpu = parse_dcgmproftester(text)
    assert len(per_gpu[0]) == 31 and per_gpu[0][0] == 0.0 and per_gpu[0][1] == pytest.approx(12.2382)
    m = metrics_of("flops", "dcgmproftester12-3.1.3-fp32-rampup.txt")
    assert len(m["tflops"].values) == 30 and min(m["tflops"].values) == pytest.approx(12.2382)
    assert m["tflops"].value == pytest.approx(sum(per_gpu[0][1:]) / 30)


def test_dcgmproftester_warm_up_rule() -> None:
    # leading intervals below half the median of the intervals after the first are warm-up
    assert steady_intervals([0.0, 3.1, 9.0, 12.2, 12.3, 12.2]) == [9.0, 12.2, 12.3, 12.2]
    # only leading ones: a low interval later (a neighbour's time slice) is a measurement
    assert steady_intervals([0.0, 12.2, 3.0, 12.3]) == [12.2, 3.0, 12.3]
    # a run that is low throughout (4 time-sliced copies, 20.4 gflops each) keeps all but the first
    assert steady_intervals([0.0204, 0.0204, 0.0204]) == [0.0204, 0.0204]
    # one interval: kept; and at least one is always kept
    assert steady_intervals([5.0]) == [5.0]
    assert steady_intervals([0.0, 0.0, 12.0]) == [12.0]


def test_dcgmproftester_without_results_or_with_mixed_tests_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="did not run a test"):
        parse_dcgmproftester("Skipping CreateDcgmGroups() since DCGM validation is disabled\n")
    mixed = (DATA / "dcgmproftester11-fp32.txt").read_text() + (
        DATA / "dcgmproftester12-3.3-fp64.txt"
    ).read_text()
    with pytest.raises(ParseError, match="mixes fp32 and fp64"):
        parse_dcgmproftester(mixed)


def test_particles_train_ddp_outputs() -> None:
    p = metrics_of("particles", "particles-numpy.txt")
    assert p["tracking_s"].direction == "lower" and p["survived"].value == 10000
    assert p["particle_turns_per_s"].value == pytest.approx(10000 * 10 / p["tracking_s"].value)
    t = metrics_of("train", "train-cpu.txt")
    assert len(t["epoch_s"].values) == 2 and t["train_s"].value == pytest.approx(sum(t["epoch_s"].values))
    assert 0 <= t["accuracy"].value <= 1
    d = metrics_of("ddp", "ddp-gloo-2ranks.txt")
    assert len(d["epoch_s"].values) == 3 and d["first_epoch_s"].value > 0
    placement = get_workload("ddp").placement(output_of("ddp-gloo-2ranks.txt"))["ddp"]
    assert placement["world_size"] == 2 and [r["rank"] for r in placement["ranks"]] == [0, 1]
    # both ranks were pinned to CPU 1: one "node" (a CPU) with two ranks
    assert [r["cpus"] for r in placement["ranks"]] == [[1], [1]]
    assert placement["topology"] == "2" and placement["topology_hosts"] == "2"


def test_truncated_or_foreign_output_is_a_clear_parse_error() -> None:
    text = (DATA / "train-cpu.txt").read_text()
    with pytest.raises(ParseError, match="did not finish"):
        get_workload("train").parse(TrialOutput(stdout=text.split("NEARMETAL_RESULT")[0], stderr=""))
    with pytest.raises(ParseError, match="comes from 'train', not the flops program"):
        get_workload("flops").parse(TrialOutput(stdout=text, stderr=""))


# --- parameters ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{precision: tf32}", "tf32 is a GPU tensor-core mode"),
        ("{precision: fp16, backend: numpy}", "backend numpy runs fp64 or fp32 on the CPU only"),
        ("{backend: dcgmproftester}", "dcgmproftester loads a GPU"),
        ("{precision: fp16-tensor, device: cuda, backend: torch}", "fp16-tensor is dcgmproftester's"),
        ("{device: gpu0}", "'gpu0' is not a device: use cpu, cuda or cuda:N"),
    ],
)
def test_flops_parameter_errors_name_the_plan_line(tmp_path: Path, params: str, message: str) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: bad
        workloads:
          f:
            kind: flops
            params: {params}
        variants: {{bare: []}}
        """,
    )
    with pytest.raises(PlanError) as info:
        load_plan(plan)
    assert message in str(info.value) and "plan.yaml:" in str(info.value)


def test_ddp_pin_must_give_one_cpu_per_rank(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: bad
        workloads:
          d: {kind: ddp, params: {workers: 4, pin: [0, 1]}}
        variants: {bare: []}
        """,
    )
    with pytest.raises(PlanError, match="pin lists 2 CPUs for 4 workers"):
        load_plan(plan)


def test_neighbours_are_told_to_run_longer() -> None:
    def longer(kind: str, **params: object) -> dict[str, object]:
        workload = get_workload(kind)
        return workload.longer_params(workload.Params(**params), 10)

    assert longer("flops", duration_s=2.0) == {"duration_s": 20.0}
    assert longer("particles", turns=15) == {"turns": 150}
    assert longer("train", epochs=2) == {"epochs": 20}
    assert longer("ddp", epochs=3) == {"epochs": 30}


def test_programs_are_started_with_this_python_and_a_ready_line(tmp_path: Path) -> None:
    ctx = WorkloadContext(trial_dir=tmp_path, is_root=False)
    wl = get_workload("ddp")
    (spec,) = wl.processes(wl.Params(workers=3, pin=[0, 0, 1]), ctx)
    assert spec.argv[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=3" in spec.argv and "--pin=0,0,1" in spec.argv
    assert spec.ready_pattern == "nearmetal-ready"
    fl = get_workload("flops")
    (spec,) = fl.processes(fl.Params(precision="fp16", device="cuda:1", backend="dcgmproftester"), ctx)
    assert spec.argv[1:] == ["--no-dcgm-validation", "-t", "1008", "-d", "6", "-i", "1"]


# --- the CPU programs, for real ------------------------------------------------------------------------
@needs_cuda
def test_flops_on_the_gpu_reaches_the_cublas_rate() -> None:
    import torch

    doc = run_program(
        "flops", "--backend=torch", "--device=cuda", "--precision=fp32", "--size=4096", "--duration=2"
    )
    a = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ a
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    assert doc["tflops"] >= 0.9 * (2 * 4096**3 / best / 1e12)
