"""Small real recipes for the pipeline: tiny pretraining and SFT on the shared data."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hcx.pipeline.config import PipelineConfig
from hcx.pipeline.store import Store
from tests.postgres import PostgresServer

# Held-out Korean bits per byte and two cheap log-likelihood tasks on real shared items: enough
# to score a checkpoint in seconds.
TEST_SUITE = {
    "description": "pipeline tests",
    "tasks": [
        {"task": "hcx_bpb_ko", "category": "bits_per_byte", "metric": "bits_per_byte"},
        {"task": "hcx_kmmlu_criminal_law", "num_fewshot": 0, "limit": 4, "category": "korean"},
        {"task": "hcx_piqa", "limit": 4, "category": "commonsense"},
    ],
}


def pipeline_recipe(
    tmp_path: Path,
    tokenizer_dir: Path,
    corpus_glob: str,
    data_dir: Path,
    *,
    pretrain_steps: int = 12,
    sft_steps: int = 6,
    workers: int = 1,
    executor: str = "local",
    stages: tuple[str, ...] = ("pretrain", "sft"),
    store: str | None = None,
) -> Path:
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(TEST_SUITE))
    graph = {"pretrain": {"resources": {"cpus": 1}}, "sft": {"needs": ["pretrain"], "resources": {"cpus": 1}}}
    recipe = {
        "pipeline": {
            "run_dir": str(tmp_path / "pipe"),
            "executor": executor,
            "store": store,
            "stages": {name: graph[name] for name in stages},
            "evaluation": {
                "workers": workers,
                "suite": str(suite),
                "lease_seconds": 20,
                "heartbeat_seconds": 2,
                "poll_seconds": 0.5,
                "resources": {"cpus": 1},
            },
        },
        "pretrain": {
            "corpus": corpus_glob,
            "tokenizer": str(tokenizer_dir),
            "output_dir": str(tmp_path / "pretrain"),
            "model": {"preset": "tiny", "vocab_size": None, "n_layers": 2, "max_seq_len": 256},
            "steps": pretrain_steps,
            "stages": [{"fraction": 1.0, "seq_len": 64, "batch_size": 4, "rope_base": 10000}],
            "optim": {"lr": 3e-3, "warmup_steps": 2},
            "checkpoint": {"every": 4},
            "dtype": "float32",
            "log_every": 1,
            "bpb": {"languages": ["ko"]},  # what the tests compare with the workers' hcx_bpb_ko
            "export_hf": str(tmp_path / "hf"),
        },
        "sft": {
            "init": str(tmp_path / "hf"),
            "output_dir": str(tmp_path / "sft"),
            "sources": [{"path": str(data_dir / "sft" / "ko.jsonl.gz"), "language": "ko"}],
            "korean_ratio": 1.0,
            "max_samples": 200,
            "held_out": 10,
            "max_len": 128,
            "max_tokens": 1024,
            "steps": sft_steps,
            "dtype": "float32",
            "log_every": 1,
            "optim": {"lr": 1e-3, "warmup_steps": 1},
            "checkpoint": {"every": 3},
            "bpb": {"languages": ["ko"]},
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def hcx(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hcx.cli", *args], capture_output=True, text=True, **kwargs)


def store_of(recipe: Path) -> Store:
    """The event store a recipe's pipeline used."""
    return Store(PipelineConfig.model_validate(yaml.safe_load(recipe.read_text())["pipeline"]).store_url())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def finished_pipeline(
    request: pytest.FixtureRequest, tmp_path_factory, tokenizer_dir: Path, corpus_glob: str, data_dir: Path
) -> Path:
    """One real ``hcx run`` of pretrain -> sft with one evaluation worker; returns its recipe.

    Its event store is a SQLite file, or a PostgreSQL database that goes away mid-run: the
    server stops once the first evaluation is recorded and starts again once the driver has
    said it is retrying. The tests that follow find no trace of the outage.
    """
    tmp = tmp_path_factory.mktemp(f"pipeline-{request.param}")
    if request.param == "sqlite":
        recipe = pipeline_recipe(tmp, tokenizer_dir, corpus_glob, data_dir)
        done = hcx("run", str(recipe), timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return recipe
    postgres: PostgresServer = request.getfixturevalue("postgres")
    recipe = pipeline_recipe(tmp, tokenizer_dir, corpus_glob, data_dir, store=postgres.new_database())
    output = run_through_an_outage(recipe, postgres, tmp / "driver.log")
    assert "database unavailable during" in output
    return recipe


def run_through_an_outage(recipe: Path, postgres: PostgresServer, log_path: Path) -> str:
    """``hcx run`` with the store's server stopped after the first evaluation and restarted once the driver retries."""
    store = store_of(recipe)
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "hcx.cli", "run", str(recipe)], stdout=log, stderr=log
        )
    deadline = time.monotonic() + 600
    while not any(row["status"] == "done" for row in store.evaluations()):
        assert driver.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)
    postgres.stop()
    try:
        while "database unavailable during" not in log_path.read_text():
            assert driver.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        postgres.start()
    driver.wait(timeout=600)
    output = log_path.read_text()
    assert driver.returncode == 0, output[-3000:]
    return output
