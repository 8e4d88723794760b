"""The cpu-quota layer on the real cgroup filesystem, and on a directory laid out like a v2 hierarchy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import nearmetal_cgroups, needs_cpu_cgroup, needs_tool
from helpers import skip_if_contended, write_plan

from nearmetal.errors import PrivilegeError
from nearmetal.host import cgroups
from nearmetal.layers.base import TrialContext
from nearmetal.layers.cpu_quota import CpuQuotaConfig, CpuQuotaLayer
from nearmetal.workloads.base import ProcessSpec


def make_v2_tree(root: Path) -> Path:
    """A directory laid out like a cgroup v2 root with the cpu controller available."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    return root


def test_v2_layout_writes_cpu_max_and_reads_cpu_stat(tmp_path: Path) -> None:
    root = make_v2_tree(tmp_path / "cg")
    assert isinstance(cgroups.detect(root, ("cpu",)), cgroups.CgroupV2)
    layer = CpuQuotaLayer(CpuQuotaConfig(cpus=1.2, cgroup_root=root)).bind(
        TrialContext(run_id="r1", trial_key="t1", trial_dir=tmp_path)
    )
    with layer:
        group_dir = root / "nearmetal-r1-t1-cpu"
        assert (group_dir / "cpu.max").read_text() == "120000 100000"
        assert "+cpu" in (root / "cgroup.subtree_control").read_text()
        proc = layer.wrap(ProcessSpec(argv=["true"]), layer.ctx)
        assert proc.cgroup_procs == [group_dir / "cgroup.procs"]
        # what the kernel would have written after a throttled run
        (group_dir / "cpu.stat").write_text(
            "usage_usec 2000000\nuser_usec 1900000\nsystem_usec 100000\nnr_periods 50\nnr_throttled 40\n"
            "throttled_usec 1500000\n"
        )
        metrics = {m.name: m.value for m in layer.collect(layer.ctx)}
        assert metrics["throttled_periods"] == 40
        assert metrics["throttled_pct"] == pytest.approx(80.0)
        assert metrics["throttled_s"] == pytest.approx(1.5)
        assert metrics["cgroup_cpu_s"] == pytest.approx(2.0)
    assert not (root / "nearmetal-r1-t1-cpu").exists()


def test_detect_prefers_v1_when_unified_tree_lacks_cpu(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    (root / "unified").mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    (root / "cpu").mkdir()
    (root / "cpu" / "cgroup.procs").write_text("")
    assert isinstance(cgroups.detect(root, ("cpu",)), cgroups.CgroupV1)


def test_no_cgroup_filesystem_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PrivilegeError, match="no cgroup filesystem"):
        cgroups.detect(tmp_path, ("cpu",))


def test_unwritable_cgroup_names_what_is_missing(tmp_path: Path) -> None:
    root = make_v2_tree(tmp_path / "cg")
    os.chmod(root, 0o555)
    try:
        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions")
        layer = CpuQuotaLayer(CpuQuotaConfig(cpus=1, cgroup_root=root)).bind(
            TrialContext(run_id="r", trial_key="t", trial_dir=tmp_path)
        )
        with pytest.raises(PrivilegeError, match=r"(?i)permission denied"), layer:
            pass
    finally:
        os.chmod(root, 0o755)


