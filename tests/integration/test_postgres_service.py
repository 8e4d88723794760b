"""Issue 26, case 6: the test PostgreSQL server (scripts/services/postgres.sh) serves the tests and no other
local user. It trusted every local user before: anyone ran ``COPY … TO PROGRAM 'id'`` as postgres."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

USER = "nearmetal-test"


@pytest.fixture
def server(postgres_url: str) -> dict:
    url = make_url(postgres_url)
    if url.host not in ("127.0.0.1", "localhost") or not shutil.which("psql"):
        pytest.skip("needs the local test server of scripts/services/postgres.sh and psql")
    if os.geteuid() != 0 or subprocess.run(["id", "-u", USER], capture_output=True, timeout=10).returncode:
        pytest.skip(f"needs root and the user {USER} (bash scripts/test-user.sh)")
    return {
        "url": postgres_url,
        "host": url.host,
        "port": str(url.port),
        "db": url.database,
        "user": url.username,
    }


def _psql_as_user(server: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", USER, "--", "psql", "-w", "-X", "-v", "ON_ERROR_STOP=1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
    )


def test_another_local_user_cannot_connect(server: dict) -> None:
    for user in ("postgres", server["user"], USER):
        for db in ("postgres", server["db"]):
            proc = _psql_as_user(
                server, "-h", server["host"], "-p", server["port"], "-U", user, "-d", db, "-c", "select 1"
            )
            assert proc.returncode != 0, (user, db, proc.stdout)
            assert (
                "password" in proc.stderr or "rejects connection" in proc.stderr or "no pg_hba" in proc.stderr
            )


def test_another_local_user_cannot_reach_the_socket_or_the_data(server: dict) -> None:
    base = Path("/run/nearmetal-services")
    state = base / f"postgres-{server['port']}.state"
    if not state.exists():
        pytest.skip("the server was not started by scripts/services/postgres.sh")
    instance = Path(state.read_text().split()[0])
    assert instance.parent == base and not str(instance).startswith("/tmp")
    for path in (instance / "sock", instance / "data"):
        proc = subprocess.run(
            ["runuser", "-u", USER, "--", "ls", str(path)], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode != 0 and "Permission denied" in proc.stderr
        socket_try = _psql_as_user(
            server, "-h", str(instance / "sock"), "-p", server["port"], "-U", "postgres", "-c", "select 1"
        )
        assert socket_try.returncode != 0
    assert base.stat().st_uid == 0 and not base.is_symlink() and base.stat().st_mode & 0o022 == 0


def test_the_tests_role_cannot_run_programs_on_the_server(server: dict, tmp_path: Path) -> None:
    """Even with the password (it is in the URL the tests get), the role is no superuser."""
    marker = tmp_path / "pwned"
    engine = create_engine(server["url"])
    try:
        with (
            engine.connect() as conn,
            pytest.raises(DBAPIError, match=r"superuser|pg_execute_server_program"),
        ):
            conn.execute(text(f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'"))
        with engine.connect() as conn:
            assert (
                conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
                is False
            )
    finally:
        engine.dispose()
    assert not marker.exists()
