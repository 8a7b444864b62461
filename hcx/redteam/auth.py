"""Passwords and sign-in cookies for the red-team app.

Passwords are stored only as ``scrypt$n$r$p$salt$hash`` with a random 16-byte salt per
user (memory-hard, so a stolen database is slow to brute-force) and compared in constant
time. The session cookie is a timestamped, HMAC-signed payload (itsdangerous): the user
id, their session generation and the session's CSRF token; it expires after
``session_hours``, signing out revokes it (the generation moves on), and tampering breaks
the signature. The signing key is generated once and kept in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from hcx.redteam.db import AppSecret, User

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_CHARS = 8
COOKIE_NAME = "hcx_redteam"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


# Checked against when the user name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def authenticate(db: Session, name: str, password: str) -> User | None:
    user = db.scalar(select(User).where(User.name == name))
    ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
    return user if ok and user is not None else None


def add_user(db: Session, name: str, password: str, admin: bool = False) -> User:
    """Create an account; the name must be new and the password at least 8 characters."""
    name = name.strip()
    if not name or len(name) > 64:
        raise ValueError("a user name is 1 to 64 characters")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if db.scalar(select(User).where(User.name == name)) is not None:
        raise ValueError(f"user {name!r} already exists")
    user = User(name=name, password_hash=hash_password(password), is_admin=admin)
    db.add(user)
    db.commit()
    return user


class LoginThrottle:
    """At most ``attempts`` failed sign-ins per name within ``window_s``; then refuse until they age out.

    A sign-in counts as failed from the moment it is let through (:meth:`attempt`) until it
    succeeds, so a burst of concurrent guesses cannot all pass the check before the first of
    them is found wrong. Kept in memory per server process: it slows online password
    guessing, it is not an audit log.
    """

    def __init__(self, attempts: int = 5, window_s: float = 300.0):
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, name: str) -> deque[float]:
        failures = self._failures.setdefault(name, deque())
        while failures and failures[0] <= time.monotonic() - self.window_s:
            failures.popleft()
        return failures

    def blocked(self, name: str) -> bool:
        with self._lock:
            blocked = len(self._recent(name)) >= self.attempts
            self._forget_if_clear(name)
            return blocked

    def attempt(self, name: str) -> bool:
        """Let one sign-in through, counted as failed until :meth:`succeeded`; False when blocked."""
        with self._lock:
            failures = self._recent(name)
            if len(failures) >= self.attempts:
                return False
            failures.append(time.monotonic())
            return True

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)

    def _forget_if_clear(self, name: str) -> None:
        if not self._failures.get(name):
            self._failures.pop(name, None)


def signing_key(db: Session) -> str:
    """The cookie signing key, created on first use and shared by every server on this database."""
    secret = db.get(AppSecret, "cookie_signing_key")
    if secret is None:
        secret = AppSecret(name="cookie_signing_key", value=secrets.token_urlsafe(48))
        db.add(secret)
        db.commit()
    return secret.value


@dataclass(frozen=True)
class SignIn:
    """What the session cookie carries: who is signed in (None before sign-in), under which
    session generation of theirs, and the CSRF token."""

    user_id: int | None
    csrf: str
    generation: int = 0

    @classmethod
    def anonymous(cls) -> SignIn:
        return cls(None, secrets.token_urlsafe(32))

    @classmethod
    def of(cls, user: User) -> SignIn:
        """A fresh CSRF token at sign-in, so a token seen before sign-in is worthless after it."""
        return cls(user.id, secrets.token_urlsafe(32), user.session_generation)


class CookieSigner:
    def __init__(self, key: str, max_age_s: float):
        self.serializer = URLSafeTimedSerializer(key, salt="hcx-redteam-session")
        self.max_age_s = max_age_s

    def dumps(self, sign_in: SignIn) -> str:
        return self.serializer.dumps(
            {"uid": sign_in.user_id, "csrf": sign_in.csrf, "gen": sign_in.generation}
        )

    def loads(self, cookie: str | None) -> SignIn | None:
        """The cookie's content, or None when it is missing, expired or not signed by us."""
        if not cookie:
            return None
        try:
            data = self.serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        uid, generation = data.get("uid"), data.get("gen")
        return SignIn(
            uid if isinstance(uid, int) else None,
            data["csrf"],
            generation if isinstance(generation, int) else -1,
        )
