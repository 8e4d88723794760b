"""Which runs are alive on this host: one lock file per run, held (``flock``) while the run's process lives.

The kernel releases an ``flock`` when its process dies, however it dies (SIGKILL, OOM kill, power loss ends
everything anyway), so a lock file that nobody holds belongs to a dead run. That is what lets
``nearmetal resume`` refuse to run a run twice at once, and ``nearmetal cleanup`` remove what dead runs left
without touching the objects of a run that is still measuring.

Lock files live in ``/run/nearmetal`` (root; a tmpfs that a reboot empties, as it should) or
``$XDG_RUNTIME_DIR/nearmetal`` / ``/tmp/nearmetal-<uid>`` otherwise; ``NEARMETAL_LOCK_DIR`` overrides. Each is
used only once verified (issue 26, ``safefs.private_dir``): owned by this user, mode 0700, not a link, every
directory above safe; a directory another user made first is refused with one line. Root also reads the lock
directories of ordinary users' runs (so ``cleanup`` spares their live objects), each only when it is a real
0700 directory owned by the uid its name says. Lock files are opened through the directory's descriptor
(``O_NOFOLLOW|O_NONBLOCK``, regular files only), a run is alive when its lock is held (``flock``), never
because of a pid written inside, and a pid is named (``kill N``) only when that process carries the run's id.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nearmetal.errors import NearmetalError
from nearmetal.host import leftovers, safefs

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


@dataclass
class LockDir:
    """A verified lock directory, held open: every file in it is reached through ``fd``."""

    path: Path
    fd: int
    uid: int

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _own_lock_paths() -> list[Path]:
    """Where this process's lock files go, in order of preference."""
    override = os.environ.get("NEARMETAL_LOCK_DIR")
    if override:
        return [Path(override)]
    if os.geteuid() == 0:
        return [Path("/run/nearmetal")]
    dirs = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        dirs.append(Path(runtime) / "nearmetal")
    dirs.append(Path(tempfile.gettempdir()) / f"nearmetal-{os.geteuid()}")
    return dirs


def _own_dir() -> LockDir:
    """This user's lock directory, made or verified (owner, 0700, not a link, safe ancestors)."""
    problem: safefs.UnsafePathError | None = None
    for path in _own_lock_paths():
        try:
            fd = safefs.private_dir(path, 0o700)
        except safefs.UnsafePathError as exc:
            problem = problem or exc
            continue
        except OSError:
            continue
        return LockDir(path, fd, os.geteuid())
    if problem is not None:
        raise NearmetalError(
            f"no safe directory for run lock files: {problem.message}",
            fix="remove that directory (check who made it), or set NEARMETAL_LOCK_DIR to a directory only you "
            "can write",
        )
    raise NearmetalError(
        "no writable directory for run lock files",
        fix="set NEARMETAL_LOCK_DIR to a directory you can write",
    )


def _open_users_dir(path: Path, uid: int) -> LockDir | None:
    """Another user's lock directory, as root reads it: a real directory (not a link), owned by ``uid``, mode
    0700, in a directory only root (or sticky) can change; None otherwise."""
    try:
        parent = safefs.open_dir(path.parent, check=False)
    except OSError:
        return None
    try:
        fd = os.open(path.name, safefs.DIR_FLAGS, dir_fd=parent)
    except OSError:
        return None
    finally:
        os.close(parent)
    st = os.fstat(fd)
    if st.st_uid != uid or stat.S_IMODE(st.st_mode) & 0o077:
        os.close(fd)
        return None
    return LockDir(path, fd, uid)


def _other_dirs() -> list[LockDir]:
    """Root's view of ordinary users' lock directories (``/tmp/nearmetal-<uid>``,
    ``/run/user/<uid>/nearmetal``), the verified ones only."""
    if os.geteuid() != 0 or os.environ.get("NEARMETAL_LOCK_DIR"):
        return []
    found: list[LockDir] = []
    tmp = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in sorted(tmp.iterdir()):
            suffix = entry.name.removeprefix("nearmetal-")
            ok = entry.name.startswith("nearmetal-") and suffix.isdigit() and int(suffix) != 0
            if ok and (opened := _open_users_dir(entry, int(suffix))) is not None:
                found.append(opened)
    with contextlib.suppress(OSError):
        for entry in sorted(Path("/run/user").iterdir()):
            ok = entry.name.isdigit() and int(entry.name) != 0
            if ok and (opened := _open_users_dir(entry / "nearmetal", int(entry.name))) is not None:
                found.append(opened)
    return found


