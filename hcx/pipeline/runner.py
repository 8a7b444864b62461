"""The pipeline driver behind ``hcx run``: stages as a dependency graph, evaluation on the side.

A stage starts as soon as every stage it needs has finished successfully and the executor has
its resources; a stage that finished with the same configuration is skipped on a re-run (unless
a stage it needs ran again); a stage that failed or was killed simply runs again and resumes
from its own last checkpoint. While stages train, evaluation workers claim their
checkpoint-saved events from the store (SPEC §5.4). The driver is the only MLflow writer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcx.eval.report import mlflow_metrics
from hcx.pipeline.executors import Job, LocalExecutor, RayExecutor, hcx_command
from hcx.pipeline.plan import Plan, PlannedStage, produced_paths
from hcx.pipeline.report import describe_result
from hcx.pipeline.store import Store
from hcx.pipeline.tracking import Tracker, flatten, numeric_metrics
from hcx.pipeline.worker import CLOSED
from hcx.records import Rejected
from hcx.train.metrics import is_step_record, parse_log_line

log = logging.getLogger(__name__)
PARENT_RUN = "mlflow_parent_run"


def config_hash(stage: PlannedStage) -> str:
    body = json.dumps({"kind": stage.kind, "config": stage.config.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass
class StageOutcome:
    name: str
    status: str  # done skipped failed blocked
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class PipelineResult:
    ok: bool
    stages: dict[str, StageOutcome]
    evaluations: list[dict[str, Any]]
    run_dir: Path
    tracking_uri: str
    parent_run_id: str

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stages": {n: vars(o) for n, o in self.stages.items()},
            "evaluations": [
                {k: e[k] for k in ("stage", "step", "status", "attempts", "worker")}
                | {"overall": (e["result"] or {}).get("overall")}
                for e in self.evaluations
            ],
            "tracking_uri": self.tracking_uri,
            "parent_run_id": self.parent_run_id,
        }


class _LogTail:
    """New complete lines of a growing JSON Lines file, from a remembered byte offset.

    A complete line that is not a record is reported with its byte offset and skipped: the
    stage that wrote it stops on it at its next start (:func:`hcx.train.metrics.read_jsonl_log`),
    the driver keeps tracking the others.
    """

    def __init__(self, path: Path, offset: int):
        self.path, self.offset = path, offset

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        records, start = [], self.offset
        for line in data[:end].splitlines(keepends=True):
            record = parse_log_line(line) if line.strip() else None
            if isinstance(record, Rejected):
                log.warning(
                    "%s (byte %d): skipping a line that is not a record: %s", self.path, start, record
                )
            elif record is not None:
                records.append(record)
            start += len(line)
        self.offset += end
        return records


class PipelineRunner:
    def __init__(self, plan: Plan, on_event: Callable[[str], None] | None = None):
        self.plan = plan
        self.cfg = plan.config
        self.run_dir = Path(self.cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.say = on_event or print
        self.store = Store(self.cfg.store_url())
        self.tracker = Tracker(self.cfg.tracking(), self.cfg.experiment, self.run_dir / "mlartifacts")
        self.executor = RayExecutor(self.cfg.ray_address) if self.cfg.executor == "ray" else LocalExecutor()
        self.jobs: dict[str, Job] = {}
        self.workers: list[Job] = []
        self.tails: dict[str, _LogTail] = {}
        self.stage_runs: dict[str, str] = {}
        self.last_metrics: dict[str, dict[str, float]] = {}
        self._drained = False
        self._restarts = 0

    # --- how a stage is launched --------------------------------------------------------------
    def _stage_argv(self, stage: PlannedStage) -> list[str]:
        """``hcx pipeline stage RECIPE NAME`` with the run's overrides: the stage publishes its own checkpoints."""
        sets = [arg for item in self.plan.overrides for arg in ("--set", item)]
        argv = hcx_command("pipeline", "stage", str(self.plan.recipe), stage.name, *sets)
        if stage.spec.procs_per_node > 1:
            argv = [
                argv[0],
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={stage.spec.procs_per_node}",
                *argv[1:],
            ]
        return argv

    # --- MLflow ------------------------------------------------------------------------------
    def _open_stage_run(self, stage: PlannedStage, parent: str) -> str:
        row = self.store.stage(stage.name)
        run_id = self.tracker.start(
            row["mlflow_run_id"] if row else None, stage.name, parent, {"stage": stage.kind}
        )
        self.store.set_stage_run(stage.name, run_id)
        self.tracker.params(run_id, flatten(stage.config))
        self.stage_runs[stage.name] = run_id
        offset = int(self.store.flag(f"log_offset:{stage.name}", 0))
        self.tails[stage.name] = _LogTail(stage.output_dir / "train_log.jsonl", offset)
        return run_id

    def _pump_logs(self, name: str) -> None:
        tail = self.tails.get(name)
        if tail is None:
            return
        start, rows = tail.offset, []
        for record in tail.read():
            if is_step_record(record):
                metrics = numeric_metrics(record)
                self.last_metrics.setdefault(name, {}).update(metrics)
                rows.extend(
                    (k, v, int(record["step"]), float(record.get("time", time.time())))
                    for k, v in metrics.items()
                )
        if rows:
            self.tracker.metrics(self.stage_runs[name], rows)
        if tail.offset != start:
            self.store.set_flag(f"log_offset:{name}", tail.offset)

    def _pump_evaluations(self) -> None:
        for row in self.store.evaluations():
            if row["status"] != "done" or row["logged"]:
                continue
            run_id = self.stage_runs.get(row["stage"]) or (self.store.stage(row["stage"]) or {}).get(
                "mlflow_run_id"
            )
            if not run_id:
                continue
            result = row["result"]
            metrics = mlflow_metrics(result["scores"], result["categories"], result["overall"])
            when = row["finished"] or time.time()
            self.tracker.metrics(run_id, [(k, float(v), row["step"], when) for k, v in metrics.items()])
            for path in result.get("files", {}).values():
                self.tracker.artifact(run_id, Path(path), f"eval/step_{row['step']:07d}")
            self.store.mark_logged(row["event_id"])
            self.say(f"eval   {row['stage']} step {row['step']}: {describe_result(result)} ({row['worker']})")

    def _finish_stage_run(self, stage: PlannedStage, ok: bool) -> None:
        from hcx.pipeline.report import curve_plot, stage_artifacts

        run_id = self.stage_runs[stage.name]
        self._pump_logs(stage.name)
        if ok:
            for path in stage_artifacts(stage):
                self.tracker.artifact(run_id, path)
            plot = curve_plot(
                stage.output_dir / "train_log.jsonl", self.run_dir / "curves" / f"{stage.name}.png"
            )
            if plot is not None:
                self.tracker.artifact(run_id, plot, "plots")
            if self.cfg.register_models:
                for label, model_dir in stage_models(stage):
                    version = self.tracker.register(run_id, f"hcx-{self.plan.recipe.stem}-{label}", model_dir)
                    self.say(f"model  {label}: registered version {version}")
        self.tracker.end(run_id, ok)

    # --- workers -----------------------------------------------------------------------------
    def _evaluation_wanted(self, pending: set[str]) -> bool:
        ev = self.cfg.evaluation
        if ev.workers == 0:
            return False
        evaluable = set(ev.stages or [])
        return bool(evaluable & (pending | set(self.jobs))) or self.store.unfinished_evaluations() > 0

    def _start_workers(self) -> None:
        ev = self.cfg.evaluation
        self.store.set_flag(CLOSED, False)
        for i in range(ev.workers):
            argv = hcx_command("pipeline", "worker", str(self.plan.recipe), "--worker-id", f"worker-{i}")
            job = self.executor.start(
                f"worker-{i}",
                argv,
                dict(os.environ),
                ev.resources,
                self.run_dir / "logs" / f"worker-{i}.log",
                last=True,
            )
            self.workers.append(job)
        self.say(f"start  {ev.workers} evaluation worker(s), suite {ev.suite!r}")

    def _replace_dead_workers(self, pending: list[str]) -> None:
        """A worker that crashed while checkpoints may still come is replaced (its claim expires)."""
        for i, worker in enumerate(self.workers):
            code = worker.poll()
            if code not in (None, 0) and self._training_left(pending) and self._restarts < 3:
                self._restarts += 1
                self.executor.release(worker)
                ev = self.cfg.evaluation
                argv = hcx_command(
                    "pipeline", "worker", str(self.plan.recipe), "--worker-id", f"worker-{i}r{self._restarts}"
                )
                log_path = self.run_dir / "logs" / f"worker-{i}.log"
                self.workers[i] = self.executor.start(
                    worker.name, argv, dict(os.environ), ev.resources, log_path, last=True
                )
                self.say(f"restart evaluation worker {i} (exit code {code})")

    # --- the loop ----------------------------------------------------------------------------
    def run(self, poll_seconds: float = 1.0) -> PipelineResult:
        plan = self.plan
        parent = self.tracker.start(
            self.store.flag(PARENT_RUN), f"pipeline:{plan.recipe.stem}", tags={"recipe": str(plan.recipe)}
        )
        self.store.set_flag(PARENT_RUN, parent)
        self.tracker.params(parent, flatten(self.cfg))
        outcomes: dict[str, StageOutcome] = {}
        reran: set[str] = set()
        pending = list(plan.order)
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
        try:
            while pending or self.jobs or self.workers:
                for name in list(pending):
                    stage = plan.stages[name]
                    if any(
                        outcomes.get(d) and outcomes[d].status in ("failed", "blocked") for d in stage.needs
                    ):
                        outcomes[name] = StageOutcome(name, "blocked", error="a stage it needs failed")
                        pending.remove(name)
                        continue
                    if not all(d in outcomes for d in stage.needs):
                        continue
                    row = self.store.stage(name)
                    digest = config_hash(stage)
                    if (
                        row
                        and row["status"] == "done"
                        and row["config_hash"] == digest
                        and not reran & set(stage.needs)
                    ):
                        outcomes[name] = StageOutcome(name, "skipped", row["seconds"])
                        pending.remove(name)
                        self.say(f"skip   {name} (finished earlier with the same configuration)")
                        continue
                    if (
                        stage.name in (self.cfg.evaluation.stages or [])
                        and not self.workers
                        and self._evaluation_wanted(set(pending))
                    ):
                        self._start_workers()
                    if not self.executor.can_start(stage.spec.resources):
                        continue
                    self.store.stage_started(name, digest)
                    self._open_stage_run(stage, parent)
                    log_path = self.run_dir / "logs" / f"{name}.log"
                    self.jobs[name] = self.executor.start(
                        name, self._stage_argv(stage), dict(os.environ), stage.spec.resources, log_path
                    )
                    self.store.set_stage_pid(name, getattr(self.jobs[name], "pid", None))
                    pending.remove(name)
                    self.say(f"start  {name}: {' '.join(self._stage_argv(stage)[3:])}  (log: {log_path})")

                for name, job in list(self.jobs.items()):
                    self._pump_logs(name)
                    code = job.poll()
                    if code is None:
                        continue
                    del self.jobs[name]
                    self.executor.release(job)
                    stage = plan.stages[name]
                    error = (
                        None
                        if code == 0
                        else f"exit code {code}; see {self.run_dir / 'logs' / (name + '.log')}"
                    )
                    self.store.stage_finished(name, code, error)
                    row = self.store.stage(name) or {}
                    self._finish_stage_run(stage, code == 0)
                    outcomes[name] = StageOutcome(
                        name,
                        "done" if code == 0 else "failed",
                        row.get("seconds", 0.0),
                        self.last_metrics.get(name, {}),
                        error,
                    )
                    reran.add(name)
                    self.say(
                        f"{'done ' if code == 0 else 'FAIL '}  {name} ({row.get('seconds', 0.0):.0f} s)"
                        + (f": {error}" if error else "")
                    )

                self._pump_evaluations()
                self._replace_dead_workers(pending)
                if not self.workers and self.cfg.evaluation.workers and not self._training_left(pending):
                    if self.store.unfinished_evaluations() and not self._drained:
                        self._start_workers()  # left over from an interrupted run
                    self._drained = True
                if self.workers and not self._training_left(pending):
                    self.store.set_flag(CLOSED, True)
                    if all(w.poll() is not None for w in self.workers):
                        for worker in self.workers:
                            self.executor.release(worker)
                        self.workers = []
                        self._pump_evaluations()
                if (
                    pending
                    and not self.jobs
                    and not self.workers
                    and not any(self.executor.can_start(plan.stages[n].spec.resources) for n in pending)
                ):
                    raise RuntimeError(f"stages {pending} can never start on this executor")
                time.sleep(poll_seconds)
        except BaseException:
            self._stop_all("interrupted")
            self.tracker.end(parent, False)
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        ok = all(o.status in ("done", "skipped") for o in outcomes.values())
        self.tracker.end(parent, ok)
        self.executor.shutdown()
        return PipelineResult(
            ok, outcomes, self.store.evaluations(), self.run_dir, self.cfg.tracking(), parent
        )

    def _training_left(self, pending: list[str]) -> bool:
        evaluable = set(self.cfg.evaluation.stages or [])
        return bool(evaluable & (set(pending) | set(self.jobs)))

    def _stop_all(self, why: str) -> None:
        for name, job in list(self.jobs.items()):
            job.stop()
            self.store.stage_finished(name, -1, why)
            if name in self.stage_runs:
                self.tracker.end(self.stage_runs[name], False)
        for worker in self.workers:
            worker.stop()
        self.jobs, self.workers = {}, []


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stage_models(stage: PlannedStage) -> list[tuple[str, Path]]:
    """The exported model folders a finished stage leaves (registered in MLflow)."""
    if not stage.trains:
        return []
    found = []
    for path in produced_paths(stage.config, stage.registered):
        folder = Path(path)
        if folder != stage.output_dir and (folder / "config.json").is_file():
            found.append((stage.name, folder))
    return found
