"""Cleanup never touches a live run (issue 18, item 2): a FUSE daemon of a run whose lock is held survives a
cleanup that names no run; a daemon whose run cannot be told is reported, never removed without a run id;
doctor never advises a bare ``nearmetal cleanup``.

These tests use ``nearmetal cleanup --dry-run`` for the bare case (this machine is shared: a real bare cleanup
would also remove other people's dead runs) and the real removal with the test's own run id."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from conftest import nearmetal_argv, needs_root, needs_tool

from nearmetal.doctor.leftovers import check_leftovers
from nearmetal.host import runlock
from nearmetal.host.cleanup import UNKNOWN_OWNER, find_leftovers, partition_live
from nearmetal.layers.mounts import is_mounted, unmount

pytestmark = [
    needs_root,
    needs_tool("bindfs"),
    pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="no FUSE"),
]


def _bindfs(base: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    layer = base / name
    (layer / "src").mkdir(parents=True)
    (layer / "mnt").mkdir()
    daemon = subprocess.Popen(
        ["bindfs", "-f", str(layer / "src"), str(layer / "mnt")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not is_mounted(layer / "mnt"):
        assert daemon.poll() is None and time.monotonic() < deadline, "bindfs did not mount"
        time.sleep(0.02)
    return daemon, layer / "mnt"


def _stop(daemon: subprocess.Popen, mnt: Path) -> None:
    unmount(mnt)
    if daemon.poll() is None:
        daemon.kill()
    daemon.wait(timeout=10)


def test_a_live_runs_fuse_daemon_survives_a_bare_cleanup(tmp_path: Path) -> None:
    run_id = f"t18live-{secrets.token_hex(3)}"
    env = {k: v for k, v in os.environ.items() if k != runlock.RUN_ENV}
    started: list[tuple[subprocess.Popen, Path]] = []
    lock = runlock.RunLock(run_id).acquire()
    try:
        _live_then_dead(tmp_path, run_id, env, started, lock)
    finally:
        lock.release()
        for daemon, mnt in started:
            _stop(daemon, mnt)


def _live_then_dead(
    tmp_path: Path,
    run_id: str,
    env: dict[str, str],
    started: list[tuple[subprocess.Popen, Path]],
    lock: runlock.RunLock,
) -> None:
    # named like a layer's directory: the run id is read from the daemon's arguments
    named = _bindfs(tmp_path, f"nearmetal-{run_id}-0123456789-w0-bindfs", env)
    started.append(named)
    # a path that names no run, but the run id in the daemon's environment
    by_env = _bindfs(tmp_path, f"nearmetal-{run_id}x-odd", {**env, runlock.RUN_ENV: run_id})
    started.append(by_env)
    # no run id anywhere: whose it is cannot be told
    unknown = _bindfs(tmp_path, f"nearmetal-{secrets.token_hex(3)}orphan", env)
    started.append(unknown)

    dead, kept = partition_live(find_leftovers())
    mine = {str(d.pid) for d, _ in started}
    dead_mine = [x for x in dead if x.name.split()[0] in mine]
    assert dead_mine == [], [str(x) for x in dead_mine]
    why = {leftover.name.split()[0]: reason for leftover, reason in kept}
    assert f"run {run_id} is still running" in why[str(named[0].pid)]
    assert f"run {run_id} is still running" in why[str(by_env[0].pid)]
    assert why[str(unknown[0].pid)] == UNKNOWN_OWNER

    dry = subprocess.run(
        [*nearmetal_argv(), "cleanup", "--dry-run"], capture_output=True, text=True, timeout=120
    )
    assert dry.returncode == 0, dry.stderr
    for daemon, _ in started:
        line = next(x for x in dry.stdout.splitlines() if x.startswith(f"process {daemon.pid} "))
        assert "(kept:" in line, line

    findings = check_leftovers()
    for finding in findings:
        assert finding.fix.strip() != "nearmetal cleanup", finding
        assert f"nearmetal cleanup {run_id}" not in finding.fix, finding
    assert any("whose run cannot be told" in f.title for f in findings)
    assert all(daemon.poll() is None for daemon, _ in started)
    assert all(is_mounted(mnt) for _, mnt in started)
    lock.release()
    # the run is dead now: its own cleanup removes its daemons, and the orphan is still left alone
    proc = subprocess.run([*nearmetal_argv(), "cleanup", run_id], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    named[0].wait(timeout=10)
    by_env[0].wait(timeout=10)
    assert unknown[0].poll() is None
