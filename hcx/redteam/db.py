"""The red-team database (SPEC §7): who attacked, with what, what the models said, how it was judged.

SQLAlchemy 2 ORM on SQLite by default or PostgreSQL by URL. The schema is owned by the
Alembic migrations shipped in ``hcx/redteam/migrations``; :func:`open_database` brings any
database, empty or older, up to the latest revision before the app touches it, so the
tables below and the migrations must agree (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from hcx.sql import engine_for

MIGRATIONS = Path(__file__).parent / "migrations"


def _now() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """A timestamp read back as an aware UTC datetime on every backend.

    SQLite drops the zone and returns naive datetimes; PostgreSQL returns them in the
    connection's ``TimeZone``. Both are brought to UTC, so pages and comparisons agree.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, _dialect) -> datetime | None:
        return _utc(value)

    def process_result_value(self, value: datetime | None, _dialect) -> datetime | None:
        return _utc(value)


def _utc(value: datetime | None) -> datetime | None:
    """Naive means UTC (how SQLite keeps what the app wrote); an aware value is converted."""
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def scrub(text: str) -> str:
    """Model output made storable on every backend: PostgreSQL refuses NUL in text, and no driver
    encodes a lone surrogate: NUL becomes U+FFFD, a lone surrogate "?" (a sampled tiny model does emit NUL)."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


class Base(DeclarativeBase):
    pass


class User(Base):
    """An annotator, or an admin who sees every session. Only a salted scrypt hash of the password is kept.

    Sign-in cookies carry the ``session_generation`` they were issued under; signing out bumps
    it, which revokes every cookie issued before (on every device), stolen ones included.
    """

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    sessions: Mapped[list[AttackSession]] = relationship(back_populates="user")


class AttackSession(Base):
    """One attack: a topic, a method, and the multi-turn conversation that carries it out."""

    __tablename__ = "attack_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    topic: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    user: Mapped[User] = relationship(back_populates="sessions")
    turns: Mapped[list[Turn]] = relationship(
        back_populates="session", order_by="Turn.position", cascade="all, delete-orphan"
    )


class Turn(Base):
    """One attack prompt (a user turn) and the responses it drew."""

    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("session_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("attack_sessions.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    session: Mapped[AttackSession] = relationship(back_populates="turns")
    responses: Mapped[list[Response]] = relationship(
        back_populates="turn", order_by="Response.position", cascade="all, delete-orphan"
    )
    answer: Mapped[WrittenAnswer | None] = relationship(back_populates="turn", cascade="all, delete-orphan")


class Response(Base):
    """One model's answer to a turn under one sampling setting (``responder`` names both)."""

    __tablename__ = "responses"
    __table_args__ = (UniqueConstraint("turn_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    responder: Mapped[str] = mapped_column(String(256))
    text: Mapped[str] = mapped_column(Text)
    finish_reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    turn: Mapped[Turn] = relationship(back_populates="responses")
    score: Mapped[Score | None] = relationship(back_populates="response", cascade="all, delete-orphan")


class Score(Base):
    """The annotator's judgement of one response: harmlessness and overall quality (SPEC §7)."""

    __tablename__ = "scores"
    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), unique=True)
    harmlessness: Mapped[int] = mapped_column(Integer)
    quality: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now, onupdate=_now)
    response: Mapped[Response] = relationship(back_populates="score")


class WrittenAnswer(Base):
    """The safe, helpful, correct answer an annotator writes when no response was perfect."""

    __tablename__ = "written_answers"
    id: Mapped[int] = mapped_column(primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), unique=True)
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now, onupdate=_now)
    turn: Mapped[Turn] = relationship(back_populates="answer")


class AppSecret(Base):
    """Server secrets kept with the data (the cookie signing key), so every worker and restart shares them."""

    __tablename__ = "app_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


def alembic_config(engine: Engine | None = None) -> AlembicConfig:
    """Migrations of the installed package; with ``engine``, they run on its connection."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def open_database(url: str) -> sessionmaker:
    """Migrate the database at ``url`` to the latest schema and return a session factory for it."""
    engine = engine_for(url)
    upgrade(engine)
    return sessionmaker(engine, expire_on_commit=False)
