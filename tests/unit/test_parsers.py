"""Workload parsers on outputs from several program versions (made here, written from their docs, and real
files from public repositories: see data/README.md)."""

from __future__ import annotations

import json

import pytest
from paths import DATA, SHARED

from nearmetal.workloads import get_workload
from nearmetal.workloads.base import ParseError, TrialOutput
from nearmetal.workloads.command import CommandParams
from nearmetal.workloads.lammps import parse_lammps_log
from nearmetal.workloads.stress_ng import parse_stress_ng_brief, parse_stress_ng_yaml

SEED_REFERENCE = SHARED / "reference" / "lammps-usernetes.txt"


def by_name(metrics):
    return {m.name: m for m in metrics}


def test_lammps_2023_metal_units_as_in_the_seed() -> None:
    m = by_name(parse_lammps_log((DATA / "lammps-2023-metal.log").read_text()))
    assert m["timesteps_per_s"].value == pytest.approx(28.792)
    assert m["ns_per_day"].value == pytest.approx(0.249)
    assert m["hours_per_ns"].value == pytest.approx(96.476)
    assert m["hours_per_ns"].direction == "lower"
    assert m["katom_steps_per_s"].value == pytest.approx(70.023)
    assert m["lammps_cpu_use_pct"].value == pytest.approx(99.2)
    assert m["mpi_tasks"].value == 16
    assert m["atoms"].value == 2432


@pytest.mark.skipif(not SEED_REFERENCE.exists(), reason="../shared/reference not beside the checkout")
def test_lammps_seed_reference_lines() -> None:
    m = by_name(parse_lammps_log(SEED_REFERENCE.read_text()))
    assert m["lammps_cpu_use_pct"].value == pytest.approx(99.2)
    assert m["timesteps_per_s"].value == pytest.approx(28.792)


def test_lammps_2021_lj_units_made_here() -> None:
    m = by_name(parse_lammps_log((DATA / "lammps-2021-lj.log").read_text()))
    assert m["tau_per_day"].unit == "tau/day"
    assert m["timesteps_per_s"].value > 0
    assert m["procs"].value == 2
    # katom-step/s is derived from the loop line when the Performance line lacks it
    loop = m["loop_s"].value
    assert m["katom_steps_per_s"].value == pytest.approx(100 * 32000 / loop / 1000)


def test_lammps_2015_loop_line_with_openmp_and_no_performance_line() -> None:
    m = by_name(parse_lammps_log((DATA / "lammps-2015-omp.log").read_text()))
    assert m["timesteps_per_s"].value == pytest.approx(100 / 2.41)
    assert m["procs"].value == 4
    assert "lammps_cpu_use_pct" not in m


def test_lammps_quota_log_shows_low_cpu_use() -> None:
    m = by_name(parse_lammps_log((DATA / "lammps-quota-60pct.log").read_text()))
    assert m["lammps_cpu_use_pct"].value == pytest.approx(63.4)


def test_lammps_cpu_line_of_a_build_without_openmp() -> None:
    # lammps/lammps examples/melt/log.5Oct16.melt.g++.4: "99.6% CPU use with 4 MPI tasks x no OpenMP threads"
    m = by_name(parse_lammps_log((DATA / "lammps-5Oct16-melt-no-openmp.log").read_text()))
    assert m["lammps_cpu_use_pct"].value == pytest.approx(99.6)
    assert m["mpi_tasks"].value == 4
    assert "omp_threads" not in m  # no OpenMP in that binary: no thread count is claimed
    assert m["timesteps_per_s"].value == pytest.approx(1184.850)
    assert m["tau_per_day"].value == pytest.approx(511855.365)
    assert m["loop_s"].value == pytest.approx(0.210997) and m["atoms"].value == 4000


def test_lammps_unfinished_output_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="did not finish"):
        parse_lammps_log("LAMMPS (29 Sep 2021)\nERROR: Unknown command: oops\n")


