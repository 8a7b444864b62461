"""The pipeline's durable store: stage status, checkpoint-saved events and their evaluations.

SQLite by default (a file in the run directory); any SQLAlchemy URL, e.g. PostgreSQL, when
several machines share one pipeline. Every call rides out a database that goes away for a while
(a restart, a failover): it is retried with backoff (:func:`hcx.sql.retry`), and each is written
so that running it again changes nothing. Evaluation is exactly-once in effect (SPEC §5.4):

- a checkpoint event and its pending evaluation are inserted in one transaction, idempotently
  (``(stage, path)`` is unique), so re-publishing an event changes nothing;
- a worker *claims* an evaluation with a conditional UPDATE (pending, or claimed under an
  expired lease) and gets a fresh token; only one concurrent claimer can match the row;
- it renews the lease while it works; a worker that dies stops renewing, the lease expires
  and another worker claims the evaluation again;
- the result is recorded by an UPDATE conditioned on the claim's token, so a late answer from
  a worker that lost its claim is refused: every event ends with exactly one result. When the
  connection dropped after such an UPDATE committed, its retry finds the row already in that
  state under the same token and counts as done.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from hcx.sql import RetryPolicy, engine_for, retry

metadata = sa.MetaData()

stages = sa.Table(
    "stages",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # pending running done failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("started", sa.Float),
    sa.Column("finished", sa.Float),
    sa.Column("seconds", sa.Float, nullable=False, default=0.0),
    sa.Column("returncode", sa.Integer),
    sa.Column("pid", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("config_hash", sa.String(64)),
    sa.Column("mlflow_run_id", sa.String(64)),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stage", sa.String(100), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("tokens_seen", sa.BigInteger),
    sa.Column("loss", sa.Float),
    sa.Column("time", sa.Float, nullable=False),
    sa.UniqueConstraint("stage", "path", name="one_event_per_checkpoint"),
)

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("event_id", sa.Integer, sa.ForeignKey("events.id"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # pending claimed done failed
    sa.Column("worker", sa.String(100)),
    sa.Column("token", sa.String(36)),
    sa.Column("lease_until", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("started", sa.Float),
    sa.Column("finished", sa.Float),
    sa.Column("result", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("logged", sa.Boolean, nullable=False, default=False),
)

flags = sa.Table(
    "flags",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text),
)


class LostClaim(RuntimeError):
    """The worker's lease expired and another worker took the evaluation over."""


@dataclass(frozen=True)
class Event:
    id: int
    stage: str
    path: str
    step: int
    time: float
    tokens_seen: int | None = None
    loss: float | None = None


@dataclass(frozen=True)
class Claim:
    event: Event
    token: str
    worker: str
    attempt: int


F = TypeVar("F", bound=Callable[..., Any])


