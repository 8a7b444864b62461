"""A slow database call holds one request, never the server: DB work runs off the event loop."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine

from hcx.sql import engine_for
from tests.redteam.conftest import LiveServer, signed_in

LOCKS = {
    "sqlite": "BEGIN IMMEDIATE",  # the one writer's lock; readers go on (WAL)
    "postgresql": "LOCK TABLE attack_sessions IN EXCLUSIVE MODE",  # blocks writes to it, not reads
}


@contextmanager
def writes_locked(server: LiveServer) -> Iterator[None]:
    """Hold a lock that makes the app's next INSERT into attack_sessions wait until we let go."""
    engine = engine_for(server.db_url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(LOCKS[server.backend])
            try:
                yield
            finally:
                connection.rollback()
    finally:
        engine.dispose()


@contextmanager
def on_statement(engine: Engine, prefix: str) -> Iterator[threading.Event]:
    """An event set when the app's engine starts executing a statement that begins with ``prefix``."""
    started = threading.Event()

    def seen(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith(prefix):
            started.set()

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield started
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_a_request_blocked_in_the_database_does_not_stall_the_others(live_server: LiveServer) -> None:
    alice, bob = signed_in(live_server, "alice"), signed_in(live_server, "bob")
    form = {"topic": "illegal activity", "method": "jailbreak", "csrf_token": alice.csrf}
    engine = live_server.sessions.kw["bind"]
    with ThreadPoolExecutor(1) as pool, on_statement(engine, "INSERT INTO ATTACK_SESSIONS") as inserting:
        with writes_locked(live_server):
            slow = pool.submit(alice.post, "/sessions", data=form)
            assert inserting.wait(60), "the request never reached its INSERT"
            # The INSERT now waits on our lock: until we let go, the slow request cannot finish.
            assert httpx.get(f"{live_server.url}/login", timeout=30).status_code == 200
            assert bob.get("/", timeout=30).status_code == 200  # a database read, meanwhile
            assert not slow.done()
        assert slow.result(timeout=60).status_code == 303