def test_stress_ng_yaml() -> None:
    m = by_name(parse_stress_ng_yaml((DATA / "stress-ng-0.15.yaml").read_text()))
    assert m["bogo_ops"].value == 3385
    assert m["bogo_ops_per_s"].value == pytest.approx(1692.443105)
    assert m["bogo_ops_per_s"].direction == "higher"


@pytest.mark.parametrize(
    ("name", "ops", "rate"),
    [
        ("stress-ng-0.09-brief.txt", 8820, 881.96),
        ("stress-ng-0.15-brief.txt", 2003, 1667.01),
        ("stress-ng-0.17-brief.txt", 9931, 1986.08),
    ],
)
def test_stress_ng_brief_across_versions(name: str, ops: float, rate: float) -> None:
    m = by_name(parse_stress_ng_brief((DATA / name).read_text()))
    assert m["bogo_ops"].value == ops
    assert m["bogo_ops_per_s"].value == pytest.approx(rate)


def test_stress_ng_yaml_with_two_stressors_gives_metrics_per_stressor() -> None:
    # microsoft/VirtualClient's StressNgCpuVmExample.yaml: stress-ng 0.09.25, --cpu and --vm in one run
    m = by_name(parse_stress_ng_yaml((DATA / "stress-ng-0.09.25-cpu-vm.yaml").read_text()))
    assert m["cpu_bogo_ops"].value == 30539 and m["vm_bogo_ops"].value == 1067912
    assert m["cpu_bogo_ops_per_s"].value == pytest.approx(3049.623634)
    assert m["vm_bogo_ops_per_s"].value == pytest.approx(106785.171174)
    assert m["cpu_bogo_ops_per_cpu_s"].value == pytest.approx(216.266553)
    assert m["vm_stressor_cpu_s"].value == pytest.approx(18.03 + 0.77)
    assert m["cpu_bogo_ops_per_s"].unit == "ops/s" and m["vm_bogo_ops_per_s"].direction == "higher"
    # cpu ops and vm ops are different operations: no sum of the two is reported
    assert "bogo_ops_per_s" not in m and "bogo_ops" not in m
    # the run as a whole: its longest stressor's wall time, and all the CPU time
    assert m["stressor_s"].value == pytest.approx(10.014023)
    assert m["stressor_cpu_s"].value == pytest.approx(141.21 + 18.03 + 0.77)


def test_stress_ng_without_metrics_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_stress_ng_brief("stress-ng: info: [1] dispatching hogs: 1 cpu\n")


def test_command_regex_and_json_metrics() -> None:
    wl = get_workload("command")
    params = CommandParams.model_validate(
        {
            "argv": ["prog"],
            "metrics": [
                {"name": "rate", "regex": r"rate=([0-9.]+)", "unit": "op/s", "direction": "higher"},
                {
                    "name": "iter_s",
                    "regex": r"iter ([0-9.]+)s",
                    "unit": "s",
                    "direction": "lower",
                    "all": True,
                },
            ],
        }
    )
    out = TrialOutput(stdout="iter 1.0s\niter 3.0s\nrate=12.5\n", stderr="")
    m = by_name(wl.parse(out, params))
    assert m["rate"].value == 12.5
    assert m["iter_s"].values == (1.0, 3.0) and m["iter_s"].value == 2.0
    jparams = CommandParams.model_validate(
        {
            "argv": ["prog"],
            "metrics": [{"name": "lat", "json_path": "result.lat[1]", "unit": "us", "direction": "lower"}],
        }
    )
    m = by_name(wl.parse(TrialOutput(stdout=json.dumps({"result": {"lat": [5, 7]}}), stderr=""), jparams))
    assert m["lat"].value == 7


def test_command_rule_validation() -> None:
    with pytest.raises(ValueError, match="capturing group"):
        CommandParams.model_validate(
            {"argv": ["x"], "metrics": [{"name": "a", "regex": "rate", "direction": "higher"}]}
        )