@contextlib.contextmanager
def _readable_dirs() -> Iterator[list[LockDir]]:
    """Every lock directory this process may read: its own (when it can be made or verified), then, for root,
    the verified ones of ordinary users."""
    dirs: list[LockDir] = []
    with contextlib.suppress(NearmetalError):
        dirs.append(_own_dir())
    dirs += _other_dirs()
    try:
        yield dirs
    finally:
        for d in dirs:
            d.close()


def lock_dirs() -> list[Path]:
    """The lock directories this process reads, its own first (each verified)."""
    with _readable_dirs() as dirs:
        return [d.path for d in dirs]


def _lock_names(directory: LockDir) -> list[str]:
    try:
        names = os.listdir(directory.fd)
    except OSError:
        return []
    return sorted(n for n in names if n.endswith(".lock") and re.fullmatch(RUN_ID_PATTERN, n[:-5]))


def _open_lock(directory: LockDir, name: str, flags: int = os.O_RDONLY) -> int | None:
    """A lock file of ``directory``: a regular file, never through a link, never blocking on a FIFO."""
    try:
        fd = os.open(name, flags | safefs.FILE_FLAGS, 0o600, dir_fd=directory.fd)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (directory.uid != os.geteuid() and st.st_uid != directory.uid):
        os.close(fd)
        return None
    return fd


@dataclass
class LiveRun:
    run_id: str
    pid: int | None
    host: str
    started_at: float | None
    lock_file: Path
    # the pid written in the lock file is a process that holds the lock now (/proc/locks); else it is not
    # repeated as advice: anyone who can write the lock file can write any pid there
    pid_verified: bool = False

    def describe(self) -> str:
        since = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at)) if self.started_at else "?"
        )
        if not self.pid_verified:
            return f"its lock {self.lock_file} is held; since {since}"
        return f"pid {self.pid} on {self.host}, since {since}"


class RunActiveError(NearmetalError):
    """Another process holds the run's lock."""

    def __init__(self, live: LiveRun) -> None:
        stop = (
            f"stop it (kill {live.pid})"
            if live.pid_verified
            else f"find the process holding {live.lock_file} (fuser {live.lock_file}) and stop it"
        )
        super().__init__(
            f"run {live.run_id} is still running ({live.describe()})",
            fix=f"wait for it to end, or {stop} before resuming it",
        )
        self.live = live


def _lock_holders(fd: int) -> set[int]:
    """The pids holding an ``flock`` on ``fd``'s file, as the kernel lists them (``/proc/locks``): the truth
    about who holds a lock, whatever pid the file says."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" ("->" marks a waiter)
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == key and parts[4].isdigit():
                holders.add(int(parts[4]))
    return holders


def _pid_of_run(pid: object, fd: int) -> int | None:
    """``pid`` when it is (not pid 1) a process that holds this lock file's ``flock`` now."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return None
    return pid if pid in _lock_holders(fd) else None


