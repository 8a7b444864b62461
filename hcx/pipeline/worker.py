"""An evaluation worker: claim checkpoint events, evaluate them, record the result (SPEC §5.4).

Workers are separate processes (local cores, Ray tasks, or hand-started on other machines
with ``hcx pipeline worker``). Training never waits for them. A worker renews its lease while
it evaluates; if it dies the lease expires and another worker redoes the evaluation; the
store accepts exactly one result per checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from hcx.eval.report import BPB_CATEGORY
from hcx.pipeline.config import EvaluationSpec
from hcx.pipeline.store import Claim, LostClaim, Store

log = logging.getLogger(__name__)

CLOSED = "training_closed"


def evaluate_checkpoint(claim: Claim, spec: EvaluationSpec, output_root: Path) -> dict[str, Any]:
    """Load the checkpoint's language model and score it with the evaluation suite."""
    from hcx.eval.api import evaluate
    from hcx.model.load import load_model

    event = claim.event
    loaded = load_model(event.path, spec.device, spec.dtype)
    model, tokenizer_dir = loaded.model, loaded.tokenizer_dir
    out = output_root / event.stage / f"step_{event.step:07d}"
    report = evaluate(
        model, tokenizer=tokenizer_dir, suite=spec.suite, data_dir=spec.data_dir, limit=spec.limit
    )
    files = report.write(out)
    return {
        "scores": report.scores,
        "categories": report.categories,
        "overall": report.overall,
        "overall_stderr": report.overall_stderr,
        "bpb": {
            task.removeprefix("hcx_bpb_"): score
            for task, score in report.scores.items()
            if report.task_categories[task] == BPB_CATEGORY
        },
        "files": {k: str(v) for k, v in files.items()},
        "worker": claim.worker,
        "attempt": claim.attempt,
    }


class _Lease(threading.Thread):
    """Renews a claim every ``interval`` seconds until stopped or lost."""

    def __init__(self, store: Store, claim: Claim, spec: EvaluationSpec):
        super().__init__(daemon=True)
        self.store, self.claim, self.spec = store, claim, spec
        self.done = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.done.wait(self.spec.heartbeat_seconds):
            try:
                self.store.renew(self.claim, self.spec.lease_seconds)
            except LostClaim:
                self.lost = True
                return


def run_worker(
    store_url: str, spec: EvaluationSpec, output_root: Path, worker_id: str | None = None, once: bool = False
) -> int:
    """Evaluate until the pipeline closes training and nothing is left; returns evaluations done."""
    store = Store(store_url)
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
    done = 0
    while True:
        claim = store.claim(worker_id, spec.lease_seconds, spec.max_attempts)
        if claim is None:
            if once or (store.flag(CLOSED, False) and store.unfinished_evaluations() == 0):
                return done
            time.sleep(spec.poll_seconds)
            continue
        log.info(
            "%s evaluates %s step %d (attempt %d)",
            worker_id,
            claim.event.stage,
            claim.event.step,
            claim.attempt,
        )
        lease = _Lease(store, claim, spec)
        lease.start()
        try:
            result = evaluate_checkpoint(claim, spec, output_root)
        except Exception:
            lease.done.set()
            with contextlib.suppress(LostClaim):
                store.fail(claim, traceback.format_exc())
            continue
        lease.done.set()
        try:
            store.complete(claim, result)
            done += 1
            _discard_snapshot(claim.event.path)
        except LostClaim:
            log.warning("%s lost its claim on event %d; its result is dropped", worker_id, claim.event.id)


def _discard_snapshot(path: str) -> None:
    """Remove the hard-linked copy made for evaluation (never the stage's own checkpoint)."""
    snapshot = Path(path)
    if snapshot.parent.parent.name == "snapshots":
        shutil.rmtree(snapshot, ignore_errors=True)
