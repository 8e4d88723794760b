"""Resilience experiments with the real programs: HAProxy/nginx in front of replicas in network namespaces,
faults injected into them (kill, scale to zero and back, pause with the cgroup freezer, link down), a FUSE
daemon killed under a busy reader (bindfs), and the quick failover study end to end with its report.

Thresholds are loose on purpose: the machine these tests run on is shared and often loaded (load 12–18 on
two cores); what is asserted is behaviour (health checks recover, no checks do not; the load balancer marks
the server down; every fault is recorded with its time; nothing is left on the host)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import is_root
from helpers import write_plan

import nearmetal
from nearmetal.host import cgroups, hostnet
from nearmetal.host.cleanup import cleanup, find_leftovers

pytestmark = pytest.mark.skipif(
    not is_root(), reason="network namespaces, freezer cgroups and mounts need root"
)


def needs(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/install.sh installs them)")


def own_objects(run_id: str) -> list[str]:
    found = [str(x) for x in find_leftovers(run_id)]
    found += [f"netns {n}" for n in hostnet.list_netns(f"nearmetal-{run_id}")]
    found += [f"process {p}" for p, _ in hostnet.processes_with(f"nearmetal-{run_id}")]
    return found


def metrics_by_variant(results: Any) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {}
    rows = results.store.metric_table(results.run_id)
    by_trial: dict[int, dict[str, float]] = {}
    for trial_id, name, value in zip(rows["trial_id"], rows["name"], rows["value"], strict=False):
        by_trial.setdefault(int(trial_id), {})[str(name)] = float(value)
    for trial in results.trials:
        if trial.status == "ok" and not trial.is_warmup:
            out.setdefault(trial.variant, []).append(by_trial.get(trial.id, {}))
    return out


def events_by_variant(results: Any) -> dict[str, list[dict[str, Any]]]:
    variant_of = {t.id: t.variant for t in results.trials}
    out: dict[str, list[dict[str, Any]]] = {}
    for event in results.events:
        if event["trial_id"] is not None:
            out.setdefault(variant_of[event["trial_id"]], []).append(event)
    return out


# --- the quick failover study: kill with and without health checks, scale to zero and back --------------


@pytest.fixture(scope="module")
def failover(tmp_path_factory: pytest.TempPathFactory):
    needs("ip", "haproxy")
    from nearmetal.studies import study_path

    tmp = tmp_path_factory.mktemp("failover")
    run_id = f"failover-{os.getpid()}"
    try:
        result = nearmetal.run_plan(
            study_path("failover", quick=True),
            db=f"sqlite:///{tmp / 'r.db'}",
            workdir=tmp / "runs",
            run_id=run_id,
        )
        results = nearmetal.load_results(result.run_id, db=f"sqlite:///{tmp / 'r.db'}")
        yield result, results, tmp
    finally:
        cleanup(run_id, include_live=True)


def test_failover_study_runs_every_trial(failover):
    result, _, _ = failover
    assert [r.status for r in result.records] == ["ok"] * len(result.records), [
        r.error for r in result.records
    ]
    assert not own_objects(result.run_id)


def test_both_clusters_serve_while_nothing_is_wrong(failover):
    _, results, _ = failover
    for m in metrics_by_variant(results)["steady"]:
        assert m["availability_pct"] == 100.0
        assert "detect_s" not in m
    timelines = [e for e in events_by_variant(results)["steady"] if e["kind"] == "timeline"]
    assert timelines and all(set(e["detail"]["by_backend"]) == {"c1-0", "c2-0"} for e in timelines)


def test_health_checks_take_the_dead_cluster_out(failover):
    _, results, _ = failover
    variants = metrics_by_variant(results)
    for m in variants["kill-c1"]:
        assert m["recovered"] == 1.0
        # HAProxy checks every 200 ms and needs 2 failures; a loaded host adds its share
        assert m["recover_s"] < 3.0
        assert m["availability_pct"] > 80
    for m in variants["kill-c1-no-checks"]:
        assert m["recovered"] == 0.0
        # round robin keeps sending every other request to the dead cluster
        assert 35 < m["availability_during_pct"] < 65
    events = events_by_variant(results)["kill-c1"]
    injected = [e for e in events if e["kind"] == "fault-injected"]
    downs = [e for e in events if e["kind"] == "lb-server-down"]
    assert len(injected) == 2 and all(e["detail"]["signal"] == "SIGKILL" for e in injected)
    assert downs and all(e["detail"]["server"] == "c1-0" for e in downs)
    assert not [e for e in events_by_variant(results)["kill-c1-no-checks"] if e["kind"] == "lb-server-down"]


def test_scaled_to_zero_and_back(failover):
    _, results, _ = failover
    events = events_by_variant(results)["zero-c1"]
    kinds = [e["kind"] for e in events]
    assert kinds.count("fault-injected") == kinds.count("fault-healed") == 2
    assert kinds.count("scaled-to-zero") == 2
    # SIGTERM: the built-in replica drains and exits by itself, no SIGKILL needed
    assert all(not e["detail"]["killed"] for e in events if e["kind"] == "scaled-to-zero")
    assert "lb-server-up" in kinds
    for timeline in (e for e in events if e["kind"] == "timeline"):
        assert timeline["detail"]["served_by"]["after"].get("c1-0", 0) > 0
    # the fault happened on schedule: within a quarter second of 2 s after the process started
    for m in metrics_by_variant(results)["zero-c1"]:
        assert m["fault_lag_ms"] < 250
        assert m["steady_s"] >= 2.0  # not before it healed


def test_failover_report_has_the_table_and_timelines(failover):
    _, results, _ = failover
    from nearmetal.report.figures import build_figures
    from nearmetal.report.html import html_report
    from nearmetal.report.studies.failover import tables

    (table, *_) = tables(results)
    assert table.title == "Availability and recovery: web"
    by_variant = {row[0]: row for row in table.rows}
    assert set(by_variant) == {"steady", "kill-c1", "kill-c1-no-checks", "zero-c1"}
    availability = table.headers.index("availability %")
    assert by_variant["steady"][availability] == "100"
    # the mean over the 2 repeats, with its interval when they differ
    text = by_variant["kill-c1-no-checks"][availability]
    assert re.fullmatch(r"[0-9.]+( \[[0-9.]+, [0-9.]+\])?", text) and float(text.split()[0]) < 80, text
    assert by_variant["kill-c1-no-checks"][table.headers.index("recovered")] == "0/2"
    assert "LB marked down s" in table.headers
    specs, problems = build_figures(results, only=["resilience-timeline"])
    assert not problems
    keys = {s.key for s in specs}
    assert "resilience-web-kill-c1" in keys and "resilience-web-zero-c1-latency" in keys
    kill = next(s for s in specs if s.key == "resilience-web-kill-c1")
    assert kill.bands and kill.bands[0].x0 > 1.0
    assert {s.name for s in kill.series} >= {"successful", "served by c1-0", "served by c2-0"}
    html = html_report(results)
    assert "Availability and recovery" in html and "resilience-web-zero-c1" in html


# --- pause, link down, nginx ------------------------------------------------------------------------------

MORE = """
name: more-faults
workloads:
  web:
    kind: http-load
    params: {rate_rps: 100, duration_s: 5}