def _read_info(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _live_run(directory: LockDir, run_id: str, fd: int) -> LiveRun:
    info = _read_info(fd)
    pid = _pid_of_run(info.get("pid"), fd)
    host = info.get("host")
    started = info.get("started_at")
    return LiveRun(
        run_id,
        pid if pid is not None else None,
        host if isinstance(host, str) else "?",
        float(started) if isinstance(started, (int, float)) and not isinstance(started, bool) else None,
        directory.path / f"{run_id}.lock",
        pid_verified=pid is not None,
    )


def _held(fd: int) -> bool:
    """True when a live process holds the lock (a shared lock cannot be taken)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


class RunLock:
    """Held for as long as a run's process works on it; ``acquire`` fails if another live process holds it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = check_run_id(run_id)
        self.path: Path | None = None
        self._fd: int | None = None
        self._dir: LockDir | None = None

    def acquire(self, retry_s: float = 1.0) -> RunLock:
        deadline = time.monotonic() + retry_s
        name = f"{self.run_id}.lock"
        directory = _own_dir()
        try:
            while True:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | safefs.FILE_FLAGS, 0o600, dir_fd=directory.fd)
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    raise NearmetalError(
                        f"{directory.path / name} is not a regular file; refused",
                        fix=f"remove {directory.path / name}",
                    )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        os.close(fd)
                        raise
                    # a `live_runs()` probe holds it for an instant; a live run holds it for good
                    if time.monotonic() >= deadline:
                        live = _live_run(directory, self.run_id, fd)
                        os.close(fd)
                        raise RunActiveError(live) from None
                    os.close(fd)
                    time.sleep(0.05)
                    continue
                # the file may have been removed (a release, a cleanup of stale locks) between open and
                # flock: a lock on an unlinked file protects nothing, so start again on the file now there
                try:
                    same = os.path.samestat(
                        os.fstat(fd), os.stat(name, dir_fd=directory.fd, follow_symlinks=False)
                    )
                except OSError:
                    same = False
                if same:
                    break
                os.close(fd)
        except BaseException:
            directory.close()
            raise
        info = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": time.time(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.path, self._fd, self._dir = directory.path / name, fd, directory
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # unlink while still holding the lock, so nobody can take a lock on a file about to vanish
        if self._dir is not None:
            with contextlib.suppress(OSError):
                os.unlink(f"{self.run_id}.lock", dir_fd=self._dir.fd)
            self._dir.close()
            self._dir = None
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def find_lock_file(run_id: str) -> Path | None:
    name = f"{run_id}.lock"
    with _readable_dirs() as dirs:
        for directory in dirs:
            fd = _open_lock(directory, name)
            if fd is not None:
                os.close(fd)
                return directory.path / name
    return None


def live_runs() -> dict[str, LiveRun]:
    """Runs whose process is alive on this host, by run id (decided by their lock being held)."""
    out: dict[str, LiveRun] = {}
    with _readable_dirs() as dirs:
        for directory in dirs:
            for name in _lock_names(directory):
                run_id = name.removesuffix(".lock")
                if run_id in out or (fd := _open_lock(directory, name)) is None:
                    continue
                try:
                    if _held(fd):
                        out[run_id] = _live_run(directory, run_id, fd)
                finally:
                    os.close(fd)
    return out


def is_live(run_id: str) -> LiveRun | None:
    check_run_id(run_id)
    name = f"{run_id}.lock"
    with _readable_dirs() as dirs:
        for directory in dirs:
            if (fd := _open_lock(directory, name)) is None:
                continue
            try:
                if _held(fd):
                    return _live_run(directory, run_id, fd)
            finally:
                os.close(fd)
    return None


def stale_lock_files() -> list[Path]:
    """Lock files whose run is dead (nobody holds them), in verified lock directories only."""
    out = []
    with _readable_dirs() as dirs:
        for directory in dirs:
            for name in _lock_names(directory):
                if (fd := _open_lock(directory, name)) is None:
                    continue
                try:
                    if not _held(fd):
                        out.append(directory.path / name)
                finally:
                    os.close(fd)
    return out


def remove_stale_lock(path: Path) -> None:
    """Remove a dead run's lock file, unless a process took it in the meantime: only a regular ``*.lock`` file
    of a run id, in a lock directory that is verified again now, reached through its descriptor."""
    name = path.name
    if not (name.endswith(".lock") and re.fullmatch(RUN_ID_PATTERN, name[:-5])):
        return
    with _readable_dirs() as dirs:
        directory = next((d for d in dirs if d.path == path.parent), None)
        if directory is None:
            return
        fd = _open_lock(directory, name, os.O_RDWR)
        if fd is None:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # alive again (resumed): not stale any more
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), os.stat(name, dir_fd=directory.fd, follow_symlinks=False)):
                    os.unlink(name, dir_fd=directory.fd)
        finally:
            os.close(fd)
