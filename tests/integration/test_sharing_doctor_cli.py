"""`nearmetal doctor` without NVML says so once (the GPU checks themselves: tests/unit)."""

from __future__ import annotations

import json

import pytest

from nearmetal.doctor import run_checks
from nearmetal.host.gpu import nvml_status


@pytest.mark.skipif(nvml_status()[0], reason="NVML answers on this host")
def test_without_nvml_doctor_says_so_once(run_cli) -> None:
    findings = run_checks(only=["gpu", "gpu-mig", "gpu-pid-namespace", "gpu-sharing", "gpu-clocks-ecc"])
    assert [(f.check_id, f.severity) for f in findings] == [("gpu", "info")]
    assert "GPU checks" in findings[0].title and findings[0].evidence
    proc = run_cli("doctor", "--json", check=True)
    gpu = [f for f in json.loads(proc.stdout) if f["check_id"].startswith("gpu")]
    assert len(gpu) == 1 and "NVML" in gpu[0]["inspects"]