def _retried(method: F) -> F:
    """Run a store method again while the database is unreachable (see :func:`hcx.sql.retry`)."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        return retry(lambda: method(self, *args, **kwargs), f"store.{method.__name__}", self.retry_policy)

    return wrapper  # type: ignore[return-value]


class Store:
    def __init__(self, url: str, retry_policy: RetryPolicy | None = None):
        self.url = url
        self.retry_policy = retry_policy or RetryPolicy()
        self.engine = engine_for(url)
        retry(lambda: metadata.create_all(self.engine), "creating the store's tables", self.retry_policy)

    # --- stages ------------------------------------------------------------------------------
    @_retried
    def stage(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(stages).where(stages.c.name == name)).mappings().first()
        return dict(row) if row else None

    @_retried
    def all_stages(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return {r["name"]: dict(r) for r in conn.execute(sa.select(stages)).mappings()}

    @_retried
    def stage_started(self, name: str, config_hash: str) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(stages.c.attempts).where(stages.c.name == name)).first()
            values = {
                "status": "running",
                "started": now,
                "finished": None,
                "returncode": None,
                "error": None,
            }
            if row is None:
                conn.execute(
                    stages.insert().values(
                        name=name, attempts=1, config_hash=config_hash, seconds=0.0, **values
                    )
                )
            else:
                conn.execute(
                    stages.update()
                    .where(stages.c.name == name)
                    .values(attempts=row.attempts + 1, config_hash=config_hash, **values)
                )

    @_retried
    def stage_finished(self, name: str, returncode: int, error: str | None = None) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            started = conn.execute(sa.select(stages.c.started).where(stages.c.name == name)).scalar_one()
            conn.execute(
                stages.update()
                .where(stages.c.name == name)
                .values(
                    status="done" if returncode == 0 else "failed",
                    finished=now,
                    returncode=returncode,
                    error=error,
                    seconds=stages.c.seconds + (now - (started or now)),
                )
            )

    @_retried
    def set_stage_pid(self, name: str, pid: int | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(stages.update().where(stages.c.name == name).values(pid=pid))

    @_retried
    def set_stage_run(self, name: str, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(stages.update().where(stages.c.name == name).values(mlflow_run_id=run_id))

    # --- flags -------------------------------------------------------------------------------
    @_retried
    def set_flag(self, name: str, value: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(flags.delete().where(flags.c.name == name))
            conn.execute(flags.insert().values(name=name, value=json.dumps(value)))

    @_retried
    def flag(self, name: str, default: Any = None) -> Any:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(flags.c.value).where(flags.c.name == name)).scalar()
        return default if value is None else json.loads(value)

    # --- checkpoint events -------------------------------------------------------------------
    @_retried
    def publish(
        self,
        stage: str,
        path: str,
        step: int,
        time_: float | None = None,
        tokens_seen: int | None = None,
        loss: float | None = None,
        evaluate: bool = True,
    ) -> int:
        """Record a checkpoint-saved event (and its pending evaluation); idempotent per checkpoint."""
        existing = sa.select(events.c.id).where(events.c.stage == stage, events.c.path == path)
        try:
            with self.engine.begin() as conn:
                if (found := conn.execute(existing).scalar()) is not None:
                    return int(found)
                event_id = conn.execute(
                    events.insert().values(
                        stage=stage,
                        path=path,
                        step=step,
                        time=time_ or time.time(),
                        tokens_seen=tokens_seen,
                        loss=loss,
                    )
                ).inserted_primary_key[0]
                if evaluate:
                    conn.execute(evaluations.insert().values(event_id=event_id, status="pending", attempts=0))
                return int(event_id)
        except sa.exc.IntegrityError:  # another publisher of this checkpoint committed first
            with self.engine.connect() as conn:
                return int(conn.execute(existing).scalar_one())

    @_retried
    def events(self, stage: str | None = None) -> list[Event]:
        query = sa.select(events).order_by(events.c.id)
        if stage is not None:
            query = query.where(events.c.stage == stage)
        with self.engine.connect() as conn:
            return [Event(**dict(r)) for r in conn.execute(query).mappings()]

    # --- evaluations -------------------------------------------------------------------------
    @_retried
    def claim(self, worker: str, lease_seconds: float, max_attempts: int = 3) -> Claim | None:
        """Take the oldest pending (or abandoned) evaluation, or None when there is none."""
        claimable = sa.or_(
            evaluations.c.status == "pending",
            sa.and_(evaluations.c.status == "claimed", evaluations.c.lease_until < sa.bindparam("now")),
        )
        while True:
            now = time.time()
            with self.engine.begin() as conn:
                row = conn.execute(
                    sa.select(evaluations.c.event_id, evaluations.c.attempts)
                    .where(claimable)
                    .order_by(evaluations.c.event_id)
                    .limit(1),
                    {"now": now},
                ).first()
                if row is None:
                    return None
                if row.attempts >= max_attempts:
                    conn.execute(
                        evaluations.update()
                        .where(evaluations.c.event_id == row.event_id)
                        .values(status="failed", finished=now, error=f"gave up after {row.attempts} attempts")
                    )
                    continue
                token = str(uuid.uuid4())
                taken = conn.execute(
                    evaluations.update()
                    .where(evaluations.c.event_id == row.event_id, claimable)
                    .values(
                        status="claimed",
                        worker=worker,
                        token=token,
                        lease_until=now + lease_seconds,
                        attempts=evaluations.c.attempts + 1,
                        started=now,
                    ),
                    {"now": now},
                ).rowcount
                if taken != 1:
                    continue
                event = conn.execute(sa.select(events).where(events.c.id == row.event_id)).mappings().one()
                return Claim(Event(**dict(event)), token, worker, row.attempts + 1)

    @_retried
    def _update_claim(self, claim: Claim, **values: Any) -> None:
        with self.engine.begin() as conn:
            changed = conn.execute(
                evaluations.update()
                .where(
                    evaluations.c.event_id == claim.event.id,
                    evaluations.c.token == claim.token,
                    evaluations.c.status == "claimed",
                )
                .values(**values)
            ).rowcount
            if changed != 1 and not self._already_applied(conn, claim, values):
                raise LostClaim(f"evaluation of event {claim.event.id} ({claim.event.path}) was taken over")

    @staticmethod
    def _already_applied(conn: sa.Connection, claim: Claim, values: dict[str, Any]) -> bool:
        """True when this claim's update already committed: a retry after the acknowledgement was lost."""
        row = conn.execute(
            sa.select(evaluations.c.status, evaluations.c.token).where(
                evaluations.c.event_id == claim.event.id
            )
        ).first()
        return row is not None and row.token == claim.token and row.status == values.get("status", "claimed")

    def renew(self, claim: Claim, lease_seconds: float) -> None:
        self._update_claim(claim, lease_until=time.time() + lease_seconds)

    def complete(self, claim: Claim, result: dict[str, Any]) -> None:
        self._update_claim(claim, status="done", finished=time.time(), result=json.dumps(result), error=None)

    def fail(self, claim: Claim, error: str) -> None:
        """Give the evaluation back (pending again) after an error; ``claim`` retries it up to max_attempts."""
        self._update_claim(claim, status="pending", token=None, lease_until=None, error=error[-4000:])

    @_retried
    def evaluations(self) -> list[dict[str, Any]]:
        query = (
            sa.select(
                evaluations, events.c.stage, events.c.step, events.c.path, events.c.time.label("event_time")
            )
            .join(events, events.c.id == evaluations.c.event_id)
            .order_by(evaluations.c.event_id)
        )
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        for row in rows:
            row["result"] = json.loads(row["result"]) if row["result"] else None
        return rows

    @_retried
    def unfinished_evaluations(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(evaluations.c.status.in_(("pending", "claimed")))
                ).scalar_one()
            )

    @_retried
    def mark_logged(self, event_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(evaluations.update().where(evaluations.c.event_id == event_id).values(logged=True))
