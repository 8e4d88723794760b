"""A rootless trial (a variant with the ``rootless`` layer): the whole trial — its layers, the workload, its
clean-up — runs in a child nearmetal (``python -m nearmetal.backends.exec_trial``) as an ordinary user and,
unless the layer says ``inside: false``, as root of a user namespace that user owns (``unshare --user
--map-root-user [--map-auto] --mount``, ``nearmetal.userns``): what a rootless platform runs. The layers' own
code then runs unchanged as the namespace's root; their mounts and network namespaces live in the child's
namespaces and go with them.

Run by root, the child is started with ``setpriv`` as the layer's ``user``. The run's directory is root's
(0700), so the child works in a directory the user owns on the same disk,
``/var/tmp/nearmetal-<run>-<trial>-rootless`` (its trial directory, spec and outcome, and ``runtime/``, its
``XDG_RUNTIME_DIR``); when the child is done its files are copied into the run's trial directory and the
directory is removed. Run by an ordinary user, the child uses the trial directory itself.

The child carries the run's ``NEARMETAL_RUN_ID`` (the runner's leak sweep and ``nearmetal cleanup`` find it and
everything it started) and ``NEARMETAL_ROOTLESS_CHILD`` (it runs its trial itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nearmetal.errors import PrivilegeError
from nearmetal.interrupts import deferred
from nearmetal.layers.rootless import ROOTLESS_CHILD_ENV, remove_staging, staging_dir
from nearmetal.leftovers import RUN_ENV

CHILD_ENV = ROOTLESS_CHILD_ENV
# the child gets the trial's timeout plus this for its layers' set-up and teardown
SETUP_MARGIN_S = 300.0
TERM_GRACE_S = 60.0


def user_argv(user: str, argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` as ``user``: its uid, gid and groups, a clean environment (setpriv's: HOME, USER, PATH …)
    plus ``env``."""
    return [
        "setpriv", "--reuid", user, "--regid", user, "--init-groups", "--reset-env", "--",
        "env", *(f"{k}={v}" for k, v in env.items()), *argv,
    ]  # fmt: skip


def child_env(run_id: str, runtime_dir: Path | None = None) -> dict[str, str]:
    # the runner's PATH (root's has the sbin directories, where iproute2's bridge and mount helpers live)
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":")
    path += [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in path]
    env = {RUN_ENV: run_id, CHILD_ENV: "1", "PATH": ":".join(path)}
    if runtime_dir is not None:
        env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    # the same nearmetal as the runner's (a source checkout on PYTHONPATH included)
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def check_user_can_run(user: str) -> None:
    """The user exists and can start this nearmetal (this Python, its packages): before anything runs."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(
            f"the rootless layer's user {user} does not exist on this host",
            fix=f"useradd --create-home {user} (and give it subordinate ids: bash scripts/test-user.sh {user})",
        ) from None
    if pw.pw_uid == 0:
        raise PrivilegeError(f"the rootless layer's user {user} is root", fix="name an ordinary user")
    argv = user_argv(user, [sys.executable, "-c", "import nearmetal.trial"], child_env("preflight"))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PrivilegeError(f"could not start nearmetal as {user}: {exc}") from None
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise PrivilegeError(
            f"user {user} cannot run this nearmetal ({sys.executable}): {said[-1] if said else proc.returncode}",
            fix=f"install nearmetal where {user} can read and run it (a virtual environment outside /root), or "
            f"let {user} through the directories above it (setfacl -m u:{user}:x DIR; "
            "scripts/test-user.sh does this for the test user)",
        )


def _chown(path: Path, pw: pwd.struct_passwd) -> None:
    os.chown(path, pw.pw_uid, pw.pw_gid)


def _open_users_file(path: Path) -> int | None:
    """A descriptor of a regular file the user's child wrote, never following a link it may have put there
    (root reads it); None when it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _copy_back(source: Path, trial_dir: Path, depth: int = 0) -> None:
    """The child's regular files (and directories) into the run's trial directory, owned by root like every
    other trial's; links the user's child made are left behind, never followed."""
    if depth > 16 or source.is_symlink() or not source.is_dir():
        return
    trial_dir.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        target = trial_dir / entry.name
        if entry.is_symlink():
            continue
        if entry.is_dir():
            _copy_back(entry, target, depth + 1)
            continue
        fd = _open_users_file(entry)
        if fd is None:
            continue
        with contextlib.suppress(OSError), os.fdopen(fd, "rb") as src:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            with open(target, "xb") as dst:
                shutil.copyfileobj(src, dst)


