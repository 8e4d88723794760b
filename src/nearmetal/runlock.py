"""Which runs are alive on this host: one lock file per run, held (``flock``) while the run's process lives.

The kernel releases an ``flock`` when its process dies, however it dies (SIGKILL, OOM kill, power loss ends
everything anyway), so a lock file that nobody holds belongs to a dead run. That is what lets
``nearmetal resume`` refuse to run a run twice at once, and ``nearmetal cleanup`` remove what dead runs left
without touching the objects of a run that is still measuring.

Lock files live in ``/run/nearmetal`` (root; a tmpfs that a reboot empties, as it should) or
``$XDG_RUNTIME_DIR/nearmetal`` / ``/tmp/nearmetal-<uid>`` otherwise; ``NEARMETAL_LOCK_DIR`` overrides.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nearmetal import leftovers
from nearmetal.errors import NearmetalError

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# set in the environment of every process a run starts, so its process tree can be found after a SIGKILL
RUN_ENV = leftovers.RUN_ENV


def check_run_id(run_id: str) -> str:
    """A run id is part of file names and host object names: letters, digits, '.', '_', '-' only."""
    if not re.fullmatch(RUN_ID_PATTERN, run_id) or ".." in run_id:
        raise NearmetalError(
            f"{run_id!r} is not a usable run id",
            fix="use 1-64 letters, digits, '.', '_' or '-' (no leading symbol, no '..')",
        )
    return run_id


def lock_dirs() -> list[Path]:
    """Where lock files may be, the one this process writes first."""
    override = os.environ.get("NEARMETAL_LOCK_DIR")
    if override:
        return [Path(override)]
    dirs = []
    if os.geteuid() == 0:
        dirs.append(Path("/run/nearmetal"))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        dirs.append(Path(runtime) / "nearmetal")
    dirs.append(Path(tempfile.gettempdir()) / f"nearmetal-{os.geteuid()}")
    if os.geteuid() == 0:
        # root also sees the runs unprivileged users started (their objects are in the same host tables)
        tmp = Path(tempfile.gettempdir())
        with contextlib.suppress(OSError):
            dirs += sorted(p for p in tmp.glob("nearmetal-[0-9]*") if p.is_dir() and p not in dirs)
    return list(dict.fromkeys(dirs))


def _writable_lock_dir() -> Path:
    for directory in lock_dirs():
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return directory
    raise NearmetalError(
        "no writable directory for run lock files",
        fix="set NEARMETAL_LOCK_DIR to a directory you can write",
    )


@dataclass
class LiveRun:
    run_id: str
    pid: int | None
    host: str
    started_at: float | None
    lock_file: Path

    def describe(self) -> str:
        since = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at)) if self.started_at else "?"
        )
        return f"pid {self.pid} on {self.host}, since {since}"


class RunActiveError(NearmetalError):
    """Another process holds the run's lock."""

    def __init__(self, live: LiveRun) -> None:
        super().__init__(
            f"run {live.run_id} is still running ({live.describe()})",
            fix=f"wait for it to end, or stop it (kill {live.pid}) before resuming it",
        )
        self.live = live


def _read_info(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


class RunLock:
    """Held for as long as a run's process works on it; ``acquire`` fails if another live process holds it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = check_run_id(run_id)
        self.path: Path | None = None
        self._fd: int | None = None

    def acquire(self, retry_s: float = 1.0) -> RunLock:
        deadline = time.monotonic() + retry_s
        while True:
            path = find_lock_file(self.run_id) or _writable_lock_dir() / f"{self.run_id}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                # a `live_runs()` probe holds it for an instant; a live run holds it for good
                if time.monotonic() >= deadline:
                    info = _read_info(path)
                    raise RunActiveError(
                        LiveRun(
                            self.run_id, info.get("pid"), info.get("host", "?"), info.get("started_at"), path
                        )
                    ) from None
                time.sleep(0.05)
                continue
            # the file may have been removed (a release, a cleanup of stale locks) between open and flock:
            # a lock on an unlinked file protects nothing, so start again on the file now at that path
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        info = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": time.time(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.path, self._fd = path, fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # unlink while still holding the lock, so nobody can take a lock on a file about to vanish
        with contextlib.suppress(OSError):
            if self.path is not None:
                self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def find_lock_file(run_id: str) -> Path | None:
    for directory in lock_dirs():
        path = directory / f"{run_id}.lock"
        if path.is_file() and not path.is_symlink():
            return path
    return None


def _probe(path: Path) -> bool:
    """True when a live process holds the lock (a shared lock cannot be taken)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def live_runs() -> dict[str, LiveRun]:
    """Runs whose process is alive on this host, by run id."""
    out: dict[str, LiveRun] = {}
    for directory in lock_dirs():
        try:
            files = sorted(directory.glob("*.lock"))
        except OSError:
            continue
        for path in files:
            run_id = path.name.removesuffix(".lock")
            if run_id in out or not _probe(path):
                continue
            info = _read_info(path)
            out[run_id] = LiveRun(
                run_id, info.get("pid"), info.get("host", "?"), info.get("started_at"), path
            )
    return out


def is_live(run_id: str) -> LiveRun | None:
    path = find_lock_file(run_id)
    if path is None or not _probe(path):
        return None
    info = _read_info(path)
    return LiveRun(run_id, info.get("pid"), info.get("host", "?"), info.get("started_at"), path)


def stale_lock_files() -> list[Path]:
    """Lock files whose run is dead (nobody holds them)."""
    out = []
    for directory in lock_dirs():
        try:
            files = sorted(directory.glob("*.lock"))
        except OSError:
            continue
        out += [p for p in files if not p.is_symlink() and not _probe(p)]
    return out


def remove_stale_lock(path: Path) -> None:
    """Remove a dead run's lock file, unless a process took it in the meantime."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return  # alive again (resumed): not stale any more
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
