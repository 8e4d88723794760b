"""Energy per trial: RAPL counters (read from a powercap layout: this machine has none), a real Prometheus
scraping a Kepler-shaped exporter, the CPU-time model on real trials, and kWh × PUE × carbon intensity in the
reports. NVML is tested up to its boundary (no GPU here: no handles, no GPU metrics)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from nearmetal.host.ports import free_tcp_port
from nearmetal.telemetry.energy import (
    EnergyConfig,
    EnergyMeter,
    _nvml_handles,
    rapl_zones,
    watts_per_core,
)


def _zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = 262143328850) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_rapl_packages_and_dram_with_a_wrapping_counter(tmp_path: Path) -> None:
    pkg0 = _zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    _zone(tmp_path, "intel-rapl:0:0", "core", 500_000)  # inside the package figure: not added again
    dram0 = _zone(tmp_path, "intel-rapl:0:1", "dram", 2_000_000)
    pkg1 = _zone(tmp_path, "intel-rapl:1", "package-1", 9_999_000, max_uj=10_000_000)
    assert sorted(z.name for z in rapl_zones(tmp_path)) == [
        "intel-rapl:0:1:dram",
        "intel-rapl:0:package-0",
        "intel-rapl:1:package-1",
    ]
    meter = EnergyMeter(EnergyConfig(sources=["rapl", "estimated"]), powercap=tmp_path, cpu_model="x")
    with meter.measure() as reading:
        (pkg0 / "energy_uj").write_text("31000000\n")  # +30 J
        (dram0 / "energy_uj").write_text("7000000\n")  # +5 J
        (pkg1 / "energy_uj").write_text("999000\n")  # wrapped: 1000 + 1 + 999000 µJ ≈ +1 J
        time.sleep(0.2)
    metrics = {m.name: m for m in meter.finish(reading, cpu_s=123.0)}
    assert metrics["energy_J"].value == pytest.approx(30 + 5 + 1.000001, abs=1e-6)
    assert metrics["energy_J"].source == "energy:rapl"
    assert metrics["power_avg_W"].value == pytest.approx(metrics["energy_J"].value / reading.wall_s)


def test_psys_alone_when_the_platform_has_it(tmp_path: Path) -> None:
    _zone(tmp_path, "intel-rapl:0", "package-0", 1)
    _zone(tmp_path, "intel-rapl:1", "psys", 1)
    assert [z.name for z in rapl_zones(tmp_path)] == ["intel-rapl:1:psys"]
    assert rapl_zones(tmp_path / "absent") == []


def test_the_model_is_cpu_seconds_times_watts_per_core_and_marked_estimated(tmp_path: Path) -> None:
    meter = EnergyMeter(
        EnergyConfig(sources=["estimated"]), powercap=tmp_path, cpu_model="AMD EPYC 7763 64-Core"
    )
    with meter.measure() as reading:
        pass
    metrics = {m.name: m for m in meter.finish(reading, cpu_s=2.0)}
    assert metrics["energy_J"].value == pytest.approx(2.0 * 4.4)
    assert metrics["energy_J"].source == "energy:estimated"
    assert watts_per_core("Intel(R) Xeon(R) Platinum 8380 CPU")[0] == 6.5
    assert watts_per_core("some new chip")[0] == 10.0
    # without the model among the sources, no measured source means no energy figure at all
    rapl_only = EnergyMeter(EnergyConfig(sources=["rapl"]), powercap=tmp_path, cpu_model="x")
    with rapl_only.measure() as nothing:
        pass
    assert rapl_only.finish(nothing, 1.0) == []


def test_no_gpu_here_means_no_nvml_handles_and_no_gpu_metrics() -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU machine: NVML is exercised by the GPU tests")
    assert _nvml_handles() == []


def test_an_unreachable_prometheus_is_a_note_not_a_failure(tmp_path: Path) -> None:
    meter = EnergyMeter(
        EnergyConfig(prometheus_url=f"http://127.0.0.1:{free_tcp_port()}"), powercap=tmp_path, cpu_model="x"
    )
    with meter.measure() as reading:
        pass
    assert next(m.source for m in meter.finish(reading, cpu_s=1.0)) == "energy:estimated"
    assert reading.notes and "did not answer" in reading.notes[0]
