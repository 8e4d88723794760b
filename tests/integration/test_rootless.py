"""Rootless: nearmetal as an ordinary user, and rootless rows run by root as that user (issue 22).

Real user namespaces, FUSE daemons, user-mode network stacks and builders, run as the test user that
``scripts/test-user.sh`` creates (``nearmetal-test``, with subordinate id ranges; scripts/test.sh runs it).
Every test checks the host afterwards with ``leakcheck.host_objects``, which also reads the mount tables of
other mount namespaces (where a rootless trial's mounts live) and users' runtime directories.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import have_tool, is_root, nearmetal_argv
from helpers import write_plan
from leakcheck import host_objects

import nearmetal
from nearmetal.errors import PrivilegeError
from nearmetal.layers.rootless import ROOTLESS_USER_ENV, STAGING_BASE, TEST_USER_ENV

TEST_USER = os.environ.get(TEST_USER_ENV, "nearmetal-test")


def _test_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        return None


USER = _test_user()
needs_test_user = pytest.mark.skipif(
    not is_root() or USER is None,
    reason=f"needs root and the test user {TEST_USER} (bash scripts/test-user.sh creates it)",
)
pytestmark = [needs_test_user, pytest.mark.root]

FIO = "{bs: 64k, iodepth: 4, direct: true, size: 1m, runtime: 0.3, fallocate: none, drop_caches: true, rw: randread, numjobs: 2}"


@pytest.fixture
def user_dir():
    """A directory the test user owns (pytest's tmp_path is root's and 0700)."""
    assert USER is not None
    path = Path(tempfile.mkdtemp(prefix="nm-rootless-test-", dir="/var/tmp"))
    os.chown(path, USER.pw_uid, USER.pw_gid)
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run_id():
    rid = f"rl-{os.getpid()}-{secrets.token_hex(3)}"
    yield rid
    from nearmetal.host.cleanup import cleanup

    cleanup(rid, include_live=True)  # a failing test leaves nothing on the shared machine


def as_user(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as the test user (runuser), with this checkout's nearmetal on the path."""
    env = ["env", "COLUMNS=200"]
    if os.environ.get("PYTHONPATH"):
        env.append(f"PYTHONPATH={os.environ['PYTHONPATH']}")
    return subprocess.run(
        ["runuser", "-u", TEST_USER, "--", *env, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def trials(db: Path, run: str) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select variant, workload, status, error, placement from trials where run_id = ? and is_warmup = 0",
            (run,),
        ).fetchall()
    return [
        {"variant": v, "workload": w, "status": s, "error": e, "placement": json.loads(p or "{}")}
        for v, w, s, e, p in rows
    ]


def test_a_rootless_plan_runs_end_to_end_as_an_ordinary_user(user_dir: Path, run_id: str) -> None:
    """Every layer with a rootless form, run by nearmetal started as the test user: the trials run in its own
    user namespace (uid 0 there, the user's uid on the host), the mounts and network namespaces exist only
    there, and nothing is left on the host."""
    needed = [
        t
        for t in ("fio", "bindfs", "fuse-overlayfs", "slirp4netns", "pasta", "newuidmap")
        if not have_tool(t)
    ]
    if needed:
        pytest.skip(f"needs {', '.join(needed)}")
    plan = write_plan(
        user_dir,
        f"""
        name: rootless-user
        workloads:
          fio: {{kind: fio, params: {FIO}}}
          tcp-rr: {{kind: tcp-rr, params: {{size: 1, transactions: 500, warmup: 50}}}}
        variants:
          plain: []
          rootless: [{{layer: rootless}}]
          rootless-bindfs: {{layers: [{{layer: rootless}}, {{layer: bindfs}}], only: [fio]}}
          rootless-fuse-overlayfs: {{layers: [{{layer: rootless}}, {{layer: fuse-overlayfs}}], only: [fio]}}
          rootless-overlayfs: {{layers: [{{layer: rootless}}, {{layer: overlayfs}}], only: [fio]}}
          rootless-slirp4netns: {{layers: [{{layer: rootless}}, {{layer: slirp4netns}}], only: [tcp-rr]}}
          rootless-pasta: {{layers: [{{layer: rootless}}, {{layer: pasta}}], only: [tcp-rr]}}
        baseline: plain
        repeats: 1
        timeout: 60s
        """,
    )
    plan.chmod(0o644)
    db = user_dir / "results.db"
    proc = as_user(
        [
            *nearmetal_argv(),
            "run",
            str(plan),
            "--db",
            f"sqlite:///{db}",
            "--run-id",
            run_id,
            "-q",
            "--no-html",
        ],
        user_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = trials(db, run_id)
    assert len(rows) == 9
    assert [r for r in rows if r["status"] != "ok"] == []
    assert USER is not None
    for row in rows:
        placement = row["placement"]
        if row["variant"] == "plain":
            assert "rootless" not in placement
            continue
        # the measured process ran as root of the user's namespace: the test user on the host
        assert placement["rootless"]["workload_uid"] == 0
        assert placement["rootless"]["workload_uid_host"] == USER.pw_uid
        assert placement["as_user"] == {
            "user": TEST_USER,
            "uid": USER.pw_uid,
            "started_by_root": False,
            "user_namespace": "subids",
            "child_exit": 0,
        }
    by_variant = {(r["variant"], r["workload"]): r["placement"] for r in rows}
    fuse = by_variant[("rootless-fuse-overlayfs", "fio")]["fuse-overlayfs"]
    assert fuse["fstype"] == "fuse.fuse-overlayfs"
    assert fuse["user_namespace"] is True and fuse["daemon_uid_host"] == USER.pw_uid
    assert by_variant[("rootless-bindfs", "fio")]["bindfs"]["daemon_uid_host"] == USER.pw_uid
    assert by_variant[("rootless-overlayfs", "fio")]["overlayfs"]["fstype"] == "overlay"
    # the round trips crossed slirp4netns's TAP device (its counters, read in the user's namespace)
    tap = by_variant[("rootless-slirp4netns", "tcp-rr")]["usernet"]["client_tap"]
    assert tap["rx_packets"] >= 500
    assert host_objects(run_id) == set()


def test_a_root_only_layer_is_refused_for_an_ordinary_user_before_anything_runs(
    user_dir: Path, run_id: str
) -> None:
    """cpu-quota (a cgroup v1 CFS quota) has no rootless form: refused with the reason and the alternative
    (cgroup v2 with a delegated subtree, what doctor checks), before any trial or run directory exists."""
    plan = write_plan(
        user_dir,
        """
        name: rootless-refused
        workloads:
          w: {kind: command, params: {argv: [/bin/true]}}
        variants:
          plain: []
          quota: [{layer: cpu-quota, cpus: 0.5}]
          rootless-quota: [{layer: rootless}, {layer: cpu-quota, cpus: 0.5}]
          rootless-cpuset: [{layer: rootless}, {layer: cpuset, cpus: 1}]
        baseline: plain
        repeats: 1
        """,
    )
    plan.chmod(0o644)
    db = user_dir / "results.db"
    proc = as_user(
        [*nearmetal_argv(), "run", str(plan), "--db", f"sqlite:///{db}", "--run-id", run_id, "--no-html"],
        user_dir,
    )
    assert proc.returncode != 0
    text = " ".join((proc.stdout + proc.stderr).split())
    assert f"nearmetal runs as uid {USER.pw_uid if USER else '?'}, not root; nothing was run" in text
    assert "layer cpu-quota needs root (it creates a cgroup and writes its CPU quota)" in text
    assert "cgroup v1 has no safe delegation" in text and "nearmetal doctor --check rootless-cgroup" in text
    assert "layer cpuset needs root" in text
    assert not (user_dir / "nearmetal-runs" / run_id).exists()
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from trials").fetchone()[0] == 0
    assert host_objects(run_id) == set()


def test_root_refuses_a_root_only_layer_after_the_rootless_layer(tmp_path: Path, run_id: str) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: rootless-root-refused
        workloads:
          w: {{kind: command, params: {{argv: [/bin/true]}}}}
        variants:
          plain: []
          rootless-quota: [{{layer: rootless, user: {TEST_USER}}}, {{layer: cpu-quota, cpus: 0.5}}]
          late: [{{layer: cpu-quota, cpus: 0.5}}, {{layer: rootless, user: {TEST_USER}}}]
        baseline: plain
        repeats: 1
        """,
    )
    with pytest.raises(PrivilegeError) as info:
        nearmetal.run_plan(
            plan, db=f"sqlite:///{tmp_path / 'r.db'}", workdir=tmp_path / "runs", run_id=run_id
        )
    text = str(info.value)
    assert (
        "these cells run as an ordinary user (their variant has the rootless layer); nothing was run" in text
    )
    assert "layer cpu-quota needs root" in text
    assert "the rootless layer must come first in its variant" in text
    assert not (tmp_path / "runs" / run_id).exists()
    assert host_objects(run_id) == set()


def test_root_runs_rootless_rows_as_the_user_and_keeps_their_output(tmp_path: Path, run_id: str) -> None:
    if not (have_tool("fio") and have_tool("fuse-overlayfs")):
        pytest.skip("needs fio and fuse-overlayfs")
    plan = write_plan(
        tmp_path,
        f"""
        name: rootless-as-root
        workloads:
          fio: {{kind: fio, params: {FIO}}}
        variants:
          bare: []
          fuse-overlayfs: [{{layer: fuse-overlayfs}}]
          rootless-fuse-overlayfs: [{{layer: rootless, user: {TEST_USER}}}, {{layer: fuse-overlayfs}}]
        baseline: bare
        repeats: 1
        """,
    )
    db = tmp_path / "r.db"
    result = nearmetal.run_plan(plan, db=f"sqlite:///{db}", workdir=tmp_path / "runs", run_id=run_id)
    assert [r.status for r in result.records] == ["ok", "ok", "ok"]
    row = next(r for r in trials(db, run_id) if r["variant"] == "rootless-fuse-overlayfs")
    assert USER is not None
    assert row["placement"]["as_user"]["started_by_root"] is True
    assert row["placement"]["as_user"]["uid"] == USER.pw_uid
    assert row["placement"]["rootless"]["workload_uid_host"] == USER.pw_uid
    assert row["placement"]["fuse-overlayfs"]["daemon_uid_host"] == USER.pw_uid
    # the trial's files came back into the run's (root's) trial directory, the user's copy is gone
    outputs = list((tmp_path / "runs" / run_id).glob("*/main.stdout"))
    assert len(outputs) == 3 and all(p.stat().st_uid == 0 for p in outputs)
    # the report's rootless tax: the rootless row next to the same layer mounted by root, with its evidence
    from nearmetal.api import load_results
    from nearmetal.report.studies.rootless import tables

    (table,) = tables(load_results(run_id, db=f"sqlite:///{db}"))
    assert [row[1:3] for row in table.rows] == [["rootless-fuse-overlayfs", "fuse-overlayfs"]]
    assert table.rows[0][-1] == f"uid {USER.pw_uid} · userns · fuse.fuse-overlayfs (daemon uid {USER.pw_uid})"
    assert not list(STAGING_BASE.glob(f"nearmetal-{run_id}-*"))
    assert host_objects(run_id) == set()


def test_rootless_rows_without_a_user_are_skipped_with_the_reason(
    tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ROOTLESS_USER_ENV, raising=False)
    monkeypatch.delenv("SUDO_USER", raising=False)
    plan = write_plan(
        tmp_path,
        """
        name: rootless-skipped
        workloads:
          w: {kind: command, params: {argv: [/bin/true]}}
        variants:
          plain: []
          rootless: [{layer: rootless}]
        baseline: plain
        repeats: 1
        """,
    )
    result = nearmetal.run_plan(
        plan, db=f"sqlite:///{tmp_path / 'r.db'}", workdir=tmp_path / "runs", run_id=run_id
    )
    assert [r.trial.cell.variant for r in result.records] == ["plain"]
    with sqlite3.connect(tmp_path / "r.db") as conn:
        info = json.loads(conn.execute("select info from runs where id = ?", (run_id,)).fetchone()[0])
    assert "NEARMETAL_ROOTLESS_USER" in " ".join(info["skipped"].values())


def test_a_failing_rootless_mount_and_a_killed_rootless_run_leave_nothing(
    tmp_path: Path, run_id: str
) -> None:
    """A FUSE mount that fails inside the user's namespace is torn down there; a run killed while its
    rootless trial holds a bindfs mount in the user's namespace leaves that mount, the daemon and the user's
    trial directory, and `nearmetal cleanup` finds and removes them all."""
    if not (have_tool("bindfs") and have_tool("fuse-overlayfs")):
        pytest.skip("needs bindfs and fuse-overlayfs")
    failing = write_plan(
        tmp_path,
        f"""
        name: rootless-failing-mount
        workloads:
          w: {{kind: command, params: {{argv: [/bin/true]}}}}
        variants:
          broken: [{{layer: rootless, user: {TEST_USER}}}, {{layer: bindfs, options: no_such_option}}]
        repeats: 1
        """,
        name="failing.yaml",
    )
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = nearmetal.run_plan(failing, db=db, workdir=tmp_path / "runs", run_id=run_id)
    assert result.records[0].status == "error"
    assert "bindfs exited (1) before mounting" in (result.records[0].error or "")
    assert host_objects(run_id) == set()

    killed_id = f"{run_id}-k"
    plan = write_plan(
        tmp_path,
        f"""
        name: rootless-killed
        workloads:
          w: {{kind: command, params: {{argv: [/bin/sh, -c, "echo nearmetal-ready; exec sleep 60"]}}}}
        variants:
          held: [{{layer: rootless, user: {TEST_USER}}}, {{layer: bindfs}}]
        repeats: 1
        timeout: 120s
        """,
        name="killed.yaml",
    )
    runner = subprocess.Popen(
        [*nearmetal_argv(), "run", str(plan), "--run-id", killed_id, "-q", "--no-html"],
        cwd=tmp_path,
        env={**os.environ, "NEARMETAL_DB": db},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and runner.poll() is None and not ready:
            for out in STAGING_BASE.glob(f"nearmetal-{killed_id}-*-rootless/trial/main.stdout"):
                ready = ready or "nearmetal-ready" in out.read_text(errors="replace")
            time.sleep(0.05)
        assert ready, runner.stderr.read() if runner.poll() is not None and runner.stderr else "not ready"
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
        left = host_objects(killed_id)
        # what a killed rootless run leaves: its child and the FUSE daemon, the mount in the user's own
        # namespace (not in the host's mount table), the user's trial directory
        assert any("mount in a user's namespace (fuse)" in item for item in left), left
        assert any("bindfs" in item for item in left), left
        assert any("rootless-trial-dir" in item for item in left), left
        # doctor names them, by their dead run, with the command that removes them
        from nearmetal.doctor.leftovers import check_leftovers

        finding = next(f for f in check_leftovers() if f"run {killed_id} is dead" in f.title)
        assert "mount in a user's namespace (fuse)" in finding.title and "rootless-trial-dir" in finding.title
        assert finding.fix.startswith(f"nearmetal cleanup {killed_id}")
        cleanup = subprocess.run(
            [*nearmetal_argv(), "cleanup", killed_id],
            env={**os.environ, "NEARMETAL_DB": db},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cleanup.returncode == 0, cleanup.stderr
        assert host_objects(killed_id) == set()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        from nearmetal.host.cleanup import cleanup as remove

        remove(killed_id, include_live=True)


def test_rootless_image_builds_run_as_the_user_with_the_storage_they_name(
    tmp_path: Path, run_id: str
) -> None:
    """buildah as the test user (its own user namespace) with native overlay, fuse-overlayfs and vfs, next to
    buildah as root: each trial's evidence says who built and with which storage, and a fuse-overlayfs
    process owned by the user really ran during the fuse-overlayfs build."""
    needed = [t for t in ("buildah", "fuse-overlayfs", "newuidmap", "busybox") if not have_tool(t)]
    if needed:
        pytest.skip(f"needs {', '.join(needed)}")
    plan = write_plan(
        tmp_path,
        f"""
        name: rootless-builds
        workloads:
          build: {{kind: image-build, params: {{layers: 1, files_per_layer: 20, file_kib: 4, context_files: 10}}}}
        variants:
          buildah-overlay: []
          rootless-overlay: [{{layer: rootless, user: {TEST_USER}, inside: false}}]
          rootless-fuse-overlayfs:
            layers: [{{layer: rootless, user: {TEST_USER}, inside: false}}]
            params: {{build.storage_driver: fuse-overlayfs}}
          rootless-vfs:
            layers: [{{layer: rootless, user: {TEST_USER}, inside: false}}]
            params: {{build.storage_driver: vfs}}
        baseline: buildah-overlay
        repeats: 1
        timeout: 300s
        """,
    )
    assert USER is not None
    seen: set[int] = set()
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            for proc in psutil.process_iter(["name", "uids"]):
                info = proc.info
                if info["name"] == "fuse-overlayfs" and info["uids"] is not None:
                    seen.add(info["uids"].real)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    db = tmp_path / "r.db"
    try:
        result = nearmetal.run_plan(plan, db=f"sqlite:///{db}", workdir=tmp_path / "runs", run_id=run_id)
    finally:
        watching.clear()
        watcher.join(timeout=5)
    assert [r.status for r in result.records] == ["ok"] * 4, [r.error for r in result.records]
    build = {r["variant"]: r["placement"]["build"] for r in trials(db, run_id)}
    assert build["buildah-overlay"] == {
        "uid": 0, "uid_host": 0, "user_namespace": False, "storage_driver": "overlay", "mount_program": False
    }  # fmt: skip
    for variant, driver, program in (
        ("rootless-overlay", "overlay", False),
        ("rootless-fuse-overlayfs", "overlay", True),
        ("rootless-vfs", "vfs", False),
    ):
        assert build[variant]["uid"] == USER.pw_uid, variant
        assert build[variant]["storage_driver"] == driver, variant
        assert build[variant]["mount_program"] is program, variant
    assert USER.pw_uid in seen, f"no fuse-overlayfs process of uid {USER.pw_uid} was seen (seen: {seen})"
    assert not list(Path("/var/tmp").glob(f"nearmetal-{run_id}-*"))
    assert host_objects(run_id) == set()


def test_doctor_checks_the_rootless_prerequisites(monkeypatch: pytest.MonkeyPatch) -> None:
    from nearmetal.doctor import rootless

    monkeypatch.setenv(ROOTLESS_USER_ENV, TEST_USER)
    subids = rootless.check_subids()[0]
    assert subids.severity == "ok" and "/etc/subuid: " in subids.evidence
    assert rootless.check_newuidmap()[0].severity == "ok"
    userns = rootless.check_unprivileged_userns()[0]
    assert userns.severity == "ok" and f"as {TEST_USER}: worked" in userns.evidence
    assert rootless.check_dev_fuse()[0].severity in ("ok", "warning")
    cgroup = rootless.check_cgroup_delegation()[0]
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        # this kind of host (cgroup v1 or hybrid): no delegation, and the finding says what to do
        assert cgroup.severity == "warning" and "cgroup v1" in cgroup.title
        assert "systemd.unified_cgroup_hierarchy=1" in cgroup.fix
    # a user without subordinate ranges: the finding names the fix
    monkeypatch.setenv(ROOTLESS_USER_ENV, "nobody")
    nobody = rootless.check_subids()[0]
    assert nobody.severity == "warning" and "usermod --add-subuids" in nobody.fix
