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
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def _now() -> datetime:
    return datetime.now(UTC)


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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    sessions: Mapped[list[AttackSession]] = relationship(back_populates="user")


class AttackSession(Base):
    """One attack: a topic, a method, and the multi-turn conversation that carries it out."""

    __tablename__ = "attack_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    topic: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    turn: Mapped[Turn] = relationship(back_populates="responses")
    score: Mapped[Score | None] = relationship(back_populates="response", cascade="all, delete-orphan")


class Score(Base):
    """The annotator's judgement of one response: harmlessness and overall quality (SPEC §7)."""

    __tablename__ = "scores"
    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), unique=True)
    harmlessness: Mapped[int] = mapped_column(Integer)
    quality: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)
    response: Mapped[Response] = relationship(back_populates="score")


class WrittenAnswer(Base):
    """The safe, helpful, correct answer an annotator writes when no response was perfect."""

    __tablename__ = "written_answers"
    id: Mapped[int] = mapped_column(primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), unique=True)
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)
    turn: Mapped[Turn] = relationship(back_populates="answer")


class AppSecret(Base):
    """Server secrets kept with the data (the cookie signing key), so every worker and restart shares them."""

    __tablename__ = "app_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


def _sqlite_foreign_keys(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's directory is created, and its foreign keys enforced."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_foreign_keys)
    return engine


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
    engine = make_engine(url)
    upgrade(engine)
    return sessionmaker(engine, expire_on_commit=False)
