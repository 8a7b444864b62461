"""MLflow bookkeeping for a pipeline: one parent run, a child run per stage (SPEC §5.4).

Only the pipeline's driver talks to MLflow. Stages write ``train_log.jsonl`` as they always
do; the driver tails it into the stage's run as metrics at their steps, and logs each
finished checkpoint evaluation at the checkpoint's step. The default backend is MLflow's
SQLite store in the run directory, so no server is needed; any tracking URI works.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel

log = logging.getLogger(__name__)


def _client(uri: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"a.b.c": "value"}`` strings for MLflow params."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, sub in value.items():
            out.update(flatten(sub, f"{prefix}{key}."))
        return out
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return {prefix.rstrip("."): text[:6000]}


def numeric_metrics(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if k not in ("time", "step")
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None):
        self.uri = uri
        self.client = _client(uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = artifact_root.resolve().as_uri() if artifact_root is not None else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)

    def start(
        self, run_id: str | None, name: str, parent: str | None = None, tags: dict[str, str] | None = None
    ):
        """Reopen ``run_id`` (a resumed pipeline or stage) or create a run; returns its id."""
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        all_tags = {"mlflow.runName": name, **(tags or {})}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        return self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id

    def end(self, run_id: str, ok: bool) -> None:
        self.client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")

    def params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        fresh = [Param(k, v) for k, v in params.items() if k not in existing]
        for i in range(0, len(fresh), 100):
            self.client.log_batch(run_id, params=fresh[i : i + 100])

    def metrics(self, run_id: str, rows: list[tuple[str, float, int, float]]) -> None:
        """Log ``(key, value, step, unix_time)`` rows."""
        from mlflow.entities import Metric

        batch = [Metric(key, value, int(t * 1000), step) for key, value, step, t in rows]
        for i in range(0, len(batch), 500):
            self.client.log_batch(run_id, metrics=batch[i : i + 500])

    def artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), folder)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path), folder)

    def register(self, run_id: str, name: str, model_dir: Path, folder: str = "model") -> int:
        """Log an exported model folder and register it as a new version of ``name``."""
        from mlflow.exceptions import MlflowException

        self.artifact(run_id, model_dir, folder)
        with contextlib.suppress(MlflowException):  # already registered by an earlier run
            self.client.create_registered_model(name)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{folder}"
        return int(self.client.create_model_version(name, source, run_id).version)


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"
