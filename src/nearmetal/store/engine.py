"""Opening a store's database: the URL (``--db``, ``NEARMETAL_DB``, ``./nearmetal.db``), the engine with JSON
columns that hold the same on every database, and a SQLite file made private (0600), in WAL with
``synchronous=FULL``, every statement under a deadline."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from nearmetal.errors import NearmetalError
from nearmetal.redact import redact_url
from nearmetal.store import validate

DEFAULT_DB = "nearmetal.db"


def resolve_db_url(db: str | None = None) -> str:
    """``--db`` wins, then ``NEARMETAL_DB``, then ``./nearmetal.db``; a plain path means SQLite."""
    value = db or os.environ.get("NEARMETAL_DB") or DEFAULT_DB
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # the busy timeout first: switching to WAL needs a lock another process may hold at this moment
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a trial whose commit returned survives a power loss too (one fsync per trial is nothing
    # next to a trial); NORMAL could lose the last commits, and a resume would run them again
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # SQL in the schema (a view, a trigger, a default) may not call functions with side effects; a store
    # with views or triggers is refused anyway (validate.check_sqlite_schema)
    cursor.execute("PRAGMA trusted_schema=OFF")
    cursor.close()


def _sqlite_deadline(conn: Any, *_args: Any) -> None:
    """Before every statement on a SQLite store: bound its time (a crafted file cannot hang a read)."""
    validate.arm_deadline(conn.connection.dbapi_connection)


def _json_ready(value: Any) -> Any:
    """JSON columns hold the same thing on every database: NaN/±inf become null (PostgreSQL's json type
    rejects them, SQLite would store invalid JSON), numpy scalars their Python value, anything else its str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_ready(value.item())
    return str(value)


def _json_dumps(value: Any) -> str:
    return json.dumps(_json_ready(value), allow_nan=False)


def create_private(database: str | None) -> None:
    """A new SQLite store is created readable by its owner only (0600): it holds plans and outputs. SQLite
    gives its -wal and -shm files the database file's mode."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError, FileNotFoundError, IsADirectoryError, PermissionError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def must_exist(url: str) -> None:
    if not url.startswith("sqlite"):
        return  # a server's database: opening it says what is wrong
    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database
    except Exception:
        return
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    if not Path(database).exists():
        raise NearmetalError(
            f"no store at {database}",
            fix="check --db or NEARMETAL_DB (the default is ./nearmetal.db in the current directory); "
            "nearmetal run PLAN (or study, try) creates a store, reading commands do not",
        )


def open_engine(url: str, display_url: str) -> Engine:
    """The engine of a store's URL: one clear error for a malformed URL or a driver that is not installed."""
    kwargs: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": validate.json_loads}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        # a server restarted during a long run: check pooled connections before using them
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except Exception as exc:  # a malformed URL or a driver that is not installed
        raise NearmetalError(
            f"cannot open the result store {display_url!r}: {redact_url(str(exc))}",
            fix="give --db a SQLAlchemy URL such as sqlite:///results.db or "
            "postgresql+psycopg://user@host/db",
        ) from None
    if engine.dialect.name == "sqlite":
        create_private(engine.url.database)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "before_cursor_execute", _sqlite_deadline)
    return engine
