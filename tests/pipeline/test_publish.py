"""The pipeline's publish step reaches training as the on_checkpoint callback (SPEC §5.4)."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import hcx.stages
from hcx.config import Section
from hcx.pipeline.config import PipelineConfig
from hcx.pipeline.publish import Publisher, publisher, run_stage
from hcx.pipeline.store import Store
from hcx.stages import Stage
from hcx.train.checkpoint import Checkpointer, CheckpointSaved


class FakeConfig(Section):
    output_dir: str
    steps: int = 1


@dataclasses.dataclass
class FakeResult:
    step: int
    losses: list[float]


def fake_training(config: FakeConfig, on_checkpoint=None) -> FakeResult:
    """Saves one real (tiny) checkpoint per step through the Checkpointer, as every trainer does."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpointer = Checkpointer(config.output_dir, {"model": {}}, keep=1, on_saved=on_checkpoint)
    for step in range(1, config.steps + 1):
        path = str(Path(config.output_dir) / "checkpoints" / f"step_{step:07d}")
        checkpointer.save(model, optimizer, {"step": step}, CheckpointSaved(path, step, 8 * step, 0.0))
    return FakeResult(config.steps, [1.0] * config.steps)


def _checkpoint(root: Path, step: int) -> Path:
    path = root / "checkpoints" / f"step_{step:07d}"
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(b"w" * 64)
    (path / ".metadata").write_bytes(b"m")
    return path


def test_an_evaluated_stage_publishes_a_hard_linked_snapshot_with_a_pending_evaluation(
    tmp_path: Path,
) -> None:
    checkpoint = _checkpoint(tmp_path / "pretrain", 4)
    publish = Publisher(f"sqlite:///{tmp_path}/pipeline.db", "pretrain", True, tmp_path / "snapshots")
    publish(CheckpointSaved(str(checkpoint), 4, 256, time.time(), loss=3.5))
    store = Store(f"sqlite:///{tmp_path}/pipeline.db")
    (event,) = store.events()
    snapshot = Path(event.path)
    assert snapshot == tmp_path / "snapshots" / "pretrain" / "step_0000004"
    assert (snapshot / "weights.bin").stat().st_ino == (checkpoint / "weights.bin").stat().st_ino
    assert (event.step, event.tokens_seen, event.loss) == (4, 256, 3.5)
    assert [r["status"] for r in store.evaluations()] == ["pending"]
    shutil.rmtree(checkpoint)  # the stage prunes its own checkpoint; the worker still has the snapshot
    assert (snapshot / "weights.bin").read_bytes() == b"w" * 64


def test_a_stage_left_out_of_evaluation_only_records_its_checkpoints(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "rm", 5)
    publish = Publisher(f"sqlite:///{tmp_path}/pipeline.db", "rm", False, tmp_path / "snapshots")
    publish(CheckpointSaved(str(checkpoint), 5, 0, time.time(), stage="rm"))
    store = Store(f"sqlite:///{tmp_path}/pipeline.db")
    assert [e.path for e in store.events("rm")] == [str(checkpoint)]
    assert store.evaluations() == [] and not (tmp_path / "snapshots").exists()


@pytest.mark.parametrize(
    ("evaluation", "evaluated"),
    [
        ({}, {"pretrain": True, "reward": False}),
        ({"stages": ["reward"]}, {"pretrain": False, "reward": True}),
        ({"workers": 0}, {"pretrain": False, "reward": False}),
    ],
)
def test_the_callback_evaluates_the_stages_the_plan_evaluates(
    tmp_path: Path, evaluation: dict, evaluated: dict[str, bool]
) -> None:
    cfg = PipelineConfig.model_validate(
        {
            "run_dir": str(tmp_path),
            "stages": {"pretrain": {}, "reward": {"kind": "rm", "needs": ["pretrain"]}},
            "evaluation": evaluation,
        }
    )
    for name, expected in evaluated.items():
        callback = publisher(cfg, name)
        assert (callback.stage, callback.evaluate) == (name, expected)
        assert (
            callback.store_url == cfg.store_url() and callback.snapshots == (tmp_path / "snapshots").resolve()
        )


@pytest.fixture
def fake_stage(monkeypatch: pytest.MonkeyPatch) -> Stage:
    stage = Stage(
        "fake",
        "A stage that saves real checkpoints and nothing else.",
        cli="tests.pipeline.test_publish:fake_training",
        config="tests.pipeline.test_publish:FakeConfig",
        run="tests.pipeline.test_publish:fake_training",
        trains=True,
        evaluable=True,
    )
    monkeypatch.setitem(hcx.stages.STAGES, "fake", stage)
    return stage


def _recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "pipeline": {
                    "run_dir": str(tmp_path / "pipe"),
                    "stages": {"train": {"kind": "fake", "section": "small", "set": ["small.steps=2"]}},
                },
                "small": {"output_dir": str(tmp_path / "out"), "steps": 9},
            }
        )
    )
    return recipe


def test_a_pipeline_stage_runs_its_section_and_publishes_every_checkpoint(
    fake_stage: Stage, tmp_path: Path
) -> None:
    """The stage's own section and ``set`` apply after the run's overrides, as the planner loads it."""
    result = run_stage(_recipe(tmp_path), "train", ["small.steps=5"])
    assert result.step == 2
    store = Store(f"sqlite:///{tmp_path}/pipe/pipeline.db")
    events = store.events("train")
    assert [e.step for e in events] == [1, 2]
    assert all(Path(e.path).parent == (tmp_path / "pipe" / "snapshots" / "train").resolve() for e in events)
    assert all((Path(e.path) / "hcx_meta.json").is_file() for e in events)
    assert len(store.evaluations()) == 2
    assert [p.name for p in (tmp_path / "out" / "checkpoints").glob("step_*")] == ["step_0000002"]


def test_hcx_pipeline_stage_prints_the_summary_and_names_an_unknown_stage(
    fake_stage: Stage, tmp_path: Path
) -> None:
    from hcx.cli import app

    recipe = str(_recipe(tmp_path))
    done = CliRunner().invoke(app, ["pipeline", "stage", recipe, "train"])
    assert done.exit_code == 0, done.output
    assert '"step": 2' in done.output and "losses" not in done.output
    missing = CliRunner().invoke(app, ["pipeline", "stage", recipe, "nope"])
    assert missing.exit_code == 2 and "no stage 'nope'; stages: train" in missing.output
