"""A busy store: which database errors pass (another process writing, a server restarting) and running a write
transaction again until they do."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import OperationalError

from nearmetal.errors import NearmetalError
from nearmetal.redact import redact_url

if TYPE_CHECKING:
    from nearmetal.store.store import Store

T = TypeVar("T")
# how long a write waits for a busy store (another run committing, a server restarting) before giving up:
# a measured trial is worth waiting for
WRITE_RETRY_S = float(os.environ.get("NEARMETAL_STORE_RETRY_S", "300"))


def transient(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(
        word in text
        for word in (
            "locked",
            "busy",
            "already exists",
            "duplicate key",
            "server closed the connection",
            "connection refused",
            "could not connect",
            "terminating connection",
        )
    )


def retry_writes(method: Callable[..., T]) -> Callable[..., T]:
    """Run a write transaction again when the store is busy or the connection dropped. Each write method is
    one transaction, rolled back on error, so running it again is safe."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> T:
        deadline = time.monotonic() + WRITE_RETRY_S
        attempt = 0
        while True:
            try:
                return method(self, *args, **kwargs)
            except OperationalError as exc:
                attempt += 1
                if not transient(exc) or time.monotonic() >= deadline:
                    raise NearmetalError(
                        f"could not write to the result store {redact_url(self.url)}: {redact_url(str(exc.orig))}",
                        fix="check the disk, the database server and other processes holding the store",
                    ) from None
                time.sleep(min(5.0, 0.05 * 2**attempt))

    return wrapper
