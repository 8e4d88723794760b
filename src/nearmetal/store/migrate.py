"""A store's schema: checked before any query reads a SQLite file, created or upgraded (Alembic) once, under a
lock that serialises processes opening the same store, and all or nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError, ProgrammingError

from nearmetal.errors import NearmetalError
from nearmetal.redact import redact_url
from nearmetal.store import validate
from nearmetal.store.retry import transient
from nearmetal.store.schema import Base

MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL advisory lock held while a process creates or upgrades the schema ("nmig")
SCHEMA_LOCK_KEY = 0x6E6D6967


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def check_schema(engine: Engine, display_url: str) -> None:
    """A SQLite file holds only nearmetal's tables and indexes (before any query reads them)."""
    try:
        with engine.connect() as conn:
            validate.check_sqlite_schema(conn, display_url)
    except DatabaseError:  # not a database, cannot be opened, busy: migrate says so in its words
        return


def migrate(engine: Engine, display_url: str) -> None:
    """Bring the store's schema to the head revision: created, or upgraded, once and under a lock."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config(engine)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    for attempt in range(40):
        try:
            # the common case, also for a read-only store: already at head, nothing to lock
            with engine.connect() as conn:
                if MigrationContext.configure(conn).get_current_revision() == head:
                    return
            with engine.connect() as conn:
                _lock_schema(engine, conn)
                # checked again under the lock: another process may have just created or upgraded it
                current = MigrationContext.configure(conn).get_current_revision()
                if current != head:
                    _create_or_upgrade(conn, cfg, current)
                conn.commit()
                return
        except (OperationalError, IntegrityError, ProgrammingError, DatabaseError) as exc:
            # another process is creating the same store at this moment (a server without advisory
            # locks, a lock wait that timed out): look again shortly
            if transient(exc) and attempt < 39:
                time.sleep(min(2.0, 0.05 * (attempt + 1)))
                continue
            raise NearmetalError(
                f"cannot open the result store {display_url}: {redact_url(str(exc.orig)).strip()}",
                fix="check the path or URL, and that the database server is running",
            ) from None
    raise NearmetalError(f"the result store {display_url} stayed locked", fix="stop other writers and retry")


def _lock_schema(engine: Engine, conn: Any) -> None:
    """Serialise schema creation and upgrades between processes opening the same store at once, and
    make them all-or-nothing: a process killed half-way leaves the store as it was."""
    if engine.dialect.name == "sqlite":
        # pysqlite does not open transactions for DDL on its own; BEGIN IMMEDIATE takes the write lock
        # now (waiting for the busy timeout) and makes every CREATE TABLE part of one transaction
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif engine.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})


def _create_or_upgrade(conn: Any, cfg: Any, current: str | None) -> None:
    from alembic import command

    cfg.attributes["connection"] = conn
    if current is None and not inspect(conn).has_table("runs"):
        Base.metadata.create_all(conn)
        command.stamp(cfg, "head")
    else:
        command.upgrade(cfg, "head")
