from __future__ import annotations

import os
from pathlib import Path

from hcx.pipeline.store import Store
from tests.pipeline.conftest import hcx, pipeline_recipe


def test_ray_executor_runs_a_stage_and_an_evaluation_worker_as_ray_tasks(
    tmp_path: Path, tokenizer_dir: Path, corpus_glob: str, data_dir: Path
) -> None:
    """Smoke run on a local Ray instance: pretraining and its checkpoint evaluation as Ray tasks."""
    recipe = pipeline_recipe(
        tmp_path, tokenizer_dir, corpus_glob, data_dir, pretrain_steps=8, executor="ray", stages=("pretrain",)
    )
    done = hcx("run", str(recipe), timeout=600, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    store = Store(f"sqlite:///{tmp_path}/pipe/pipeline.db")
    assert store.stage("pretrain")["status"] == "done"
    assert store.stage("pretrain")["pid"] is None  # not a local subprocess: Ray ran it
    assert [(e["step"], e["status"], e["worker"]) for e in store.evaluations()] == [
        (4, "done", "worker-0"),
        (8, "done", "worker-0"),
    ]
    assert (tmp_path / "hf" / "config.json").is_file()