variants:
  pause-c1:
    - {layer: clusters}
    - {layer: fault, action: pause, target: "cluster:c1", at_s: 1.5, heal_after_s: 1.5}
  link-down-c1:
    - {layer: clusters}
    - {layer: fault, action: link-down, target: "link:c1", at_s: 1.5, heal_after_s: 1.5}
  nginx-kill-c1:
    - {layer: clusters, server: nginx, balancer: nginx}
    - {layer: fault, action: kill, target: "cluster:c1", at_s: 1.5, heal_after_s: 1.5}
repeats: 1
timeout: 60s
"""


@pytest.fixture(scope="module")
def more_faults(tmp_path_factory: pytest.TempPathFactory):
    needs("ip", "haproxy", "nginx")
    tmp = tmp_path_factory.mktemp("more")
    run_id = f"faults-{os.getpid()}"
    plan = write_plan(tmp, MORE)
    try:
        result = nearmetal.run_plan(plan, db=f"sqlite:///{tmp / 'r.db'}", workdir=tmp / "runs", run_id=run_id)
        yield result, nearmetal.load_results(result.run_id, db=f"sqlite:///{tmp / 'r.db'}")
    finally:
        cleanup(run_id, include_live=True)


def test_pause_link_down_and_nginx(more_faults):
    result, results = more_faults
    assert [r.status for r in result.records] == ["ok"] * 3, [r.error for r in result.records]
    events = events_by_variant(results)
    metrics = {v: ms[0] for v, ms in metrics_by_variant(results).items()}
    # a frozen replica accepts nothing: HAProxy's checks time out (Layer7 timeout) and take it out
    pause = events["pause-c1"]
    down = [e for e in pause if e["kind"] == "lb-server-down"]
    assert down and "timeout" in down[0]["detail"]["line"]
    assert [e["kind"] for e in pause if e["kind"].startswith("fault-")] == ["fault-injected", "fault-healed"]
    assert metrics["pause-c1"]["recovered"] == 1.0
    # a cut link: connections to c1 time out
    assert metrics["link-down-c1"]["recovered"] == 1.0
    assert any(e["kind"] == "lb-server-down" for e in events["link-down-c1"])
    # nginx retries the next upstream on a refused connection: no client sees the crash
    assert metrics["nginx-kill-c1"]["availability_pct"] > 99
    assert any(
        e["kind"] == "lb-server-down" and e["detail"]["server"] == "c1-0" for e in events["nginx-kill-c1"]
    )
    assert not own_objects(result.run_id)
    # the freezer group is gone and nothing stays frozen
    assert not [p for p in Path("/sys/fs/cgroup/freezer").glob(f"nearmetal-{result.run_id}-*")]


# --- role targets (no topology layer) and misplaced targets -------------------------------------------------


def test_kill_the_workloads_own_server_over_a_veth(tmp_path: Path):
    needs("ip")
    plan = write_plan(
        tmp_path,
        """
        name: role-kill
        workloads:
          web:
            kind: http-load
            params: {concurrency: 2, duration_s: 3, timeout_s: 0.5}
        variants:
          kill-server:
            - {layer: netns}
            - {layer: fault, action: kill, target: "role:server", at_s: 1.5}
        repeats: 1
        timeout: 60s
        """,
    )
    run_id = f"rolekill-{os.getpid()}"
    try:
        result = nearmetal.run_plan(
            plan, db=f"sqlite:///{tmp_path / 'r.db'}", workdir=tmp_path / "runs", run_id=run_id
        )
        (record,) = result.records
        assert record.status == "ok", record.error
        metrics = {m.name: m.value for m in record.metrics}
        assert metrics["recovered"] == 0.0
        assert metrics["errors_refused"] > 0  # the closed loop reconnects and is refused
        assert metrics["detect_s"] < 1.0
        assert not own_objects(run_id)
    finally:
        cleanup(run_id, include_live=True)


def test_a_fault_after_the_load_ended_fails_the_trial(tmp_path: Path):
    needs("ip", "haproxy")
    plan = write_plan(
        tmp_path,
        """
        name: too-late
        workloads:
          web:
            kind: http-load
            params: {rate_rps: 50, duration_s: 1}
        variants:
          late: [{layer: clusters}, {layer: fault, action: kill, target: "cluster:c1", at_s: 30}]
          misplaced: [{layer: fault, action: kill, target: "cluster:c1", at_s: 1}, {layer: clusters}]
        repeats: 1
        timeout: 60s
        """,
    )
    run_id = f"toolate-{os.getpid()}"
    try:
        result = nearmetal.run_plan(
            plan, db=f"sqlite:///{tmp_path / 'r.db'}", workdir=tmp_path / "runs", run_id=run_id
        )
        by_variant = {r.trial.cell.variant: r for r in result.records}
        late = by_variant["late"]
        assert late.status == "error"
        assert (
            "was not injected: the workload ended" in late.error and "before the fault at 30s" in late.error
        )
        misplaced = by_variant["misplaced"]
        assert misplaced.status == "error"
        assert "fault target 'cluster:c1' is not in this trial" in misplaced.error
        assert not own_objects(run_id)
    finally:
        cleanup(run_id, include_live=True)


# --- the cgroup freezer: a frozen group a killed run left is thawed and removed by cleanup ---------------


def test_cleanup_thaws_and_removes_a_frozen_group():
    freezer = Path("/sys/fs/cgroup/freezer")
    if not (freezer / "cgroup.procs").exists():
        pytest.skip("no v1 freezer hierarchy here")
    run_id = f"frozen-{os.getpid()}"
    group = freezer / f"nearmetal-{run_id}-0123456789-r0-fault-freezer"
    proc = subprocess.Popen(["sleep", "300"])
    try:
        group.mkdir()
        (group / "cgroup.procs").write_text(str(proc.pid))
        cgroups.Cgroup(1, {"freezer": group}).freeze()
        assert (group / "freezer.state").read_text().strip() == "FROZEN"
        report = cleanup(run_id, include_live=True)
        assert any("freezer" in str(x) for x in report.removed), report.failed
        assert not group.exists()
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if group.exists():
            cgroups.Cgroup(1, {"freezer": group}).remove()
        if proc.poll() is None:
            proc.kill()


# --- a FUSE daemon killed under a busy reader --------------------------------------------------------------


@pytest.fixture
def bindfs_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    needs("bindfs", "fusermount3")
    # the plans name a mount outside the run's directory: the operator allows it
    monkeypatch.setenv("NEARMETAL_ALLOW_PATHS", str(tmp_path))
    run_id = f"severed-{os.getpid()}"
    base = tmp_path / f"nearmetal-{run_id}-0123456789-r0-bindfs"
    source, mnt = base / "source", base / "mnt"
    source.mkdir(parents=True)
    mnt.mkdir()
    daemon = subprocess.Popen(["bindfs", "-f", str(source), str(mnt)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while f" {mnt} " not in Path("/proc/self/mountinfo").read_text():
        assert time.monotonic() < deadline and daemon.poll() is None, "bindfs did not mount"
        time.sleep(0.02)
    try:
        yield run_id, mnt
    finally:
        for argv in (["fusermount3", "-uz", str(mnt)], ["umount", "-l", str(mnt)]):
            subprocess.run(argv, capture_output=True, timeout=20)
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait(timeout=10)
        cleanup(run_id, include_live=True)


def test_killed_fuse_daemon_severs_the_mount_and_the_watchdog_remounts_it(tmp_path: Path, bindfs_mount):
    run_id, mnt = bindfs_mount
    plan = write_plan(
        tmp_path,
        f"""
        name: severed
        workloads:
          reader:
            kind: io-probe
            params: {{rate_rps: 100, duration_s: 5, path: "{mnt}"}}
        variants:
          watchdog:
            - {{layer: fault, action: kill-fuse, path: "{mnt}", at_s: 1.5, heal: watchdog, scan_interval_s: 0.5}}
        repeats: 1
        timeout: 60s
        """,
    )
    result = nearmetal.run_plan(
        plan, db=f"sqlite:///{tmp_path / 'r.db'}", workdir=tmp_path / "runs", run_id=run_id
    )
    (record,) = result.records
    assert record.status == "ok", record.error
    metrics = {m.name: m.value for m in record.metrics}
    assert metrics["errors_enotconn"] > 0
    assert metrics["recovered"] == 1.0
    # the watchdog probes every 0.5 s; the remount itself is quick, a loaded host is not
    assert metrics["recover_s"] < 4.0
    results = nearmetal.load_results(result.run_id, db=f"sqlite:///{tmp_path / 'r.db'}")
    kinds = [e["kind"] for e in results.events]
    assert kinds.index("fault-injected") < kinds.index("watchdog-found-severed") < kinds.index("fault-healed")
    (finding,) = [e["detail"] for e in results.events if e["kind"] == "doctor-finding"]
    assert finding["check_id"] == "fuse-severed" and finding["severity"] == "critical"
    assert str(mnt) in finding["title"] and "ENOTCONN" in finding["title"]
    # the mount works again after the trial (remounted, then unmounted by the layer's teardown: the
    # fixture's own bindfs is gone, so the directory is plain again)
    os.stat(mnt)
    from nearmetal.report.studies.severed_mount import tables

    doctor_table = [t for t in tables(results) if t.title.startswith("doctor during the fault")]
    assert doctor_table and doctor_table[0].rows[0][1] == "fuse-severed"


def test_a_mount_left_severed_fails_every_read_after_the_kill(tmp_path: Path, bindfs_mount):
    run_id, mnt = bindfs_mount
    plan = write_plan(
        tmp_path,
        f"""
        name: severed-forever
        workloads:
          reader:
            kind: io-probe
            params: {{rate_rps: 100, duration_s: 3, path: "{mnt}"}}
        variants:
          no-remount: [{{layer: fault, action: kill-fuse, path: "{mnt}", at_s: 1}}]
        repeats: 1
        timeout: 60s
        """,
    )
    result = nearmetal.run_plan(
        plan, db=f"sqlite:///{tmp_path / 'r.db'}", workdir=tmp_path / "runs", run_id=run_id
    )
    (record,) = result.records
    assert record.status == "ok", record.error
    metrics = {m.name: m.value for m in record.metrics}
    assert metrics["recovered"] == 0.0
    assert metrics["availability_during_pct"] < 5
    with pytest.raises(OSError) as info:
        os.stat(mnt)
    assert info.value.errno == errno.ENOTCONN


def test_severed_mount_quick_study(tmp_path: Path) -> None:
    """The shipped study: the run's own bindfs mount, its daemon killed under a reader, left severed or
    found and remounted by a watchdog; doctor's finding beside it; nothing left on the host."""
    needs("bindfs", "fusermount3")
    from nearmetal.studies import study_path

    run_id = f"severed-study-{os.getpid()}"
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = nearmetal.run_plan(
        study_path("severed-mount", quick=True), db=db, workdir=tmp_path / "runs", run_id=run_id
    )
    assert [r.status for r in result.records] == ["ok"] * 6, [r.error for r in result.records]
    results = nearmetal.load_results(run_id, db=db)
    variants = metrics_by_variant(results)
    for m in variants["bindfs"]:
        assert m["availability_pct"] == 100.0 and "detect_s" not in m
    for m in variants["left-severed"]:
        assert m["recovered"] == 0.0 and m["errors_enotconn"] > 0
        assert m["availability_during_pct"] < 5
    for m in variants["watchdog"]:
        assert m["recovered"] == 1.0 and m["errors_enotconn"] > 0
        assert m["recover_s"] < 4.0  # probes every 0.5 s; a loaded host adds its share
    findings = [e["detail"]["check_id"] for e in results.events if e["kind"] == "doctor-finding"]
    assert findings.count("fuse-severed") == 4  # every kill, both variants, both repeats
    assert not own_objects(run_id)
