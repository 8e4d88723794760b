"""A hostile local user on the same host (issue 26, cases 1, 2, 3, 4, 7, 8): root and the test user that
``scripts/test-user.sh`` creates, the attacks as they were observed, each now ending in a refusal or a confined
result. The races are driven by loops the test user runs (``runuser``) while root works."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import is_root, nearmetal_argv
from helpers import write_plan

from nearmetal.errors import NearmetalError
from nearmetal.host import runlock
from nearmetal.host.mountinfo import is_mounted
from nearmetal.layers.rootless import LEGACY_STAGING_BASE, TEST_USER_ENV
from nearmetal.run.asuser import copy_back

TEST_USER = os.environ.get(TEST_USER_ENV, "nearmetal-test")
PY = sys.executable


def _user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        return None


USER = _user()
pytestmark = [
    pytest.mark.skipif(
        not is_root() or USER is None,
        reason=f"needs root and the test user {TEST_USER} (bash scripts/test-user.sh creates it)",
    ),
    pytest.mark.root,
]


@pytest.fixture
def user_dir() -> Iterator[Path]:
    """A directory the test user owns, where it prepares its attacks."""
    assert USER is not None
    path = Path(tempfile.mkdtemp(prefix="nm-hostile-user-", dir="/var/tmp"))
    os.chown(path, USER.pw_uid, USER.pw_gid)
    path.chmod(0o755)
    yield path
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(str(path) + "/"):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    shutil.rmtree(path, ignore_errors=True)


def as_user(*argv: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = ["env", f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}"]
    return subprocess.run(
        ["runuser", "-u", TEST_USER, "--", *env, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )


def user_loop(script: str, *args: str | Path) -> subprocess.Popen[str]:
    """A bash loop the test user runs until stopped (``stop``)."""
    return subprocess.Popen(
        ["runuser", "-u", TEST_USER, "--", "bash", "-c", script, "loop", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        cwd="/",
    )


def stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def nearmetal(*args: str, cwd: Path, db: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*nearmetal_argv(), *args],
        cwd=cwd,
        env={**os.environ, "NEARMETAL_DB": f"sqlite:///{db}", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- case 1: cleanup unmounts only what was mounted ----------------------------------------------------------


@pytest.mark.skipif(not shutil.which("bindfs"), reason="needs bindfs")
def test_cleanup_never_unmounts_through_a_parent_swapped_for_a_link(tmp_path: Path, user_dir: Path) -> None:
    from nearmetal.host.cleanup import find_leftovers

    run_id = f"hu1-{secrets.token_hex(3)}"
    named = user_dir / f"nearmetal-{run_id}-0123456789-w0-x"
    moved = user_dir / "moved"
    victim = tmp_path / "victim"
    (victim / "boot").mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "nm-victim", victim / "boot"], check=True, timeout=10
    )
    try:
        (victim / "boot" / "marker").write_text("root's mount\n")
        made = as_user(
            "bash",
            "-c",
            'mkdir -p "$1/boot" "$1/src" && bindfs --no-allow-other "$1/src" "$1/boot"',
            "x",
            named,
        )
        assert made.returncode == 0, made.stderr
        mounts = [x for x in find_leftovers(run_id) if x.kind.startswith("mount")]
        assert [x.name for x in mounts] == [str(named / "boot")]
        # between cleanup's listing and its unmount, the user swaps the directory for a link to root's mount
        assert (
            as_user("bash", "-c", 'mv "$1" "$2" && ln -s "$3" "$1"', "x", named, moved, victim).returncode
            == 0
        )
        with pytest.raises(NearmetalError, match="link"):
            mounts[0].remove()
        assert is_mounted(victim / "boot") and (victim / "boot" / "marker").exists()
        assert as_user("bash", "-c", 'rm "$1" && mv "$2" "$1"', "x", named, moved).returncode == 0
        # and the race as observed: the user swaps back and forth in a loop while root's cleanup runs
        swapper = user_loop(
            'while true; do mv "$1" "$2"; ln -s "$3" "$1"; rm "$1"; mv "$2" "$1"; done', named, moved, victim
        )
        try:
            for _ in range(3):
                nearmetal("cleanup", run_id, cwd=tmp_path, db=tmp_path / "r.db", timeout=60)
        finally:
            stop(swapper)
        assert is_mounted(victim / "boot") and (victim / "boot" / "marker").read_text() == "root's mount\n"
    finally:
        subprocess.run(["umount", "-l", victim / "boot"], capture_output=True, timeout=30)


# --- case 2: a run never writes through a directory another user controls ------------------------------------

COMMAND_PLAN = f"""
name: hostile-workdir
workloads:
  w: {{kind: command, params: {{argv: [{PY!r}, -c, "print('workload output ' * 100)"]}}}}
