"""The run's directory, its trial directories, the store file it may have made, and the environment every
process of the run inherits."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from nearmetal.errors import NearmetalError
from nearmetal.host import runlock, safefs
from nearmetal.store import Store


def make_run_dir(run_dir: Path, resuming: bool, allow_shared: bool = False) -> int:
    """Make (or, resuming, reopen) the run's directory and return its descriptor: reached from / without
    following a link, every directory above it one that only root or this user can change (unless
    ``allow_shared``: ``--allow-shared-workdir``), itself owned by this user, mode 0700 (trial outputs may hold
    what the workloads printed). Trial directories are then made through the descriptor
    (:func:`fresh_trial_dir`), never by resolving the path again (issue 26)."""
    try:
        # the workdir and the directories above it (made where missing, one component at a time)
        os.close(safefs.open_dir(run_dir.parent, create_mode=0o755, check=not allow_shared))
        fd = safefs.private_dir(run_dir, 0o700, check_parents=not allow_shared)
    except safefs.UnsafePathError as exc:
        raise NearmetalError(
            f"the run directory {run_dir}: {exc.message}",
            fix="give --workdir a directory only root or you can write (or pass --allow-shared-workdir "
            "if you trust every user who can)",
        ) from None
    if not resuming and os.listdir(fd):
        os.close(fd)
        raise NearmetalError(
            f"the run directory {run_dir} already holds files of another run",
            fix="give another --run-id or --workdir",
        )
    return fd


def check_run_dir(run_dir: Path, fd: int) -> None:
    """The run's path still leads to the directory made at the start (a workdir another user can write,
    allowed with ``--allow-shared-workdir``, could have been swapped meanwhile)."""
    try:
        same = os.path.samestat(os.stat(run_dir, follow_symlinks=False), os.fstat(fd))
    except OSError:
        same = False
    if not same:
        raise NearmetalError(
            f"the run directory {run_dir} is no longer the directory this run made (moved or replaced); "
            "stopped before writing there",
            fix="find out who changed it; give --workdir a directory only root or you can write",
        )


def fresh_trial_dir(run_dir: Path, trial_key: str, run_fd: int | None = None) -> None:
    """A trial interrupted by a crash left a partial directory: keep it aside, start the new attempt in an
    empty one (never write through whatever the old attempt left there). With the run directory's
    descriptor, both happen through it, and the new trial directory is made there."""
    if run_fd is None:
        trial_dir = run_dir / trial_key
        if not (trial_dir.exists() or trial_dir.is_symlink()):
            return
        attempt = 1
        while (aside := run_dir / f"{trial_key}.attempt-{attempt}").exists() or aside.is_symlink():
            attempt += 1
        trial_dir.rename(aside)
        return
    check_run_dir(run_dir, run_fd)

    def there(name: str) -> bool:
        try:
            os.stat(name, dir_fd=run_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    if there(trial_key):
        attempt = 1
        while there(f"{trial_key}.attempt-{attempt}"):
            attempt += 1
        os.rename(trial_key, f"{trial_key}.attempt-{attempt}", src_dir_fd=run_fd, dst_dir_fd=run_fd)
    os.mkdir(trial_key, 0o755, dir_fd=run_fd)


@contextlib.contextmanager
def marked_environment(run_id: str) -> Iterator[None]:
    """Every process the run starts inherits ``NEARMETAL_RUN_ID``, so ``nearmetal cleanup`` can find the
    process tree of a run that died without tearing it down."""
    previous = os.environ.get(runlock.RUN_ENV)
    os.environ[runlock.RUN_ENV] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(runlock.RUN_ENV, None)
        else:
            os.environ[runlock.RUN_ENV] = previous


def new_sqlite_file(db: str | None) -> Path | None:
    """The SQLite file ``db`` names when it does not exist yet (else None)."""
    from sqlalchemy.engine import make_url

    from nearmetal.store.engine import resolve_db_url

    url = make_url(resolve_db_url(db))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    return None if path.exists() else path


def remove_if_empty(store: Store, path: Path) -> None:
    """A plan refused before its run was created leaves no store file behind that it made."""
    with contextlib.suppress(Exception):
        if store.list_runs(limit=1):
            return
        store.dispose()
        for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}-journal"):
            with contextlib.suppress(OSError):
                (path.parent / name).unlink()
