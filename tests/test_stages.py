"""One stage registry (hcx.stages) behind the CLI, the pipeline and the alignment commands."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel
from typer.main import get_command
from typer.testing import CliRunner

from hcx.cli import app
from hcx.stages import STAGES, Stage, resolve

ROOT = Path(__file__).resolve().parents[1]


def _commands(group: typer.Typer) -> dict[str, object]:
    return get_command(group).commands  # type: ignore[attr-defined]


def test_every_registered_stage_is_an_hcx_command_with_the_registry_help() -> None:
    help_text = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["--help"]).output
    commands = _commands(app)
    for stage in STAGES.values():
        assert stage.name in commands and stage.name in help_text
        assert commands[stage.name].help == stage.help  # type: ignore[attr-defined]
    assert {"run", "pipeline", "redteam", "serve"} <= set(commands)


@pytest.mark.parametrize("stage", STAGES.values(), ids=list(STAGES))
def test_the_registry_names_the_command_config_and_run_function_of_each_stage(stage: Stage) -> None:
    """Each hand-run command takes a recipe argument; each target resolves to what the entry claims."""
    command = get_command(app)
    for word in stage.command:
        command = command.commands[word]  # type: ignore[attr-defined]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    assert arguments and arguments[0].name == "recipe"
    assert "--set" in {opt for p in command.params for opt in p.opts}
    assert CliRunner().invoke(app, [*stage.command, "--help"]).exit_code == 0
    assert issubclass(stage.config_model(), BaseModel)
    run = resolve(stage.run)
    parameters = inspect.signature(run).parameters
    assert ("on_checkpoint" in parameters) == stage.trains
    assert stage.evaluable <= stage.trains


def test_the_pipeline_and_the_alignment_commands_read_the_same_registry() -> None:
    from hcx.align import cli as align_cli
    from hcx.pipeline.config import StageSpec
    from hcx.pipeline.plan import PlannedStage

    for stage in STAGES.values():
        planned = PlannedStage(stage.name, StageSpec(kind=stage.name), None, [])  # type: ignore[arg-type]
        assert planned.registered is stage
        assert planned.trains == stage.trains and planned.evaluable == stage.evaluable
    for name in ("sft", "rm", "ppo"):
        assert resolve(STAGES[name].cli) is getattr(align_cli, name)
    assert not Path(ROOT / "hcx/pipeline/stages.py").exists()


def test_an_unknown_pipeline_kind_lists_the_registered_ones(tmp_path: Path) -> None:
    from hcx.config import RecipeError
    from hcx.pipeline.plan import make_plan

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("pipeline:\n  stages:\n    distill: {}\n")
    with pytest.raises(RecipeError, match="known: " + ", ".join(STAGES)):
        make_plan(recipe, dry_run=True)


def test_training_code_imports_nothing_of_the_pipeline() -> None:
    """Lower layers never import higher ones: a checkpoint callback is all training sees."""
    script = """
import importlib, json, pkgutil, sys
import hcx.train, hcx.align, hcx.model
names = [m.name for pkg in (hcx.train, hcx.align, hcx.model)
         for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "pipeline": sorted(m for m in sys.modules if m.startswith("hcx.pipeline"))}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert "hcx.train.checkpoint" in report["imported"] and "hcx.align.cli" in report["imported"]
    assert report["pipeline"] == []