def _read_outcome(path: Path) -> dict[str, Any] | None:
    fd = _open_users_file(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            data = json.loads(f.read(64 << 20))
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


def _stop_child(proc: subprocess.Popen) -> None:
    """SIGTERM (the child tears its layers down and writes its outcome), then its whole tree."""
    from nearmetal.backends.local import kill_tree

    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid, grace_s=1.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _child_argv(spec_path: Path, out_path: Path, unshare: list[str]) -> list[str]:
    return [*unshare, sys.executable, "-m", "nearmetal.backends.exec_trial", str(spec_path), str(out_path)]


def execute_rootless(spec: dict[str, Any], inside: bool, mapping: str, user: str | None) -> dict[str, Any]:
    """Execute ``spec`` (a ``trial.TrialSpec`` as a dict) in a child nearmetal as ``user`` (root's choice;
    None: this process's own user), inside a user namespace unless ``inside`` is false; its
    ``TrialOutcome`` as a dict. KeyboardInterrupt passes through after the child has torn its trial down
    (and, run by root, its files were copied back)."""
    from nearmetal.userns import current_user, unshare_argv

    as_root = os.geteuid() == 0
    if as_root and not user:
        raise PrivilegeError(
            "the rootless layer needs user: NAME when nearmetal runs as root", fix="give the layer user: NAME"
        )
    name = user if as_root and user else current_user()
    unshare, chosen = unshare_argv(name, mapping) if inside else ([], "none")
    trial_dir = Path(spec["trial_dir"])
    run_id = spec["run_id"]
    trial_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    staging: Path | None = None
    if as_root:
        pw = pwd.getpwnam(name)
        staging = staging_dir(run_id, spec["trial_key"])
        remove_staging(staging)
        # made and filled while it is still root's, then given to the user: root never writes into a
        # directory the user could have put a link in
        staging.mkdir(mode=0o700)
        child_trial, runtime = staging / "trial", staging / "runtime"
        spec_path, out_path = staging / "spec.json", staging / "outcome.json"
        spec_path.write_text(json.dumps({**spec, "trial_dir": str(child_trial)}, indent=1))
        for made in (child_trial, runtime):
            made.mkdir(mode=0o700)
        for made in (child_trial, runtime, spec_path, staging):
            _chown(made, pw)
        argv = user_argv(name, _child_argv(spec_path, out_path, unshare), child_env(run_id, runtime))
        cwd = staging
    else:
        child_trial = trial_dir
        spec_path, out_path = trial_dir / "rootless-spec.json", trial_dir / "rootless-outcome.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        env = {**os.environ, **child_env(run_id)}
        argv = ["env", *(f"{k}={v}" for k, v in env.items() if k in (CHILD_ENV, RUN_ENV, "PYTHONPATH"))]
        argv += _child_argv(spec_path, out_path, unshare)
        cwd = trial_dir
    log_path = trial_dir / "rootless-child.log"
    proc: subprocess.Popen | None = None
    try:
        with open(log_path, "wb") as log:
            with deferred():
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd, close_fds=True
                )
            try:
                proc.wait(timeout=float(spec["timeout"]) + SETUP_MARGIN_S)
            except subprocess.TimeoutExpired:
                _stop_child(proc)
        found = _read_outcome(out_path)
        if found is not None:
            outcome = found
        else:
            said = log_path.read_text(errors="replace").strip().splitlines()
            outcome = {
                "status": "error",
                "wall_s": time.time() - started,
                "error": f"the rootless trial (as {name}) wrote no outcome (exit {proc.returncode}): "
                + (said[-1] if said else "no output"),
                "started_at": started,
                "ended_at": time.time(),
            }
    finally:
        if proc is not None and proc.poll() is None:
            _stop_child(proc)
        if staging is not None:
            _copy_back(child_trial, trial_dir)
            remove_staging(staging)
    outcome["output_dir"] = str(trial_dir)
    outcome["placement"] = {
        **outcome.get("placement", {}),
        "as_user": {
            "user": name,
            "uid": pwd.getpwnam(name).pw_uid,
            "started_by_root": as_root,
            "user_namespace": chosen,
            "child_exit": proc.returncode if proc else None,
        },
    }
    return outcome


__all__ = ["check_user_can_run", "execute_rootless"]
