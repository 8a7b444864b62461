from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hcx.pipeline.store import LostClaim, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/pipeline.db")


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
    with pytest.raises(LostClaim):
        store.complete(a, {"overall": 2.0})
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


def test_concurrent_claimers_never_share_an_evaluation(store: Store) -> None:
    for step in range(12):
        store.publish("pretrain", f"/ck/step_{step}", step)
    taken: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        own = Store(store.url)
        while (claim := own.claim(name, lease_seconds=60)) is not None:
            with lock:
                taken.append((name, claim.event.step))
            own.complete(claim, {"by": name})

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(step for _, step in taken) == list(range(12))
    assert all(r["status"] == "done" for r in store.evaluations())


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
