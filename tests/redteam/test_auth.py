"""Password hashes, sign-in and cookie signing, and the migrations from an empty database."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from hcx.redteam.auth import (
    CookieSigner,
    LoginThrottle,
    SignIn,
    add_user,
    authenticate,
    hash_password,
    verify_password,
)
from hcx.redteam.db import Base, User, alembic_config, make_engine, open_database, upgrade


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and "correct horse" not in first and first.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct hors", first)
    assert not verify_password("correct horse", first[:-2] + ("00" if first[-2:] != "00" else "11"))
    assert not verify_password("correct horse", "md5$abc")


def test_accounts_and_sign_in(tmp_path: Path) -> None:
    with open_database(f"sqlite:///{tmp_path / 'a.db'}")() as db:
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


def test_migrations_build_the_schema_from_empty_and_match_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'm.db'}")
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"users", "attack_sessions", "turns", "responses", "scores", "written_answers"} <= tables
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}


def test_an_older_database_with_data_is_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (name, password_hash, is_admin, created_at) "
                "VALUES ('old', :hash, 0, '2026-01-01 00:00:00')"
            ),
            {"hash": hash_password("old password")},
        )
    with open_database(url)() as db:  # migrates to the latest revision on open
        assert authenticate(db, "old", "old password").session_generation == 0


def test_login_throttle_counts_failures_per_name_within_its_window() -> None:
    throttle = LoginThrottle(attempts=2, window_s=300)
    throttle.failed("eve")
    assert not throttle.blocked("eve")
    throttle.failed("eve")
    assert throttle.blocked("eve") and not throttle.blocked("alice")
    throttle.succeeded("eve")
    assert not throttle.blocked("eve")
    aged = LoginThrottle(attempts=1, window_s=0)  # every failure is already outside the window
    aged.failed("eve")
    assert not aged.blocked("eve")