variants: {{a: []}}
repeats: 2
timeout: 30s
"""


def test_a_workdir_another_user_can_write_is_refused(tmp_path: Path, user_dir: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    plan = write_plan(tmp_path, COMMAND_PLAN)
    run_id = f"hu2-{secrets.token_hex(3)}"
    assert as_user("mkdir", user_dir / "runs").returncode == 0
    # the user replaces the run directory with its own, holding main.stdout -> victim in every trial directory
    attack = (
        'while true; do if [ -d "$1/$2" ] && [ ! -L "$1/$2" ]; then mv "$1/$2" "$1/$2.root" 2>/dev/null; '
        'mkdir -p "$1/$2"; fi; for d in "$1/$2"/*/; do ln -sf "$3" "$d/main.stdout" 2>/dev/null; done; done'
    )
    swapper = user_loop(attack, user_dir / "runs", run_id, victim)
    try:
        proc = nearmetal(
            "run", str(plan), "--run-id", run_id, "--workdir", str(user_dir / "runs"), "-q", "--no-html",
            cwd=tmp_path, db=tmp_path / "r.db",
        )  # fmt: skip
    finally:
        stop(swapper)
    assert proc.returncode != 0
    assert f"owned by {TEST_USER}" in proc.stderr and "--allow-shared-workdir" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert victim.read_text() == "precious\n"
    assert not (user_dir / "runs" / f"{run_id}.root").exists()  # root made nothing there

    # the default ./nearmetal-runs in a checkout the user owns: the same
    proc = nearmetal("run", str(plan), "-q", "--no-html", cwd=user_dir, db=tmp_path / "r.db")
    assert proc.returncode != 0 and "--allow-shared-workdir" in proc.stderr, proc.stderr
    assert not (user_dir / "nearmetal-runs").exists()

    # asked for explicitly, it runs (the user is trusted then), into a run directory of root's own
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    proc = nearmetal(
        "run", str(plan), "--workdir", str(shared), "--allow-shared-workdir", "-q", "--no-html",
        cwd=tmp_path, db=tmp_path / "r.db",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = shared.iterdir()
    assert run_dir.stat().st_uid == 0 and run_dir.stat().st_mode & 0o777 == 0o700


# --- case 3: copy-back never follows a directory the child swaps for a link -----------------------------------

SWAPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
os.chdir(sys.argv[1])
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    libc.renameat2(AT_FDCWD, b"trial/d", AT_FDCWD, b"trial/l", RENAME_EXCHANGE)
"""


