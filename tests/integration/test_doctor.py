"""doctor finds a CPU quota and a low memlock limit that were really set up."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from conftest import needs_cpu_cgroup

from nearmetal.doctor.cpu import check_cpu_quota, own_cgroup_paths
from nearmetal.doctor.limits import check_memlock
from nearmetal.host import cgroups


def test_quota_found_in_a_v2_layout(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    pod = root / "kubepods" / "pod1"
    pod.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu\n")
    (root / "kubepods" / "cpu.max").write_text("max 100000\n")
    (pod / "cpu.max").write_text("1000000 100000\n")  # the seed's pod: a 10-CPU limit
    (pod / "cpu.stat").write_text("nr_periods 1000\nnr_throttled 400\nthrottled_usec 9000000\n")
    findings = check_cpu_quota(root, "0::/kubepods/pod1\n")
    assert findings[0].severity == "critical"
    assert "10.00 CPUs" in findings[0].title and "40%" in findings[0].title
    assert "cpu.max" in findings[0].fix or "limits.cpu" in findings[0].fix


def test_no_quota_is_ok(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu\n")
    (root / "cpu.max").write_text("max 100000\n")
    assert check_cpu_quota(root, "0::/\n")[0].severity == "ok"


def test_parse_proc_cgroup_v1() -> None:
    paths = own_cgroup_paths("4:memory:/a\n2:cpuacct,cpu:/b/c\n0::/\n")
    assert paths["cpu"] == "/b/c" and paths["memory"] == "/a" and paths[""] == "/"


@needs_cpu_cgroup
def test_doctor_inside_a_real_quota_cgroup(tmp_path: Path) -> None:
    hierarchy = cgroups.detect()
    group = hierarchy.create(f"nearmetal-doctortest-{os.getpid()}", ["cpu"])
    try:
        group.set_cpu_quota(0.5)
        argv = [
            "/bin/sh",
            "-c",
            'echo $$ > "$1"; shift; exec "$@"',
            "enter",
            str(group.procs_files()[0]),
            sys.executable,
            "-m",
            "nearmetal.cli",
            "doctor",
            "--json",
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        findings = {f["check_id"]: f for f in json.loads(proc.stdout)}
        assert findings["cpu-quota"]["severity"] in ("warning", "critical")
        assert "0.50 CPUs" in findings["cpu-quota"]["title"]
    finally:
        group.remove()


def test_memlock_limit_lowered_in_a_child() -> None:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 * 1024, 64 * 1024))

    proc = subprocess.run(
        [sys.executable, "-m", "nearmetal.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lower,
    )
    findings = {f["check_id"]: f for f in json.loads(proc.stdout)}
    assert findings["memlock"]["severity"] == "warning"
    assert "64 KiB" in findings["memlock"]["evidence"]
    assert "LimitMEMLOCK=infinity" in findings["memlock"]["fix"]


def test_memlock_unlimited_is_ok() -> None:
    assert check_memlock((resource.RLIM_INFINITY, resource.RLIM_INFINITY))[0].severity == "ok"
