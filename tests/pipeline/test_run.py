from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from hcx.pipeline.store import Store
from tests.pipeline.conftest import hcx, pipeline_recipe, store_of


def run_dir(recipe: Path) -> Path:
    return Path(yaml.safe_load(recipe.read_text())["pipeline"]["run_dir"])


def test_stages_run_in_order_and_every_checkpoint_is_evaluated_once(finished_pipeline: Path) -> None:
    store = store_of(finished_pipeline)
    stages = store.all_stages()
    assert {n: s["status"] for n, s in stages.items()} == {"pretrain": "done", "sft": "done"}
    assert stages["pretrain"]["finished"] <= stages["sft"]["started"]
    events = store.events()
    assert [(e.stage, e.step) for e in events] == [
        ("pretrain", 4),
        ("pretrain", 8),
        ("pretrain", 12),
        ("sft", 3),
        ("sft", 6),
    ]
    evaluations = store.evaluations()
    assert [(e["stage"], e["step"], e["status"]) for e in evaluations] == [
        (e.stage, e.step, "done") for e in events
    ]
    for row in evaluations:
        result = row["result"]
        assert set(result["scores"]) == {"hcx_bpb_ko", "hcx_kmmlu_criminal_law", "hcx_piqa"}
        assert 0 <= result["overall"] <= 100
        assert Path(result["files"]["radar"]).is_file()
    # Snapshots taken for evaluation are gone once evaluated; the stages' own checkpoints remain.
    assert not any((run_dir(finished_pipeline) / "snapshots").glob("*/step_*"))


def test_held_out_bits_per_byte_falls_from_the_first_to_the_last_pretraining_checkpoint(
    finished_pipeline: Path,
) -> None:
    """Learning shows: the evaluation workers' and the training log's bpb on held-out Korean."""
    store = store_of(finished_pipeline)
    evaluated = {e["step"]: e["result"]["bpb"]["ko"] for e in store.evaluations() if e["stage"] == "pretrain"}
    assert sorted(evaluated) == [4, 8, 12]
    assert evaluated[12] < evaluated[4], evaluated
    pretrain = Path(yaml.safe_load(finished_pipeline.read_text())["pretrain"]["output_dir"])
    logged = {
        r["step"]: r["bpb/ko"]
        for r in map(json.loads, (pretrain / "train_log.jsonl").read_text().splitlines())
        if "bpb/ko" in r
    }
    assert sorted(logged) == [4, 8, 12]
    assert logged[12] < logged[4], logged
    # The same documents after the same prefix token: training and evaluation measure one thing.
    for step, value in logged.items():
        assert abs(value - evaluated[step]) <= 1e-3 * value, (step, value, evaluated[step])


def test_checkpoints_are_evaluated_while_training_goes_on(finished_pipeline: Path) -> None:
    store = store_of(finished_pipeline)
    stages = store.all_stages()
    evaluations = store.evaluations()
    first_eval_done = min(e["finished"] for e in evaluations)
    last_checkpoint = max(e["event_time"] for e in evaluations)
    # An evaluation finished before training did: evaluation and training interleaved in time.
    assert first_eval_done < last_checkpoint
    assert first_eval_done < stages["sft"]["finished"]


def test_mlflow_holds_the_parent_run_stage_runs_metrics_artifacts_and_models(finished_pipeline: Path) -> None:
    uri = f"sqlite:///{run_dir(finished_pipeline)}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("hcx")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs["pipeline:recipe"]
    assert parent.info.status == "FINISHED"
    for stage in ("pretrain", "sft"):
        run = runs[stage]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["output_dir"].endswith(stage)
        losses = client.get_metric_history(run.info.run_id, "loss")
        assert len(losses) == {"pretrain": 12, "sft": 6}[stage]
        overall = client.get_metric_history(run.info.run_id, "eval/overall")
        assert sorted(m.step for m in overall) == {"pretrain": [4, 8, 12], "sft": [3, 6]}[stage]
        for name in ("eval/hcx_bpb_ko", "bpb/ko"):  # the workers' and the training log's
            history = client.get_metric_history(run.info.run_id, name)
            assert sorted(m.step for m in history) == {"pretrain": [4, 8, 12], "sft": [3, 6]}[stage], name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"eval", "model", "plots", "train_log.jsonl"} <= artifacts
        versions = client.search_model_versions(f"name='hcx-recipe-{stage}'")
        assert [v.run_id for v in versions] == [run.info.run_id]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"plots"}
    summary = json.loads((run_dir(finished_pipeline) / "summary.json").read_text())
    assert summary["ok"] and len(summary["evaluations"]) == 5


