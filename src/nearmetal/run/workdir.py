"""The run's directory, its trial directories, the store file it may have made, and the environment every
process of the run inherits."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from nearmetal import runlock
from nearmetal.errors import NearmetalError
from nearmetal.store import Store


def make_run_dir(run_dir: Path, resuming: bool) -> None:
    if run_dir.is_symlink():
        raise NearmetalError(
            f"the run directory {run_dir} is a symbolic link; nearmetal writes only into directories it created",
            fix="remove the link, or give --workdir a real directory",
        )
    if not resuming and run_dir.exists() and any(run_dir.iterdir()):
        raise NearmetalError(
            f"the run directory {run_dir} already holds files of another run",
            fix="give another --run-id or --workdir",
        )
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # trial outputs may hold what the workloads printed: readable by the run's user only
    run_dir.chmod(0o700)


def fresh_trial_dir(run_dir: Path, trial_key: str) -> None:
    """A trial interrupted by a crash left a partial directory: keep it aside, start the new attempt in an
    empty one (never write through whatever the old attempt left there)."""
    trial_dir = run_dir / trial_key
    if not (trial_dir.exists() or trial_dir.is_symlink()):
        return
    attempt = 1
    while (aside := run_dir / f"{trial_key}.attempt-{attempt}").exists() or aside.is_symlink():
        attempt += 1
    trial_dir.rename(aside)


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

    from nearmetal.store.store import resolve_db_url

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
