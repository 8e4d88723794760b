"""Shared fixtures. Tests use the real cgroup filesystem, real programs and real databases; a test whose
component is missing on this machine is skipped with the reason (CI installs everything)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


def nearmetal_argv() -> list[str]:
    return [sys.executable, "-m", "nearmetal.cli"]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture
def run_cli(tmp_path: Path, db_url: str):
    """Run the real ``nearmetal`` command in a subprocess (cwd = tmp_path, store = tmp_path/results.db)."""

    def run(
        *args: str,
        timeout: float = 600,
        check: bool = False,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "NEARMETAL_DB": db_url, "COLUMNS": "200", **(env or {})}
        proc = subprocess.run(
            [*nearmetal_argv(), *args],
            cwd=cwd or tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"nearmetal {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None


def is_root() -> bool:
    return os.geteuid() == 0


def cgroup_v1_cpu_writable() -> bool:
    path = Path("/sys/fs/cgroup/cpu")
    return is_root() and (path / "cgroup.procs").exists() and os.access(path, os.W_OK)


def cpu_cgroup_root() -> Path | None:
    """Where this machine's CPU controller lives (v1 hierarchy or v2 unified root)."""
    if (Path("/sys/fs/cgroup/cpu") / "cgroup.procs").exists():
        return Path("/sys/fs/cgroup/cpu")
    controllers = Path("/sys/fs/cgroup/cgroup.controllers")
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return Path("/sys/fs/cgroup")
    return None


needs_root = pytest.mark.skipif(not is_root(), reason="needs root")
needs_cpu_cgroup = pytest.mark.skipif(
    not (is_root() and cpu_cgroup_root() is not None),
    reason="needs root and a writable cgroup CPU controller",
)


def needs_tool(*names: str):
    missing = [n for n in names if not have_tool(n)]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} installed")


def nearmetal_cgroups(run_id: str | None = None) -> list[Path]:
    """Every cgroup directory named for nearmetal (optionally for one run) under /sys/fs/cgroup."""
    prefix = f"nearmetal-{run_id}-" if run_id else "nearmetal-"
    root = Path("/sys/fs/cgroup")
    found = []
    for hierarchy in [root, *[p for p in root.iterdir() if p.is_dir()]] if root.is_dir() else []:
        try:
            found += [p for p in hierarchy.iterdir() if p.is_dir() and p.name.startswith(prefix)]
        except OSError:
            continue
    return found


@pytest.fixture
def postgres_url() -> str:
    """A real PostgreSQL server's URL (CI starts one); tests that need it are skipped without it."""
    url = os.environ.get("NEARMETAL_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: set NEARMETAL_TEST_POSTGRES_URL (scripts/test.sh starts one)")
    return url


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _new_postgres_database(base_url: str) -> tuple[str, str]:
    """A new, empty database on the test server: (its URL, its name)."""
    import secrets

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"nearmetal_t_{secrets.token_hex(4)}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False), name


def _drop_postgres_database(base_url: str, name: str) -> None:
    from sqlalchemy import create_engine

    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture
def fresh_postgres_url(postgres_url: str):
    """An empty database of its own on the test PostgreSQL server, dropped afterwards (tests run beside
    other engineers' and CI's on the same server)."""
    url, name = _new_postgres_database(postgres_url)
    yield url
    _drop_postgres_database(postgres_url, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> str:
    """The same store test against SQLite and a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("fresh_postgres_url")