def test_a_rerun_skips_finished_stages(finished_pipeline: Path) -> None:
    again = hcx("run", str(finished_pipeline), timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "skip   pretrain" in again.stdout and "skip   sft" in again.stdout
    store = store_of(finished_pipeline)
    assert {s["attempts"] for s in store.all_stages().values()} == {1}


def test_killed_pretraining_resumes_from_its_checkpoint_on_rerun(
    tmp_path: Path, tokenizer_dir: Path, corpus_glob: str, data_dir: Path
) -> None:
    recipe = pipeline_recipe(
        tmp_path, tokenizer_dir, corpus_glob, data_dir, pretrain_steps=400, workers=0, stages=("pretrain",)
    )
    store = Store(f"sqlite:///{tmp_path}/pipe/pipeline.db")
    driver = subprocess.Popen(
        [sys.executable, "-m", "hcx.cli", "run", str(recipe)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    while len(store.events("pretrain")) < 2:
        assert driver.poll() is None and time.time() < deadline, driver.stdout.read() if driver.stdout else ""
        time.sleep(0.5)
    os.kill(store.stage("pretrain")["pid"], signal.SIGKILL)
    output = driver.communicate(timeout=120)[0]
    assert driver.returncode == 1 and "FAIL   pretrain" in output
    assert store.stage("pretrain")["status"] == "failed"
    saved = max(e.step for e in store.events("pretrain"))

    rerun = hcx("run", str(recipe), "--set", "pretrain.steps=" + str(saved + 4), timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "pretrain" / "train_log.jsonl").read_text().splitlines()]
    resumes = [r for r in log if r.get("event") == "resume"]
    assert resumes and resumes[-1]["step"] == saved
    assert store.stage("pretrain")["status"] == "done" and store.stage("pretrain")["attempts"] == 2


def test_a_killed_driver_is_resumed_by_the_rerun_and_every_evaluation_is_recorded_once(
    tmp_path: Path, tokenizer_dir: Path, corpus_glob: str, data_dir: Path
) -> None:
    """SIGKILL ``hcx run`` itself while pretraining runs and a worker is mid-evaluation; its children die with it."""
    recipe = pipeline_recipe(
        tmp_path, tokenizer_dir, corpus_glob, data_dir, pretrain_steps=400, stages=("pretrain",)
    )
    raw = yaml.safe_load(recipe.read_text())
    raw["pipeline"]["evaluation"].update(lease_seconds=3, heartbeat_seconds=1)
    recipe.write_text(yaml.safe_dump(raw))
    store = store_of(recipe)
    driver = subprocess.Popen(
        [sys.executable, "-m", "hcx.cli", "run", str(recipe)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (claimed := [row["step"] for row in store.evaluations() if row["status"] == "claimed"]):
        assert driver.poll() is None and time.time() < deadline, "no evaluation was claimed"
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    stage = store.stage("pretrain")
    assert stage["status"] == "running"  # killed mid-training, as far as the store knows
    _wait_for_exit(stage["pid"])  # the stage and the worker die with their driver (PR_SET_PDEATHSIG)
    saved = max(e.step for e in store.events("pretrain"))

    rerun = hcx("run", str(recipe), "--set", f"pretrain.steps={saved + 4}", timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    steps = [e.step for e in store.events("pretrain")]
    assert steps == list(range(4, saved + 5, 4))
    rows = store.evaluations()
    assert [(r["step"], r["status"]) for r in rows] == [(step, "done") for step in steps]
    assert all(r["logged"] for r in rows)
    # The evaluation the dead worker held was taken over once its lease expired; no other was redone.
    assert {r["step"]: r["attempts"] for r in rows} == {step: 2 if step in claimed else 1 for step in steps}
    assert store.stage("pretrain")["status"] == "done" and store.stage("pretrain")["attempts"] == 2
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir(recipe)}/mlflow.db")
    experiment = client.get_experiment_by_name("hcx")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["pipeline:recipe", "pretrain"]
    (stage_run,) = [r for r in runs if r.info.run_name == "pretrain"]
    overall = client.get_metric_history(stage_run.info.run_id, "eval/overall")
    assert sorted(m.step for m in overall) == steps


def _wait_for_exit(pid: int, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while Path(f"/proc/{pid}").exists() and "zombie" not in _process_state(pid):
        assert time.time() < deadline, f"process {pid} outlived its driver"
        time.sleep(0.1)


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def test_a_stage_under_torchrun_publishes_each_checkpoint_once_from_rank_0(
    tmp_path: Path, tokenizer_dir: Path, corpus_glob: str, data_dir: Path
) -> None:
    """Every rank builds the publish callback; the checkpointer calls it on rank 0 only."""
    recipe = pipeline_recipe(
        tmp_path, tokenizer_dir, corpus_glob, data_dir, pretrain_steps=8, stages=("pretrain",)
    )
    raw = yaml.safe_load(recipe.read_text())
    raw["pipeline"]["stages"]["pretrain"]["procs_per_node"] = 2
    recipe.write_text(yaml.safe_dump(raw))
    done = hcx("run", str(recipe), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    store = Store(f"sqlite:///{tmp_path}/pipe/pipeline.db")
    assert [e.step for e in store.events("pretrain")] == [4, 8]
    assert [r["status"] for r in store.evaluations()] == ["done", "done"]
    log = (tmp_path / "pipe" / "logs" / "pretrain.log").read_text()
    assert log.count('"stage": "pretrain"') == 1
