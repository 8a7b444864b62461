"""The SQL databases hcx keeps state in (the pipeline's event store, the red-team data).

A SQLite file by default; PostgreSQL by URL when several machines share the state. Both go
through :func:`engine_for`, so both backends get the same treatment:

- ``postgresql://`` means the psycopg (3) driver, the one hcx depends on; connections are
  checked before use, so a restarted server costs one failed ping, not a failed request;
- a SQLite file's folder is created, and every connection gets WAL, a busy timeout and
  foreign keys;
- :func:`retry` re-runs a unit of work while the database is unreachable (a PostgreSQL
  restart, a failover, a locked SQLite file), with exponential backoff up to a deadline, and
  lets every other error through at once. The work it re-runs must be idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger(__name__)
T = TypeVar("T")


def engine_for(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": 60, "check_same_thread": False})
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "busy_timeout=60000", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def is_transient(error: BaseException) -> bool:
    """True for a lost or refused connection or a busy SQLite file; False for errors in the SQL itself."""
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa.exc.InterfaceError):
        return True
    if not isinstance(error, sa.exc.OperationalError):
        return False
    message = str(error.orig).lower()
    if "sqlite" in type(error.orig).__module__:
        return "locked" in message or "busy" in message
    return True


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying while the database is away: waits double from ``first_wait`` up to ``max_wait``."""

    seconds: float = 600.0
    first_wait: float = 0.25
    max_wait: float = 8.0


def retry(work: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """Run ``work``; while it fails for a transient reason, wait and run it again until the deadline."""
    policy = policy or RetryPolicy()
    deadline = time.monotonic() + policy.seconds
    wait, attempt = policy.first_wait, 1
    while True:
        try:
            return work()
        except sa.exc.DBAPIError as error:
            if not is_transient(error) or time.monotonic() + wait > deadline:
                raise
            log.warning(
                "database unavailable during %s (attempt %d: %s); retrying in %.2f s",
                what,
                attempt,
                str(error.orig).strip().splitlines()[0] if error.orig else error,
                wait,
            )
            time.sleep(wait)
            wait, attempt = min(wait * 2, policy.max_wait), attempt + 1
