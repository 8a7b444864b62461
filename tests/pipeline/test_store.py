from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hcx.pipeline.store import LostClaim, Store
from tests.postgres import PostgresServer


@pytest.fixture
def store(database_url: str) -> Store:
    """A store on a fresh database: SQLite, then PostgreSQL."""
    return Store(database_url)


def test_publishing_a_checkpoint_twice_records_one_event_and_one_evaluation(store: Store) -> None:
    first = store.publish("pretrain", "/ck/step_10", 10, tokens_seen=640, loss=5.0)
    again = store.publish("pretrain", "/ck/step_10", 10)
    assert first == again
    assert [e.step for e in store.events()] == [10]
    assert [r["status"] for r in store.evaluations()] == ["pending"]
    store.publish("rm", "/rm/step_5", 5, evaluate=False)
    assert len(store.events()) == 2 and len(store.evaluations()) == 1


def test_claims_go_oldest_first_and_a_result_needs_the_live_claim(store: Store) -> None:
    for step in (10, 20):
        store.publish("sft", f"/ck/step_{step}", step)
    a = store.claim("a", lease_seconds=60)
    b = store.claim("b", lease_seconds=60)
    assert (a.event.step, b.event.step) == (10, 20)
    assert store.claim("c", lease_seconds=60) is None
    store.complete(a, {"overall": 1.0})
    store.complete(a, {"overall": 2.0})  # a retry of the same claim: already done, nothing changes
    with pytest.raises(LostClaim):
        store.renew(a, 60)
    rows = {r["step"]: r for r in store.evaluations()}
    assert rows[10]["status"] == "done" and rows[10]["result"] == {"overall": 1.0}
    assert rows[20]["status"] == "claimed" and rows[20]["worker"] == "b"


def test_an_expired_lease_is_taken_over_and_the_late_answer_is_refused(store: Store) -> None:
    store.publish("pretrain", "/ck/step_50", 50)
    slow = store.claim("slow", lease_seconds=0.2)
    assert store.claim("fast", lease_seconds=60) is None  # lease still live
    time.sleep(0.3)
    fast = store.claim("fast", lease_seconds=60)
    assert fast is not None and fast.attempt == 2
    with pytest.raises(LostClaim):
        store.renew(slow, 60)
    store.complete(fast, {"overall": 3.0})
    with pytest.raises(LostClaim):
        store.complete(slow, {"overall": 9.0})
    (row,) = store.evaluations()
    assert (row["status"], row["worker"], row["result"]) == ("done", "fast", {"overall": 3.0})


def test_failures_are_retried_then_given_up(store: Store) -> None:
    store.publish("sft", "/ck/step_1", 1)
    for _ in range(2):
        claim = store.claim("w", lease_seconds=60, max_attempts=2)
        store.fail(claim, "Traceback: boom")
    assert store.claim("w", lease_seconds=60, max_attempts=2) is None
    (row,) = store.evaluations()
    assert row["status"] == "failed" and "2 attempts" in row["error"]
    assert store.unfinished_evaluations() == 0


CLAIMER = """
import sys
from hcx.pipeline.store import Store
store = Store(sys.argv[1])
while (claim := store.claim(sys.argv[2], lease_seconds=60)) is not None:
    store.complete(claim, {"by": sys.argv[2]})
    print(claim.event.step, flush=True)
"""


def test_concurrent_worker_processes_evaluate_every_checkpoint_exactly_once(store: Store) -> None:
    for step in range(24):
        store.publish("pretrain", f"/ck/step_{step}", step)
    workers = {
        f"w{i}": subprocess.Popen(
            [sys.executable, "-c", CLAIMER, store.url, f"w{i}"], stdout=subprocess.PIPE, text=True
        )
        for i in range(4)
    }
    taken = {
        name: [int(line) for line in proc.communicate(timeout=120)[0].split()]
        for name, proc in workers.items()
    }
    assert all(proc.returncode == 0 for proc in workers.values())
    assert sorted(step for steps in taken.values() for step in steps) == list(range(24))
    rows = store.evaluations()
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in rows)
    assert {r["step"]: r["result"]["by"] for r in rows} == {s: n for n, steps in taken.items() for s in steps}


def test_publishers_racing_on_one_checkpoint_record_one_event(store: Store) -> None:
    publish = (
        "import sys\n"
        "from hcx.pipeline.store import Store\n"
        "print(Store(sys.argv[1]).publish('sft', '/ck/step_3', 3))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", publish, store.url], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    ids = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs) and len(ids) == 1
    assert len(store.events()) == 1 and len(store.evaluations()) == 1


def test_a_worker_process_killed_mid_claim_leaves_exactly_one_result(store: Store, tmp_path: Path) -> None:
    store.publish("pretrain", "/ck/step_7", 7)
    script = (
        "import sys, time\n"
        "from hcx.pipeline.store import Store\n"
        "claim = Store(sys.argv[1]).claim('doomed', lease_seconds=1.0)\n"
        "print(claim.event.step, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, store.url], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "7"
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while (claim := store.claim("survivor", lease_seconds=60)) is None:
        assert time.time() < deadline, "the dead worker's lease never expired"
        time.sleep(0.2)
    store.complete(claim, {"overall": 4.2})
    (row,) = store.evaluations()
    assert (row["status"], row["worker"], row["attempts"]) == ("done", "survivor", 2)
    assert store.claim("another", lease_seconds=60) is None


OUTAGE_WORKER = """
import sys
from hcx.pipeline.store import Store
store = Store(sys.argv[1])
store.publish("pretrain", "/ck/step_9", 9)
claim = store.claim("patient", lease_seconds=60)
store.complete(claim, {"overall": 5.0})
print(claim.event.step, flush=True)
"""


def test_a_postgresql_restart_is_ridden_out_with_retries_and_nothing_recorded_twice(
    postgres: PostgresServer,
) -> None:
    """The server goes away before a worker starts; the worker waits with backoff and finishes after the restart."""
    store = Store(postgres.new_database())
    store.publish("pretrain", "/ck/step_1", 1)
    postgres.stop()
    try:
        worker = subprocess.Popen(
            [sys.executable, "-c", OUTAGE_WORKER, store.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stderr is not None
        warning = worker.stderr.readline()
        assert "database unavailable during" in warning and "retrying in" in warning, warning
    finally:
        postgres.start()
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err[-2000:]
    assert out.strip() == "1"  # the oldest pending evaluation, claimed once
    assert [(e.stage, e.step) for e in store.events()] == [("pretrain", 1), ("pretrain", 9)]
    rows = store.evaluations()  # the test's own pooled connections were cut too: pre-ping replaces them
    assert [(r["step"], r["status"], r["attempts"]) for r in rows] == [(1, "done", 1), (9, "pending", 0)]
