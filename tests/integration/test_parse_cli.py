"""`nearmetal parse`: the CLI reads recorded outputs of real programs (LAMMPS, stress-ng, iperf3, OSU,
flops/particles) and says what it could not understand (the parsers themselves: tests/unit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import DATA


def test_cli_parse_json_and_error(tmp_path: Path, run_cli) -> None:
    proc = run_cli("parse", "lammps", str(DATA / "lammps-2023-metal.log"), "--json", check=True)
    metrics = {m["name"]: m for m in json.loads(proc.stdout)[str(DATA / "lammps-2023-metal.log")]}
    assert metrics["lammps_cpu_use_pct"]["value"] == pytest.approx(99.2)
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("nothing here")
    proc = run_cli("parse", "stress-ng", str(garbage))
    assert proc.returncode == 1
    assert "garbage.txt" in proc.stderr
    proc = run_cli("parse", "nope", str(garbage))
    assert proc.returncode == 1 and "unknown workload kind" in proc.stderr


def test_cli_parse_stress_ng_two_stressors_and_lammps_without_openmp(run_cli) -> None:
    yaml_file = DATA / "stress-ng-0.09.25-cpu-vm.yaml"
    proc = run_cli("parse", "stress-ng", str(yaml_file), "--json", check=True)
    metrics = {m["name"]: m for m in json.loads(proc.stdout)[str(yaml_file)]}
    assert metrics["vm_bogo_ops_per_s"]["value"] == pytest.approx(106785.171174)
    log = DATA / "lammps-5Oct16-melt-no-openmp.log"
    proc = run_cli("parse", "lammps", str(log), "--json", check=True)
    metrics = {m["name"]: m for m in json.loads(proc.stdout)[str(log)]}
    assert metrics["lammps_cpu_use_pct"]["value"] == pytest.approx(99.6)


def test_parse_osu_cli(run_cli) -> None:
    proc = run_cli("parse", "osu", str(DATA / "osu-5.8-bw.txt"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "bw_large_MBps" in proc.stdout
    bad = run_cli("parse", "osu", str(DATA / "osu-aborted.txt"))
    assert bad.returncode == 1 and "no result lines" in bad.stderr


def test_parse_cli_udp_server_report_and_bom(run_cli) -> None:
    proc = run_cli("parse", "iperf3", str(DATA / "iperf3-3.7-udp-server.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    names = {m["name"] for m in json.loads(proc.stdout)[str(DATA / "iperf3-3.7-udp-server.json")]}
    assert {"server_cpu_pct", "udp_jitter_ms", "udp_lost_pct"} <= names and "client_cpu_pct" not in names
    proc = run_cli("parse", "osu", str(DATA / "osu-5.3.2-latency-bom.txt"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "latency_large_us" in proc.stdout


def test_nearmetal_parse_reads_recordings(run_cli) -> None:
    proc = run_cli("parse", "flops", str(DATA / "dcgmproftester11-fp32.txt"), "--json", check=True)
    doc = json.loads(proc.stdout)
    tflops = next(m for m in next(iter(doc.values())) if m["name"] == "tflops")
    assert tflops["value"] == pytest.approx(16.8888, abs=1e-3)
