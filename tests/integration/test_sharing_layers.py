"""The cpuset, colocate and gpu layers: cgroup layouts (v1 and v2), real cpusets and co-located neighbours
on this machine, and GPU selection up to the driver boundary (nvidia-smi -L recordings)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import is_root, nearmetal_cgroups
from helpers import write_plan
from paths import DATA

import nearmetal
from nearmetal.backends.local import LocalBackend
from nearmetal.errors import MissingToolError, NearmetalError
from nearmetal.host import cgroups
from nearmetal.host.gpu import parse_gpu_list
from nearmetal.layers.base import TrialContext
from nearmetal.layers.cpuset import CpusetConfig, CpusetLayer, choose_cpus
from nearmetal.layers.gpu import GpuConfig, GpuLayer, select_device
from nearmetal.workloads.base import ProcessSpec

PY = sys.executable


def cpuset_controller_here() -> bool:
    if not is_root():
        return False
    if (Path("/sys/fs/cgroup/cpuset") / "cgroup.procs").exists():
        return True
    controllers = Path("/sys/fs/cgroup/cgroup.controllers")
    return controllers.exists() and "cpuset" in controllers.read_text().split()


needs_cpuset = pytest.mark.skipif(not cpuset_controller_here(), reason="needs root and the cpuset controller")
two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")


# --- CPU lists and cgroup layouts ----------------------------------------------------------------------
def test_cpu_lists_round_trip() -> None:
    assert cgroups.parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert cgroups.format_cpu_list([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    assert cgroups.parse_cpu_list("") == []
    for bad in ("3-1", "a", "-2"):
        with pytest.raises(ValueError, match="not a CPU list"):
            cgroups.parse_cpu_list(bad)
    assert choose_cpus(2, [0, 1, 2, 3]) == [2, 3]
    assert choose_cpus("all", [0, 1, 2, 3]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="'half' is not a CPU list"):
        CpusetConfig(cpus="half")
    with pytest.raises(NearmetalError, match="cpuset of 5 CPUs asked for, but this host allows 4"):
        choose_cpus(5, [0, 1, 2, 3])
    with pytest.raises(NearmetalError, match=r"CPU\(s\) 6-7 are not available here \(this host allows 0-3\)"):
        choose_cpus("2,6-7", [0, 1, 2, 3])


def test_cpuset_v2_layout(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    (root / "cpuset.cpus.effective").write_text("0-3\n")
    (root / "cpuset.mems.effective").write_text("0-1\n")
    layer = CpusetLayer(CpusetConfig(cpus=2, cgroup_root=root)).bind(
        TrialContext(run_id="r1", trial_key="t1", trial_dir=tmp_path)
    )
    with layer:
        group = root / "nearmetal-r1-t1-cpuset"
        assert (group / "cpuset.cpus").read_text() == "2-3"
        assert (group / "cpuset.mems").read_text() == "0-1"
        assert "+cpuset" in (root / "cgroup.subtree_control").read_text()
        proc = layer.wrap(ProcessSpec(argv=["true"]), layer.ctx)
        assert proc.cgroup_procs == [group / "cgroup.procs"]
        assert layer.ctx.placement["cpuset"]["cpu_count"] == 2
        assert layer.ctx.placement["cpuset"]["host_cpu_count"] == 4
    assert not (root / "nearmetal-r1-t1-cpuset").exists()


def test_cpuset_v1_writes_cpus_and_mems_before_tasks_join(tmp_path: Path) -> None:
    hierarchy = tmp_path / "cg" / "cpuset"
    hierarchy.mkdir(parents=True)
    (hierarchy / "cgroup.procs").write_text("")
    (hierarchy / "cpuset.cpus").write_text("0-7\n")
    (hierarchy / "cpuset.mems").write_text("0\n")
    (hierarchy / "cpuset.effective_cpus").write_text("0-5\n")  # a parent may have fewer online
    (hierarchy / "cpuset.effective_mems").write_text("0\n")
    layer = CpusetLayer(CpusetConfig(cpus="1,4-5", cgroup_root=tmp_path / "cg", version="v1")).bind(
        TrialContext(run_id="r2", trial_key="t2", trial_dir=tmp_path)
    )
    with layer:
        group = hierarchy / "nearmetal-r2-t2-cpuset"
        assert (group / "cpuset.cpus").read_text() == "1,4-5"
        assert (group / "cpuset.mems").read_text() == "0"
    bad = CpusetLayer(CpusetConfig(cpus="6", cgroup_root=tmp_path / "cg", version="v1")).bind(
        TrialContext(run_id="r3", trial_key="t3", trial_dir=tmp_path)
    )
    with (
        pytest.raises(NearmetalError, match=r"CPU\(s\) 6 are not available here \(this host allows 0-5\)"),
        bad,
    ):
        pass
    assert not list(hierarchy.glob("nearmetal-r3-*"))


def test_cpuset_without_the_controller_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu\n")
    (root / "cgroup.subtree_control").write_text("")
    layer = CpusetLayer(CpusetConfig(cpus=1, cgroup_root=root)).bind(
        TrialContext(run_id="r", trial_key="t", trial_dir=tmp_path)
    )
    with pytest.raises(NearmetalError, match="cpuset controller is not available"), layer:
        pass


@needs_cpuset
@two_cpus
def test_real_cpuset_confines_the_process(tmp_path: Path) -> None:
    run_id = f"testcpuset{os.getpid()}"
    layer = CpusetLayer(CpusetConfig(cpus=1)).bind(
        TrialContext(run_id=run_id, trial_key="t", trial_dir=tmp_path)
    )
    with layer:
        spec = layer.wrap(
            ProcessSpec(argv=[PY, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]), layer.ctx
        )
        execution = LocalBackend(sample_interval_s=None).execute([spec], tmp_path, timeout_s=60)
        assert execution.main.returncode == 0, execution.main.read_stderr()
        last_cpu = sorted(os.sched_getaffinity(0))[-1]
        assert execution.main.read_stdout().strip() == f"[{last_cpu}]"
        assert layer.ctx.placement["cpuset"]["cpus"] == str(last_cpu)
    assert nearmetal_cgroups(run_id) == []


# --- colocate ------------------------------------------------------------------------------------------
def colocate_plan(
    tmp_path: Path,
    copies_layers: str,
    workload: str | None = None,
    alone_layers: str = "",
    order: str = "sequential",
) -> Path:
    workload = workload or "{kind: particles, params: {particles: 8192, turns: 8, workers: 1}}"
    return write_plan(
        tmp_path,
        f"""
        name: colocate
        workloads:
          p: {workload}
        variants:
          alone: [{alone_layers}]
          shared: [{copies_layers}]
        repeats: 2
        order: {order}
        timeout: 300s
        """,
    )


@needs_cpuset
def test_neighbours_share_one_cpu_and_overlap_the_measured_copy(tmp_path: Path, db_url: str) -> None:
    """The seed's method on a CPU: two neighbours started first on the same CPU, still running when the
    measured copy ends; the measured copy takes about three times as long as alone on that CPU (generous
    bounds: other work on the machine shares the CPU too and dilutes the slowdown)."""
    plan = colocate_plan(
        tmp_path,
        "{layer: colocate, copies: 3, cpus: 1}",
        workload="{kind: particles, params: {particles: 16384, turns: 12, workers: 1}}",
        alone_layers="{layer: colocate, copies: 1, cpus: 1}",
        # alone and shared alternate, so a burst of other work on the host does not fall on one of them only
        order="interleaved",
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert [r.status for r in result.records] == ["ok"] * 4, [r.error for r in result.records]
    results = nearmetal.load_results(result.run_id, db=db_url)
    shared = [t for t in results.trials if t.variant == "shared"]
    for trial in shared:
        overlap = trial.placement["overlap"]
        assert overlap["all_overlapped"] is True
        assert [b["label"] for b in overlap["background"]] == ["neighbour-1", "neighbour-2"]
        assert all(b["ready_at"] <= overlap["main_started_at"] for b in overlap["background"])
        assert trial.placement["colocate"] == {
            "copies": 3,
            "neighbours": 2,
            "neighbour_params": {"turns": 1200},
            "cpus": trial.placement["cpuset"]["cpus"],
        }
        assert trial.placement["workload"]["cpus"] == [int(trial.placement["cpuset"]["cpus"])]
        assert "nearmetal-ready" in Path(trial.output_dir, "neighbour-2.stdout").read_text()
    values = results.values("tracking_s")
    alone = sum(values["p/alone"]) / 2
    together = sum(values["p/shared"]) / 2
    assert 1.5 < together / alone < 6.0, (alone, together)
    assert nearmetal_cgroups(result.run_id) == []


def test_a_neighbour_that_ends_early_makes_the_trial_invalid(tmp_path: Path, db_url: str) -> None:
    plan = colocate_plan(
        tmp_path,
        f'{{layer: colocate, copies: 2, ready_delay_s: 0.1, neighbour_params: {{argv: ["{PY}", "-c", "import time; time.sleep(0.3)"]}}}}',
        workload=f'{{kind: command, params: {{argv: ["{PY}", "-c", "import time; time.sleep(1.5)"]}}}}',
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    statuses = {(r.trial.cell.variant, r.status) for r in result.records}
    assert statuses == {("alone", "ok"), ("shared", "invalid")}
    bad = next(r for r in result.records if r.status == "invalid")
    assert "neighbour-1 ended (0) before the measured process finished" in bad.error
    results = nearmetal.load_results(result.run_id, db=db_url)
    trial = next(t for t in results.trials if t.status == "invalid")
    assert trial.placement["overlap"]["all_overlapped"] is False
    assert results.analysis.failed  # left out of the statistics, kept in the store


def test_colocate_refuses_parameters_the_workload_lacks(tmp_path: Path, db_url: str) -> None:
    plan = colocate_plan(tmp_path, "{layer: colocate, copies: 2, neighbour_params: {epochs: 50}}")
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    shared = [r for r in result.records if r.trial.cell.variant == "shared"]
    assert {r.status for r in shared} == {"error"}
    assert (
        "colocate.neighbour_params do not fit the workload: epochs: Extra inputs are not permitted"
        in shared[0].error
    )


def test_colocate_without_a_cpuset_needs_no_root() -> None:
    from nearmetal.layers.colocate import ColocateConfig, ColocateLayer

    assert ColocateLayer(ColocateConfig(copies=4)).needs_root is False
    assert ColocateLayer(ColocateConfig(copies=4, cpus="0")).needs_root is True


# --- gpu selection (up to the driver: nvidia-smi -L as it prints) -------------------------------------
def gpus(name: str) -> list:
    return parse_gpu_list((DATA / name).read_text())


def test_nvidia_smi_listing() -> None:
    listing = gpus("nvidia-smi-L-a100-mig.txt")
    assert [(g.index, g.name) for g in listing] == [
        (0, "NVIDIA A100-PCIE-40GB"),
        (1, "NVIDIA A100-PCIE-40GB"),
    ]
    assert [(m.index, m.profile) for m in listing[0].mig_devices] == [
        (0, "3g.20gb"),
        (1, "2g.10gb"),
        (2, "1g.5gb"),
    ]
    assert listing[1].mig_devices == []
    old = gpus("nvidia-smi-L-r450-mig.txt")
    assert old[0].mig_devices[0].uuid == "MIG-GPU-e91edf3b-b297-37c1-a2a7-7601c3238fa2/0/0"


def test_select_mig_device_and_whole_gpu() -> None:
    listing = gpus("nvidia-smi-L-a100-mig.txt")
    mig = select_device(listing, "0:1")
    assert mig.mig_profile == "2g.10gb" and mig.visible_devices.startswith("MIG-2a3b")
    assert (mig.sms, mig.compute_slices) == (28, 2)
    assert select_device(listing, mig.visible_devices).mig_index == 1
    whole = select_device(listing, 1)
    assert whole.mig_profile is None and whole.visible_devices.startswith("GPU-6b4c") and whole.sms == 108
    assert select_device(listing, whole.gpu_uuid).gpu_index == 1
    h100 = select_device(gpus("nvidia-smi-L-h100.txt"), "0", profile="disabled")
    assert h100.sms == 132
    assert select_device(gpus("nvidia-smi-L-r450-mig.txt"), "0:0").sms == 98


def test_auto_selection_by_profile_serves_every_card() -> None:
    listing = gpus("nvidia-smi-L-a100-mig.txt")
    assert select_device(listing, "auto", "3g").mig_profile == "3g.20gb"
    assert select_device(listing, "auto", "1g.5gb").mig_index == 2
    whole = select_device(listing, "auto", "disabled")
    assert (whole.gpu_index, whole.mig_profile) == (1, None)
    assert select_device(listing, "auto").gpu_index == 1  # no profile: a whole GPU
    with pytest.raises(NearmetalError, match="no GPU or MIG device here has profile 7g") as info:
        select_device(listing, "auto", "7g")
    assert "0: 3g.20gb, 2g.10gb, 1g.5gb" in info.value.fix and "1: whole GPU" in info.value.fix
    assert GpuConfig(profile="3G").profile == "3g"


@pytest.mark.parametrize(
    ("device", "profile", "message"),
    [
        ("0", None, "GPU 0 is in MIG mode and cannot be used whole"),
        ("0:7", None, "GPU 0 has no MIG device 7"),
        ("3", None, "no GPU '3' on this host"),
        ("first", None, "is not an index"),
        ("0:0", "2g.10gb", "gpu.profile 2g.10gb asked for, but device 0:0 is 3g.20gb"),
        ("1", "3g.20gb", "but device 1 is disabled"),
    ],
)
def test_gpu_selection_errors_list_what_exists(device: str, profile: str | None, message: str) -> None:
    with pytest.raises(NearmetalError, match=message):
        select_device(gpus("nvidia-smi-L-a100-mig.txt"), device, profile)


def test_gpu_layer_passes_the_device_to_every_process(tmp_path: Path) -> None:
    layer = GpuLayer(GpuConfig(device="0:2", profile="MIG 1g.5gb"))
    assert layer.config.profile == "1g.5gb"
    layer.selection = select_device(gpus("nvidia-smi-L-a100-mig.txt"), "0:2", layer.config.profile)
    ctx = TrialContext(run_id="r", trial_key="t", trial_dir=tmp_path)
    for role in ("main", "neighbour"):
        spec = layer.wrap(ProcessSpec(argv=["true"], role=role), ctx)
        assert spec.env["CUDA_VISIBLE_DEVICES"] == layer.selection.mig_uuid


@pytest.mark.skipif(
    bool(os.environ.get("PATH"))
    and any(Path(p, "nvidia-smi").exists() for p in os.environ["PATH"].split(":")),
    reason="nvidia-smi is installed here",
)
def test_gpu_layer_is_refused_without_the_driver_tools(tmp_path: Path, db_url: str) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: gpu-layer
        workloads:
          c: {{kind: command, params: {{argv: ["{PY}", "-c", "pass"]}}}}
        variants:
          mig: [{{layer: gpu, device: "0:1"}}]
        """,
    )
    with pytest.raises(MissingToolError, match="nvidia-smi is not installed"):
        nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
