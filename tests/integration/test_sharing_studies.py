"""The shipped time-slicing, partitions and scaling studies: forms, and their quick CPU forms run for real
with the report in seed 001's shapes (tables, figures, Markdown)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import nearmetal_cgroups

import nearmetal
from nearmetal.errors import NearmetalError
from nearmetal.host.gpu import cuda_status
from nearmetal.plan import load_plan
from nearmetal.report.figures import build_figures
from nearmetal.report.markdown import markdown_report
from nearmetal.report.sharing_shapes import sharing_data
from nearmetal.studies import choose_form, study_names, study_path

SHARING_STUDIES = ("time-slicing", "partitions", "scaling")


def cpuset_here() -> bool:
    if os.geteuid() != 0:
        return False
    if Path("/sys/fs/cgroup/cpuset/cgroup.procs").exists():
        return True
    controllers = Path("/sys/fs/cgroup/cgroup.controllers")
    return controllers.exists() and "cpuset" in controllers.read_text().split()


needs_cpuset = pytest.mark.skipif(not cpuset_here(), reason="needs root and the cpuset controller")
two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the studies place work on 2 CPUs")


def test_every_form_is_a_valid_plan() -> None:
    assert set(SHARING_STUDIES) <= set(study_names())
    assert not [n for n in study_names() if n.endswith((".gpu", ".quick"))]
    for name in SHARING_STUDIES:
        for quick, form in ((False, "cpu"), (True, "cpu"), (False, "gpu")):
            loaded = load_plan(study_path(name, quick=quick, form=form))
            assert loaded.cells
            devices = {getattr(c.params, "device", "cpu") for c in loaded.cells}
            assert devices == ({"cuda"} if form == "gpu" else {"cpu"})


def test_the_form_follows_the_host() -> None:
    ok, why = cuda_status()
    assert choose_form("time-slicing") == ("gpu" if ok else "cpu", why)
    assert choose_form("time-slicing", quick=True) == ("cpu", "the quick forms are CPU-sized")
    assert choose_form("cpu-quota") == ("cpu", "the study has one form")
    assert choose_form("scaling", "gpu") == ("gpu", "asked for")
    with pytest.raises(NearmetalError, match="no quick GPU form"):
        study_path("scaling", quick=True, form="gpu")
    with pytest.raises(NearmetalError, match="unknown study form 'tpu'"):
        choose_form("scaling", "tpu")
    with pytest.raises(NearmetalError, match="has no GPU form"):
        study_path("cpu-quota", form="gpu")


@pytest.fixture(scope="module")
def quick_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[str, str, subprocess.CompletedProcess]]:
    """Each quick study run once through the real CLI; (run id, db url, process) per study."""
    if not cpuset_here() or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the quick studies need root, the cpuset controller and 2 CPUs")
    out = {}
    for name in SHARING_STUDIES:
        workdir = tmp_path_factory.mktemp(name)
        db = f"sqlite:///{workdir / 'results.db'}"
        proc = subprocess.run(
            [sys.executable, "-m", "nearmetal.cli", "study", name, "--quick", "--no-html"],
            cwd=workdir,
            env={**os.environ, "NEARMETAL_DB": db, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        run_id = nearmetal.load_results(db=db).run_id
        out[name] = (run_id, db, proc)
    return out


@needs_cpuset
@two_cpus
def test_time_slicing_quick_study(quick_runs) -> None:
    run_id, db, proc = quick_runs["time-slicing"]
    assert "time slicing: particles: tracking_s" in proc.stdout
    assert "time slicing, doubling the processes: particles" in proc.stdout
    assert "expected ×2k = 2 × ×k" in proc.stdout and "expected ×2k = ×k ÷ 2" in proc.stdout
    results = nearmetal.load_results(run_id, db=db)
    assert all(t.status == "ok" for t in results.trials), [t.error for t in results.trials]
    for trial in results.trials:
        if trial.variant in ("shared-x2", "shared-x4"):
            assert trial.placement["overlap"]["all_overlapped"] is True
    groups = {g.workload: g for g in sharing_data(results).time_slicing}
    particles = groups["particles"]
    assert [r.level.label for r in particles.rows] == ["passthrough", "shared ×1", "shared ×2", "shared ×4"]
    assert [(d.copies, d.doubled) for d in particles.doubling] == [(1, 2), (2, 4)]
    # ×2 and ×4, two repeats each: every measured copy overlapped by all its neighbours
    assert (particles.overlapped, particles.shared_trials) == (4, 4)
    assert (
        "neighbours verified running from before the measured copy started until it ended in 4 of 4"
        in proc.stdout
    )
    per_process = {r.level.copies: r.per_process.mean for r in particles.rows if not r.level.passthrough}
    # four processes on one CPU: each takes clearly longer than one alone (about 4×; generous, because
    # other work on a shared machine dilutes a 4-way share)
    assert per_process[4] > 1.5 * per_process[1]
    assert nearmetal_cgroups(run_id) == []
    # the study's own tables reach the HTML report too, not only the terminal
    from nearmetal.report.html import html_report

    assert "time slicing: particles" in html_report(results)


@needs_cpuset
@two_cpus
def test_partitions_quick_study(quick_runs) -> None:
    run_id, db, proc = quick_runs["partitions"]
    assert "partitions: particles: tracking_s" in proc.stdout
    assert "vs 1 CPU (1):" in proc.stdout
    results = nearmetal.load_results(run_id, db=db)
    groups = {g.workload: g for g in sharing_data(results).partitions}
    g = groups["particles"]
    assert [p.resources for p in g.partitions] == [2.0, 1.0]
    assert g.ratios[0].ideal == 2.0
    assert g.enabled_full is not None and g.enabled_full.theoretical == 0.0
    assert g.variants == {"2 CPUs (0-1)": "full", "1 CPU (1)": "one-cpu", "disabled": "disabled"}
    # the programs size themselves by the partition: 2 workers on 2 CPUs, 1 on 1
    workers = {
        t.variant: t.placement["workload"].get("workers") for t in results.trials if t.workload == "particles"
    }
    assert workers == {"disabled": 2, "full": 2, "one-cpu": 1}
    assert nearmetal_cgroups(run_id) == []


@needs_cpuset
@two_cpus
def test_scaling_quick_study(quick_runs, tmp_path: Path) -> None:
    run_id, db, proc = quick_runs["scaling"]
    assert "distributed scaling: ddp: epoch_s" in proc.stdout and "T(1)/T(2) = " in proc.stdout
    assert "topology: ddp, 2 workers" in proc.stdout and "between jobs" in proc.stdout
    results = nearmetal.load_results(run_id, db=db)
    data = sharing_data(results)
    (scaling,) = data.scaling
    assert [p.workers for p in scaling.points] == [1, 2]
    assert scaling.variants == {1: "workers-1", 2: "workers-2"}  # the pinned placements are topology
    (topology,) = data.topology
    assert {r.topology for r in topology.rows} == {"1 1", "2"} and topology.level == "cpu"
    assert topology.split.trials == 4 and topology.split.values_per_trial == 2
    specs, problems = build_figures(results, only=["sharing-scaling", "sharing-topology"])
    assert not problems and [s.key for s in specs] == ["sharing-scaling-ddp", "sharing-topology-ddp-2"]
    text = markdown_report(results)
    assert "## distributed scaling: ddp: epoch_s" in text and "## topology: ddp, 2 workers: epoch_s" in text