@needs_cpu_cgroup
def test_real_cgroup_quota_throttles_a_busy_process(tmp_path: Path) -> None:
    layer = CpuQuotaLayer(CpuQuotaConfig(cpus=0.3)).bind(
        TrialContext(run_id="testquota", trial_key=f"t{os.getpid()}", trial_dir=tmp_path)
    )
    with layer:
        assert layer.group is not None
        spec = layer.wrap(
            ProcessSpec(
                argv=[sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<1.0: pass"]
            ),
            layer.ctx,
        )
        from nearmetal.backends.local import LocalBackend

        execution = LocalBackend(sample_interval_s=None).execute([spec], tmp_path, timeout_s=30)
        assert execution.main.returncode == 0
        metrics = {m.name: m.value for m in layer.collect(layer.ctx)}
        cpu_s = next(m.value for m in execution.metrics if m.name == "cpu_s")
        # 0.3 CPUs over 1 s of wall time: about 0.3 s of CPU, never the whole second
        assert cpu_s < 0.6
        assert metrics["throttled_periods"] > 0
        paths = layer.group.paths
    assert all(not p.exists() for p in paths)


@needs_cpu_cgroup
@needs_tool("stress-ng")
def test_half_cpu_quota_costs_30_to_70_percent(tmp_path: Path, run_cli) -> None:
    """Measurement validity: one CPU-bound worker under a quota of half a CPU runs at about half speed (on a
    busy machine, where the worker gets less than a CPU without the quota, the loss the CPU use predicts).
    Shielded, so the host's other work takes no part of the bare worker's CPU (the quota still binds)."""
    plan = write_plan(
        tmp_path,
        """
        name: half-cpu
        workloads:
          burn: {kind: stress-ng, params: {workers: 1, ops: 600}}
        variants:
          bare: []
          half: [{layer: cpu-quota, cpus: 0.5}]
        repeats: 3
        timeout: 60s
    """,
    )
    proc = run_cli("run", str(plan), "--shield", "--json", check=True)
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    half = next(r for r in out["rows"] if r["variant"] == "half")
    from nearmetal.api import load_results

    results = load_results(out["run_id"], db=out["db"])
    util = {
        c.variant: results.analysis.metric(c.cell_id, "cpu_util_pct").summary.mean  # % of one CPU
        for c in results.cells
    }
    # the quota caps the worker at half a CPU whatever else runs
    assert util["half"] <= 60, util
    if util["bare"] >= 90:  # the worker had its CPU: half of it costs about half the speed
        assert 30 <= half["loss_pct"] <= 70, (half, util)
        assert half["significant"] is True
    else:  # neighbours took part of the CPU already: the quota costs only what it takes beyond that
        expected = max(0.0, 1 - 50 / util["bare"]) * 100
        assert abs(half["loss_pct"] - expected) <= 20, (half["loss_pct"], expected, util)
    cell = next(c for c in results.cells if c.variant == "half")
    throttled = results.analysis.metric(cell.cell_id, "throttled_periods")
    assert throttled is not None and throttled.summary.mean > 0
    assert not nearmetal_cgroups(out["run_id"])


SLOW_PLAN = """
    name: slow
    workloads:
      sleeper:
        kind: command
        params: {argv: [sleep, "30"]}
    variants:
      limited: [{layer: cpu-quota, cpus: 0.5}]
    repeats: 1
    timeout: {timeout}
"""


@needs_cpu_cgroup
def test_no_cgroup_left_after_timeout(tmp_path: Path, run_cli) -> None:
    plan = write_plan(tmp_path, SLOW_PLAN.replace("{timeout}", "1s"))
    run_id = f"timeout-{os.getpid()}"
    proc = run_cli("run", str(plan), "--json", "--run-id", run_id, timeout=60)
    # its one trial timed out: a run whose every trial failed exits 1 (issue 18) and says so
    assert proc.returncode == 1 and "every trial of run" in proc.stderr, proc.stderr
    import json

    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    trial = next(e for e in events if e["event"] == "trial")
    assert trial["status"] == "timeout"
    assert not nearmetal_cgroups(run_id)


@needs_cpu_cgroup
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_no_cgroup_or_process_left_after_signal(tmp_path: Path, db_url: str, sig: signal.Signals) -> None:
    plan = write_plan(tmp_path, SLOW_PLAN.replace("{timeout}", "60s"))
    # other tests (and other people's runs) create nearmetal cgroups at the same time: watch only this run's
    run_id = f"sig{int(sig)}-{os.getpid()}"
    env = {**os.environ, "NEARMETAL_DB": db_url}
    runner = subprocess.Popen(
        [sys.executable, "-m", "nearmetal.cli", "run", str(plan), "--json", "--run-id", run_id],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # wait until the trial's cgroup exists and the sleeper runs inside it
        deadline = time.time() + 30
        groups: list[Path] = []
        while time.time() < deadline:
            groups = nearmetal_cgroups(run_id)
            if groups and (groups[0] / "cgroup.procs").read_text().strip():
                break
            time.sleep(0.05)
        assert groups, "the trial's cgroup never appeared"
        pids = [int(p) for g in groups for p in (g / "cgroup.procs").read_text().split()]
        runner.send_signal(sig)
        _, stderr = runner.communicate(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not nearmetal_cgroups(run_id)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


@needs_cpu_cgroup
@needs_tool("stress-ng", "lmp")
def test_quick_study_shows_the_08_cpu_cell_as_a_significant_loss(tmp_path: Path) -> None:
    """The quick form is sized so the quota bites (issue 17 item 5): its stress-ng and LAMMPS trials last
    tens of CFS periods, so limit-0.8 is a significant loss on a 2-CPU host. On a host kept busy by other
    work the bare-metal cell itself gets less than 0.8 CPU and no quota can show: the run's own noise
    evidence says so, and the test skips with it instead of asserting on an uninterpretable run."""
    import nearmetal
    from nearmetal.studies import study_path

    if (os.cpu_count() or 1) < 2:
        pytest.skip("the 0.8-CPU quota costs only against bare metal on 2 or more CPUs")
    db = f"sqlite:///{tmp_path / 'results.db'}"
    t0 = time.monotonic()
    result = nearmetal.run_plan(study_path("cpu-quota", quick=True), db=db, workdir=tmp_path / "runs")
    elapsed = time.monotonic() - t0
    results = nearmetal.load_results(result.run_id, db=db)
    # sized so the quota can bite, loaded host or not: each limited trial does at least a CPU-second of work,
    # i.e. at least 12 CFS periods at 0.8 CPU (the old quick form did 0.17 CPU-s: 2–3 periods)
    for cell in results.cells:
        cpu = results.analysis.metric(cell.cell_id, "cpu_s")
        assert cpu is not None and min(cpu.values) >= 1.0, (cell.key, cpu.values if cpu else None)
    skip_if_contended(results, "the quick study")
    rows = {(r["workload"], r["variant"]): r for r in results.table()}
    for workload in ("stress-ng", "lammps"):
        row = rows[(workload, "limit-0.8")]
        assert row["significant"] is True and row["loss_pct"] > 20, row
    assert elapsed < 120, f"the quick form took {elapsed:.0f} s"
