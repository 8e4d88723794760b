"""The result store: SQLAlchemy over SQLite by default (``./nearmetal.db``, WAL), any URL accepted.

Every trial is committed when it ends, so a killed run keeps every finished trial. The schema is managed
with Alembic; a store is migrated to the newest schema when it is opened.
"""

from nearmetal.store.engine import DEFAULT_DB, resolve_db_url
from nearmetal.store.store import Store

__all__ = ["DEFAULT_DB", "Store", "resolve_db_url"]
