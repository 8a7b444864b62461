"""Password hashes, sign-in and cookie signing, and the migrations from an empty database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from hcx.redteam.auth import (
    CookieSigner,
    LoginThrottle,
    SignIn,
    add_user,
    authenticate,
    hash_password,
    verify_password,
)
from hcx.redteam.db import (
    AttackSession,
    Base,
    Response,
    Turn,
    User,
    alembic_config,
    open_database,
    scrub,
    upgrade,
)
from hcx.sql import engine_for


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and "correct horse" not in first and first.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct hors", first)
    assert not verify_password("correct horse", first[:-2] + ("00" if first[-2:] != "00" else "11"))
    assert not verify_password("correct horse", "md5$abc")


def test_accounts_and_sign_in(database_url: str) -> None:
    with open_database(database_url)() as db:
        alice = add_user(db, "alice", "long enough")
        assert authenticate(db, "alice", "long enough") == alice
        assert authenticate(db, "alice", "long enougH") is None
        assert authenticate(db, "mallory", "long enough") is None
        with pytest.raises(ValueError, match="already exists"):
            add_user(db, "alice", "another one")
        with pytest.raises(ValueError, match="at least 8"):
            add_user(db, "bob", "short")


def test_session_cookies_are_signed_and_expire() -> None:
    signer = CookieSigner("k" * 48, max_age_s=60)
    sign_in = SignIn(7, "token", generation=3)
    cookie = signer.dumps(sign_in)
    assert signer.loads(cookie) == sign_in
    # Tamper with the signature's first character: the last one's low bits can be base64 padding.
    payload, signature = cookie.rsplit(".", 1)
    assert signer.loads(f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}") is None
    assert CookieSigner("other key" * 6, 60).loads(cookie) is None
    assert CookieSigner("k" * 48, max_age_s=-1).loads(cookie) is None
    assert signer.loads(None) is None and signer.loads("garbage") is None
    user = User(id=7, name="u", password_hash="x", session_generation=3)
    assert SignIn.of(user).csrf != SignIn.of(user).csrf and SignIn.of(user).generation == 3


def test_migrations_build_the_schema_from_empty_and_match_the_models(database_url: str) -> None:
    engine = engine_for(database_url)
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"users", "attack_sessions", "turns", "responses", "scores", "written_answers"} <= tables
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}


def test_an_older_database_with_data_is_upgraded(database_url: str) -> None:
    url = database_url
    engine = engine_for(url)
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (name, password_hash, is_admin, created_at) "
                "VALUES ('old', :hash, :admin, :created)"
            ),
            {
                "hash": hash_password("old password"),
                "admin": False,
                "created": datetime(2026, 1, 1, tzinfo=UTC),
            },
        )
    with open_database(url)() as db:  # migrates to the latest revision on open
        assert authenticate(db, "old", "old password").session_generation == 0


def test_login_throttle_counts_failures_per_name_within_its_window() -> None:
    throttle = LoginThrottle(attempts=2, window_s=300)
    assert throttle.attempt("eve")  # counted as failed until it succeeds
    assert not throttle.blocked("eve")
    assert throttle.attempt("eve")
    assert throttle.blocked("eve") and not throttle.blocked("alice")
    throttle.succeeded("eve")
    assert not throttle.blocked("eve")
    aged = LoginThrottle(attempts=1, window_s=0)  # every failure is already outside the window
    assert aged.attempt("eve")
    assert not aged.blocked("eve")


def test_a_sign_in_counts_as_failed_until_it_succeeds() -> None:
    throttle = LoginThrottle(attempts=2, window_s=300)
    assert throttle.attempt("eve") and throttle.attempt("eve")
    assert not throttle.attempt("eve") and throttle.blocked("eve")
    assert throttle.attempt("alice")
    throttle.succeeded("alice")
    assert not throttle.blocked("alice") and "alice" not in throttle._failures


def test_timestamps_read_back_in_utc_on_every_backend(database_url: str) -> None:
    """SQLite returns naive datetimes and PostgreSQL the connection's zone; the app sees UTC from both."""
    sessions = open_database(database_url)
    with sessions() as db:
        written = add_user(db, "tz", "long enough").created_at
    with sessions() as db:
        if db.get_bind().dialect.name == "postgresql":
            db.execute(text("SET TIME ZONE 'Asia/Seoul'"))
        read = db.scalar(select(User.created_at))
    assert read == written and read.utcoffset() == timedelta(0)


def test_model_output_with_nul_and_lone_surrogates_is_stored_on_every_backend(database_url: str) -> None:
    """A sampled tiny model emitted a NUL, which PostgreSQL refused (a 500 on the attack)."""
    sessions = open_database(database_url)
    with sessions() as db:
        session = AttackSession(user=User(name="n", password_hash="x"), topic="t", method="m")
        turn = Turn(position=0, prompt="p", session=session)
        turn.responses = [
            Response(position=0, responder="r", text=scrub("a\x00b\ud800"), finish_reason="stop")
        ]
        db.add(session)
        db.commit()
    with sessions() as db:
        assert db.scalar(select(Response.text)) == "a\ufffdb?"
