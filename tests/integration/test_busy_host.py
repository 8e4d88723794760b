"""Issue 29 on real processes: a trial's own wait for a CPU (``cpu_wait_pct``) tells a delayed trial from an
undisturbed one and drives the verdict; the shield holds every trial in a top-weight cgroup above the layers'
own (a quota still binds) and is gone after the run, also after Ctrl-C.

Written for a shared host (other tests run beside these): the quiet trial runs shielded, so what else runs
cannot delay it; the busy one runs beside two ``stress-ng`` hogs a core without the shield.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import needs_cpu_cgroup, needs_tool
from helpers import write_plan

import nearmetal
from nearmetal.analysis.contention import TrialNoise, trial_contended
from nearmetal.backends.local import LocalBackend
from nearmetal.host.cleanup import find_cgroups
from nearmetal.run.shield import Shield, shield_name
from nearmetal.workloads.base import ProcessSpec

BURN = ["stress-ng", "--cpu", "1", "--cpu-method", "int64", "--timeout", "1", "--quiet"]


def _trial(tmp_path: Path, shield: Shield | None = None) -> dict:
    spec = ProcessSpec(role="main", argv=list(BURN))
    if shield is not None:
        spec.cgroup_procs[:0] = [Path(p) for p in shield.procs_files()]
    execution = LocalBackend().execute([spec], tmp_path, 60)
    assert execution.main.returncode == 0, execution.main.stderr_tail()
    return execution.placement["outside"]


def _cgroup_dirs(run_id: str) -> list[Path]:
    name = shield_name(run_id)
    root = Path("/sys/fs/cgroup")
    return [p / name for p in [root, *root.iterdir()] if (p / name).exists()]


@needs_cpu_cgroup
@needs_tool("stress-ng")
def test_cpu_wait_is_low_shielded_and_high_beside_a_neighbour_and_the_verdict_follows(tmp_path: Path) -> None:
    run_id = f"wait-{os.getpid()}"
    with Shield(run_id) as shield:
        shield.enter()  # as the runner does: its samplers beside the trial, not below the shield's weight
        # idle-ish: whatever else runs on the host is below the shield's weight (best of three on a busy host)
        quiet = min((_trial(tmp_path, shield) for _ in range(3)), key=lambda o: o["cpu_wait_pct"] or 100.0)
    # two hogs a core: 2n+1 threads on n cores, the trial waits ~(n+1)/(2n+1) ≈ 60% of its time (beside one hog
    # a core it waits ~33%, which read 27% once in CI: too near the bound below)
    hogs = str(2 * (os.cpu_count() or 1))
    neighbour = subprocess.Popen(["stress-ng", "--cpu", hogs, "--timeout", "60", "--quiet"])
    try:
        time.sleep(0.3)
        busy = _trial(tmp_path)
    finally:
        neighbour.kill()
        neighbour.wait(timeout=10)
    assert not _cgroup_dirs(run_id)
    assert quiet["cpu_wait_pct"] < 5, quiet
    assert busy["cpu_wait_pct"] > 30, busy
    # every thread of the tree was seen: stress-ng's parent and its worker
    assert busy["wait_tasks"] >= 2 and busy["cpu_run_s"] > 0.02 and busy["wait_coverage"] >= 0.7, busy
    assert not trial_contended(TrialNoise.from_placement({"outside": quiet}))  # type: ignore[arg-type]
    assert trial_contended(TrialNoise.from_placement({"outside": busy}))  # type: ignore[arg-type]


QUOTA_PLAN = """
    name: shielded-quota
    workloads:
      burn: {kind: command, params: {argv: [stress-ng, --cpu, "1", --cpu-method, int64, --timeout, "1", --quiet]}}
    variants:
      bare: []
      half: [{layer: cpu-quota, cpus: 0.5}]
    baseline: bare
    repeats: 1
    timeout: 60s