def test_copy_back_never_follows_a_directory_exchanged_for_a_link(tmp_path: Path, user_dir: Path) -> None:
    script = user_dir / "swap.py"
    script.write_text(SWAPPER)
    made = as_user(
        "bash", "-c", 'mkdir -p "$1/trial/d" && echo measured > "$1/trial/d/f" && ln -s /etc "$1/trial/l"',
        "x", user_dir,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    swapper = subprocess.Popen(
        ["runuser", "-u", TEST_USER, "--", PY, str(script), str(user_dir), "8"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    etc_names = set(os.listdir("/etc"))
    seen_real = 0
    fd = os.open(user_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + 5
        i = 0
        while time.monotonic() < deadline:
            dst = tmp_path / f"copy{i}"
            dst.mkdir()
            copy_back(fd, "trial", dst)
            copied = {p.name for p in dst.rglob("*")}
            assert not copied & (etc_names - {"d", "l", "f"}), f"copied from /etc: {copied & etc_names}"
            seen_real += (dst / "d" / "f").exists() or (dst / "l" / "f").exists()
            shutil.rmtree(dst)
            i += 1
    finally:
        os.close(fd)
        swapper.kill()
        swapper.wait(timeout=10)
    assert i > 20 and seen_real > 0  # the copies ran while the swap did, and the child's own file came back


# --- case 4: lock directories and lock files are verified, pids are not trusted -------------------------------


def test_planted_lock_directories_fifos_and_pids_are_not_trusted(
    tmp_path: Path, user_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert USER is not None
    victim_dir = tmp_path / "etc-like"
    victim_dir.mkdir()
    (victim_dir / "victim.lock").write_text("root's\n")
    (victim_dir / "victim.lock").chmod(0o600)
    # another user's /tmp/nearmetal-<uid>: a link to a directory of root's lock-named files
    fake_uid = 60000 + secrets.randbelow(5000)
    planted = Path(f"/tmp/nearmetal-{fake_uid}")
    assert as_user("ln", "-s", victim_dir, planted).returncode == 0
    # a FIFO among the lock files of a real 0700 lock directory of a user
    fifo_uid = fake_uid + 1
    run_user = Path(f"/run/user/{fifo_uid}")
    made_run_user = not Path("/run/user").exists()
    (run_user / "nearmetal").mkdir(parents=True)
    for path in (run_user, run_user / "nearmetal"):
        os.chown(path, fifo_uid, fifo_uid)
        path.chmod(0o700)
    os.mkfifo(run_user / "nearmetal" / "hostile.lock")
    os.chown(run_user / "nearmetal" / "hostile.lock", fifo_uid, fifo_uid)
    holder: subprocess.Popen[str] | None = None
    try:
        dry = nearmetal("cleanup", "--dry-run", cwd=tmp_path, db=tmp_path / "r.db", timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert "victim.lock" not in dry.stdout and "hostile.lock" not in dry.stdout
        done = nearmetal("cleanup", cwd=tmp_path, db=tmp_path / "r.db", timeout=60)
        assert done.returncode == 0, done.stderr
        assert (victim_dir / "victim.lock").read_text() == "root's\n"

        # the user holds a lock of its own with {"pid": 1} inside: root is never told to kill pid 1
        run_id = f"hu4-{secrets.token_hex(3)}"
        hold = (
            "import fcntl, json, os, sys, time\n"
            "d = f'/tmp/nearmetal-{os.getuid()}'\n"
            "os.makedirs(d, mode=0o700, exist_ok=True)\n"
            "fd = os.open(f'{d}/{sys.argv[1]}.lock', os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, json.dumps({'pid': 1, 'host': 'x'}).encode())\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n"
        )
        holder = subprocess.Popen(
            ["runuser", "-u", TEST_USER, "--", PY, "-c", hold, run_id], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        live = runlock.is_live(run_id)
        assert live is not None and not live.pid_verified and "pid 1" not in live.describe()
        with runlock.RunLock(run_id):  # root's own lock lives in root's own directory: not blocked
            pass
        # a lock of root's own held by a process that wrote pid 1: refused, but no `kill 1`
        mine = subprocess.Popen(
            [PY, "-c", hold.replace("/tmp/nearmetal-{os.getuid()}", "/run/nearmetal"), run_id],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert mine.stdout is not None and mine.stdout.readline().strip() == "held"
            with pytest.raises(runlock.RunActiveError) as refused:
                runlock.RunLock(run_id).acquire(retry_s=0.2)
            assert "kill 1" not in str(refused.value) and "fuser" in str(refused.value)
        finally:
            mine.kill()
            mine.wait(timeout=10)
        Path(f"/run/nearmetal/{run_id}.lock").unlink(missing_ok=True)

        # a lock directory that is a link: one line, not "Too many levels of symbolic links"
        assert as_user("ln", "-s", "/etc", user_dir / "locks").returncode == 0
        monkeypatch.setenv("NEARMETAL_LOCK_DIR", str(user_dir / "locks"))
        with pytest.raises(NearmetalError, match="no safe directory for run lock files"):
            runlock.RunLock("x").acquire()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(timeout=10)
            Path(f"/tmp/nearmetal-{USER.pw_uid}/{run_id}.lock").unlink(missing_ok=True)
        planted.unlink(missing_ok=True)
        shutil.rmtree(run_user, ignore_errors=True)
        if made_run_user:
            shutil.rmtree("/run/user", ignore_errors=True)


# --- cases 7 and 8: planted staging names, a forged outcome, a sparse file -------------------------------------

FORGER = r"""
import json, os, signal
with open("sparse", "wb") as f:
    f.write(b"head")
    f.truncate(1 << 40)
forged = {
    "status": "ok", "wall_s": 1.0, "error": "\x1b]0;owned\x07\x1b[2J",
    "metrics": [{"name": "<img src=x onerror=alert(1)>", "value": 1.0, "unit": "s", "direction": "lower"}],
}
with open("../outcome.json.tmp", "w") as f:
    json.dump(forged, f)
os.replace("../outcome.json.tmp", "../outcome.json")
pid = os.getppid()
for _ in range(6):  # end the child nearmetal before it writes the real outcome
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    if b"nearmetal.run.exec_trial" in cmdline:
        os.kill(pid, signal.SIGKILL)
        break
    pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
"""


def test_planted_staging_names_and_a_forged_outcome_are_confined(tmp_path: Path, user_dir: Path) -> None:
    from nearmetal.plan import load_plan

    script = user_dir / "forge.py"
    script.write_text(FORGER)
    plan = write_plan(
        tmp_path,
        f"""
        name: hostile-child
        workloads:
          w: {{kind: command, params: {{argv: [{PY!r}, {str(script)!r}]}}}}
        variants:
          rootless: [{{layer: rootless, user: {TEST_USER}, mapping: self}}]
        repeats: 1
        timeout: 60s
        """,
    )
    run_id = f"hu7-{secrets.token_hex(3)}"
    cell = load_plan(plan).cells[0].cell_id
    # case 7: dangling links at the predictable names older versions staged at, planted before the run
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = [LEGACY_STAGING_BASE / f"nearmetal-{run_id}-{cell}-{k}-rootless" for k in ("r0", "r1", "w0")]
    for path in planted:
        assert (
            as_user(
                "ln", "-s", victim if path.name.endswith("r0-rootless") else "/nonexistent", path
            ).returncode
            == 0
        )
    try:
        proc = nearmetal(
            "run", str(plan), "--run-id", run_id, "--workdir", str(tmp_path / "runs"), "--no-html",
            cwd=tmp_path, db=tmp_path / "r.db", timeout=300,
        )  # fmt: skip
        assert "Traceback" not in proc.stderr and "FileExistsError" not in proc.stderr, proc.stderr
        assert "\x1b]0;owned" not in proc.stderr + proc.stdout
        (trial_dir,) = [p for p in (tmp_path / "runs" / run_id).iterdir() if p.is_dir()]
        # case 8: the sparse terabyte came back as a hole, not as allocated data
        sparse = (trial_dir / "sparse").stat()
        assert sparse.st_size == 1 << 40 and sparse.st_blocks * 512 < 1 << 20
        # the forged outcome was refused with one line, its text never reached the store
        import sqlite3

        with sqlite3.connect(tmp_path / "r.db") as conn:
            ((status, error),) = conn.execute("select status, error from trials where run_id = ?", (run_id,))
            names = (
                [n for (n,) in conn.execute("select name from metrics")]
                if _has_table(conn, "metrics")
                else []
            )
        assert status == "error" and "not a trial outcome (metrics.0.name" in error, error
        assert "\x1b" not in error and not any("<img" in n for n in names)
        # cleanup removes what was planted at the old names (the link, never its target)
        done = nearmetal("cleanup", run_id, cwd=tmp_path, db=tmp_path / "r.db", timeout=60)
        assert done.returncode == 0, done.stderr
        assert not any(os.path.lexists(p) for p in planted)
        assert victim.read_text() == "precious\n"
    finally:
        for path in planted:
            if os.path.islink(path):
                path.unlink()


def _has_table(conn: object, name: str) -> bool:
    import sqlite3

    assert isinstance(conn, sqlite3.Connection)
    return (
        conn.execute("select 1 from sqlite_master where type='table' and name=?", (name,)).fetchone()
        is not None
    )
