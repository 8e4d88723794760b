"""doctor's GPU checks: pure functions of an NVML snapshot (built by hand: no GPU on the development
machine), the PID-namespace and device-plugin label parsers, and the skip on a host without NVML."""

from __future__ import annotations

from nearmetal.doctor.gpu import (
    GpuState,
    MigInstance,
    clocks_ecc_findings,
    describe_throttle,
    mig_findings,
    nested_pid_namespace,
    parse_gfd_labels,
    pid_namespace_findings,
    sharing_findings,
)

A100 = "NVIDIA A100-PCIE-40GB"


def by_severity(findings) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in findings:
        out.setdefault(f.severity, []).append(f.title)
    return out


def test_mig_with_one_full_instance_loses_sms_and_shares_nothing() -> None:
    full = GpuState(0, A100, mig_enabled=True, mig_pending=True, mig_instances=[MigInstance(7, 98, 40192)])
    (finding,) = mig_findings([full])
    assert finding.severity == "warning" and finding.check_id == "gpu-mig"
    assert "loses 10 of 108 SMs (9.3%)" in finding.title and "shares nothing" in finding.title
    assert "nvidia-smi -i 0 -mig 0" in finding.fix and "9.25%" in finding.lesson
    # Hopper keeps every SM in its 7g instance: still no sharing, but no SM loss to warn about
    h100 = GpuState(
        1,
        "NVIDIA H100 80GB HBM3",
        mig_enabled=True,
        mig_pending=True,
        mig_instances=[MigInstance(7, 132, 80000)],
    )
    assert mig_findings([h100])[0].severity == "info"


def test_mig_states() -> None:
    partitioned = GpuState(
        0,
        A100,
        mig_enabled=True,
        mig_pending=True,
        mig_instances=[MigInstance(3, 42, 20000), MigInstance(2, 28, 10000)],
    )
    empty = GpuState(1, A100, mig_enabled=True, mig_pending=True)
    pending = GpuState(2, A100, mig_enabled=False, mig_pending=True)
    no_mig = GpuState(3, "Tesla T4")
    found = by_severity(mig_findings([partitioned, empty, pending, no_mig]))
    assert found["ok"] == ["GPU 0: MIG partitioned"]
    assert found["warning"] == [f"GPU 1 ({A100}) is in MIG mode with no instance: CUDA sees no device on it"]
    assert found["info"] == ["GPU 2: a MIG mode change waits for a GPU reset"]


def test_pid_namespace_is_read_from_nspid() -> None:
    assert nested_pid_namespace("Name:\tpython\nNSpid:\t4242\t17\n")
    assert not nested_pid_namespace("Name:\tpython\nNSpid:\t4242\n")
    gpus = [GpuState(0, A100, processes=[4242, 99999])]
    (finding,) = pid_namespace_findings(gpus, "NSpid:\t50\t7\n", visible={4242})
    assert finding.severity == "info" and "cannot list the processes" in finding.title
    assert "child PID namespace" in finding.evidence and "1 process(es)" in finding.evidence
    assert pid_namespace_findings(gpus, "NSpid:\t50\n", visible={4242, 99999})[0].severity == "ok"


def test_time_slicing_is_seen_from_processes_mode_and_labels() -> None:
    labels = parse_gfd_labels(
        "nvidia.com/gpu.count=4\nnvidia.com/gpu.replicas=4\nnvidia.com/gpu.sharing-strategy=time-slicing\n"
        "nvidia.com/gpu.product=NVIDIA-A100-PCIE-40GB-SHARED\n\n"
    )
    assert labels["nvidia.com/gpu.replicas"] == "4"
    gpus = [
        GpuState(0, A100, processes=[100, 200, 300]),
        GpuState(1, A100, compute_mode="exclusive_process"),
        GpuState(2, A100, compute_mode="prohibited"),
    ]
    found = by_severity(sharing_findings(gpus, labels, own_pids={100}))
    assert "the device plugin time-slices each GPU into 4 replicas (time-slicing)" in found["info"]
    assert f"GPU 0 ({A100}): 2 other process(es) use it now; work on it is time-sliced" in found["warning"]
    assert any("exclusive_process compute mode" in t for t in found["info"])
    assert any("prohibited compute mode" in t for t in found["warning"])
    assert sharing_findings([GpuState(0, A100, processes=[1])], {}, {1})[0].severity == "ok"


def test_clock_throttle_reasons_and_ecc() -> None:
    assert describe_throttle(0x1 | 0x4 | 0x40) == [
        "GPU idle",
        "software power cap",
        "hardware thermal slowdown",
    ]
    gpus = [
        GpuState(0, A100, throttle_reasons=0x4 | 0x40, ecc_uncorrected=2, retirement_pending=True),
        GpuState(1, A100, throttle_reasons=0x1, ecc_uncorrected=0, retirement_pending=False),
    ]
    titles = [f.title for f in clocks_ecc_findings(gpus)]
    assert titles == [
        f"GPU 0 ({A100}) clocks are held down: software power cap, hardware thermal slowdown",
        "GPU 0: 2 uncorrected ECC error(s) since the driver loaded",
        "GPU 0: memory rows/pages wait to be retired at the next reset",
    ]
    assert clocks_ecc_findings([gpus[1]])[0].severity == "ok"  # idle is not throttling