"""


@needs_cpu_cgroup
@needs_tool("stress-ng")
def test_shield_nests_above_the_quota_which_still_binds_and_is_removed(tmp_path: Path) -> None:
    from nearmetal.api import load_results
    from nearmetal.report.header import run_header

    plan = write_plan(tmp_path, QUOTA_PLAN)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    run_id = f"shieldq-{os.getpid()}"
    result = nearmetal.run_plan(plan, db=db, workdir=tmp_path / "runs", run_id=run_id, shield=True)
    assert not _cgroup_dirs(run_id) and not find_cgroups(run_id)
    results = load_results(run_id, db=db)
    assert results.shield is not None and results.shield["cgroup"] == shield_name(run_id)
    assert "cpu.shares 262144" in dict(run_header(results))["shield"] or "cpu.weight" in str(results.shield)
    half = next(r for r in result.records if r.trial.cell.variant == "half")
    placement = next(t.placement for t in results.trials if t.cell_id == half.trial.cell.cell_id)
    # the quota's group is inside the shield's
    assert all(f"/{shield_name(run_id)}/" in p for p in placement["cpu_quota"]["cgroup"]), placement
    metrics = {m.name: m.value for m in half.metrics}
    # the quota binds: at most half a CPU (and the trial was throttled), even with the top weight above it
    assert metrics["cgroup_cpu_s"] <= 0.5 * metrics["wall_s"] * 1.1 + 0.05, metrics
    assert metrics["throttled_periods"] > 0
    # its wait is not the quota's throttling
    assert metrics["cpu_wait_pct"] < 30, metrics


@needs_cpu_cgroup
def test_shield_is_removed_after_ctrl_c(tmp_path: Path) -> None:
    from nearmetal.run.runner import RunInterrupted

    ready = tmp_path / "ready"
    plan = write_plan(
        tmp_path,
        f"""
        name: shield-ctrl-c
        workloads:
          w: {{kind: command, params: {{argv: [/bin/sh, -c, "touch {ready}; exec sleep 60"]}}}}
        variants:
          q: [{{layer: cpu-quota, cpus: 0.5}}]
        repeats: 1
        timeout: 90s
        """,
    )
    run_id = f"shieldc-{os.getpid()}"
    seen: list[bool] = []

    def interrupt() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ready.exists():
                seen.append(bool(_cgroup_dirs(run_id)))
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    sender = threading.Thread(target=interrupt, daemon=True)
    sender.start()
    try:
        with pytest.raises(RunInterrupted):
            nearmetal.run_plan(
                plan,
                db=f"sqlite:///{tmp_path / 'r.db'}",
                workdir=tmp_path / "runs",
                run_id=run_id,
                shield=True,
            )
    finally:
        sender.join(timeout=5)
    assert seen == [True], "the shield existed while the trial ran"
    assert not _cgroup_dirs(run_id) and not find_cgroups(run_id)


@needs_cpu_cgroup
def test_a_killed_runs_shield_is_found_and_removed_by_cleanup() -> None:
    from nearmetal.host.cleanup import cleanup

    run_id = f"shieldk-{os.getpid()}"
    shield = Shield(run_id).create()  # as a SIGKILLed run leaves it
    assert _cgroup_dirs(run_id)
    assert any(shield_name(run_id) in leftover.name for leftover in find_cgroups(run_id))
    cleanup(run_id, include_live=True)
    assert not _cgroup_dirs(run_id)
    shield.group = None


@needs_cpu_cgroup
@needs_tool("stress-ng")
def test_a_block_whose_trial_waited_far_more_is_run_again(tmp_path: Path) -> None:
    """The first trial oversubscribes the CPUs itself (4 workers on 2 CPUs: it waits about half
    its runnable time), its partners do not: that block is run again and its first trials are left out."""
    from nearmetal.api import load_results
    from nearmetal.report.header import run_header

    marker = tmp_path / "first"
    marker.touch()
    script = (
        f'if rm {marker} 2>/dev/null; then n=4; else n=1; fi; exec stress-ng --cpu "$n" --cpu-method int64'
        " --timeout 1 --quiet"
    )
    plan = write_plan(
        tmp_path,
        f"""
        name: repair
        workloads:
          w: {{kind: command, params: {{argv: [/bin/sh, -c, '{script}']}}}}
        variants:
          a: []
          b: []
        baseline: a
        repeats: 5
        timeout: 60s
        analysis: {{max_repaired_blocks: 2}}
        """,
    )
    db = f"sqlite:///{tmp_path / 'r.db'}"
    run_id = f"repair-{os.getpid()}"
    nearmetal.run_plan(plan, db=db, workdir=tmp_path / "runs", run_id=run_id, shield=True)
    results = load_results(run_id, db=db)
    repaired = (results.run.info or {}).get("repaired") or []
    assert len(repaired) == 1, [
        (t.block, t.placement.get("outside", {}).get("cpu_wait_pct")) for t in results.trials
    ]
    assert repaired[0]["block"] == 0 and repaired[0]["cpu_wait_pct"] > 30
    statuses = sorted(t.status for t in results.trials)
    assert statuses.count("repaired") == 2 and statuses.count("ok") == 10, statuses
    assert results.trial_counts()["failed"] == 0
    assert all(results.analysis.metric(c.cell_id, "wall_s").summary.n == 5 for c in results.cells)  # type: ignore[union-attr]
    assert "run again as block" in dict(run_header(results))["repaired blocks"]
