from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hcx.config import RecipeError
from hcx.pipeline.plan import make_plan, topological_order


def write_recipe(tmp_path: Path, tokenizer_dir: Path, corpus_glob: str, pipeline: dict, **sections) -> Path:
    recipe = {
        "pipeline": {"run_dir": str(tmp_path / "pipe"), **pipeline},
        "pretrain": {
            "corpus": corpus_glob,
            "tokenizer": str(tokenizer_dir),
            "output_dir": str(tmp_path / "pretrain"),
            "model": {"preset": "tiny", "vocab_size": None, "n_layers": 2, "max_seq_len": 256},
            "steps": 4,
            "stages": [{"fraction": 1.0, "seq_len": 64, "batch_size": 4, "rope_base": 10000}],
            "dtype": "float32",
            "export_hf": str(tmp_path / "hf"),
        },
        "sft": {"init": str(tmp_path / "hf"), "output_dir": str(tmp_path / "sft"), "steps": 2},
        **sections,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def plan_error(tmp_path, tokenizer_dir, corpus_glob, pipeline, **kwargs) -> str:
    recipe = write_recipe(tmp_path, tokenizer_dir, corpus_glob, pipeline)
    with pytest.raises(RecipeError) as err:
        make_plan(recipe, cpus=2, **kwargs)
    return str(err.value)


def test_topological_order_keeps_recipe_order_and_names_a_cycle() -> None:
    assert topological_order({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}, "r") == ["a", "b", "c", "d"]
    with pytest.raises(RecipeError, match="cycle: a -> c -> b -> a"):
        topological_order({"a": ["c"], "b": ["a"], "c": ["b"]}, "r")


def test_a_valid_graph_plans_inputs_against_upstream_outputs(tmp_path, tokenizer_dir, corpus_glob) -> None:
    recipe = write_recipe(
        tmp_path, tokenizer_dir, corpus_glob, {"stages": {"pretrain": {}, "sft": {"needs": ["pretrain"]}}}
    )
    plan = make_plan(recipe, cpus=2)
    assert plan.order == ["pretrain", "sft"]
    assert str(tmp_path / "hf") in plan.stages["pretrain"].outputs
    assert plan.config.evaluation.stages == ["pretrain", "sft"]  # default: every LM-training stage


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        (
            {"stages": {"pretrain": {}, "distill": {}}},
            r"pipeline.stages.distill: unknown stage kind 'distill'",
        ),
        (
            {"stages": {"pretrain": {"needs": ["tokenizer"]}}},
            r"pipeline.stages.pretrain.needs: unknown stage 'tokenizer'",
        ),
        (
            {"stages": {"pretrain": {"needs": ["sft"]}, "sft": {"needs": ["pretrain"]}}},
            r"cycle: pretrain -> sft -> pretrain",
        ),
        (
            {"stages": {"pretrain": {}, "sft": {}}},
            r"pipeline.stages.sft: sft.init = .*/hf is produced by stage 'pretrain', which 'sft' does not need",
        ),
        (
            {"stages": {"sft": {}}},
            r"pipeline.stages.sft: sft.init = .*/hf does not exist and no stage produces it",
        ),
        (
            {"stages": {"pretrain": {"resources": {"cpus": 3}}}},
            r"pipeline.stages.pretrain.resources.cpus = 3, but the executor has 2 CPU cores",
        ),
        (
            {"stages": {"pretrain": {"resources": {"gpus": 1}}}},
            r"resources.gpus = 1, but the executor has 0 GPUs",
        ),
        (
            {"stages": {"pretrain": {}}, "evaluation": {"resources": {"cpus": 2}}},
            r"evaluation.resources.cpus = 2 leaves no core for training",
        ),
        (
            {"stages": {"pretrain": {}}, "evaluation": {"stages": ["rm"]}},
            r"pipeline.evaluation.stages: unknown stage 'rm'",
        ),
        ({"stages": {"pretrain": {"nodes": 2, "procs_per_node": 2}}}, r"pretrain.nodes = 2: multi-node"),
        ({"stages": {"pretrain": {"colour": "red"}}}, r"pipeline.stages.pretrain.colour"),
    ],
)
def test_bad_recipes_are_rejected_before_anything_starts(
    tmp_path, tokenizer_dir, corpus_glob, pipeline, message
):
    error = plan_error(tmp_path, tokenizer_dir, corpus_glob, pipeline)
    assert re.search(message, error), error
    assert not (tmp_path / "pretrain").exists()


def test_dry_run_checks_the_mesh_of_every_stage(tmp_path, tokenizer_dir, corpus_glob) -> None:
    recipe = write_recipe(
        tmp_path, tokenizer_dir, corpus_glob, {"stages": {"pretrain": {"procs_per_node": 8, "nodes": 2}}}
    )
    assert make_plan(recipe, dry_run=True).stages["pretrain"].spec.nodes == 2  # world 16, dp 16
    error = plan_error(
        tmp_path,
        tokenizer_dir,
        corpus_glob,
        {"stages": {"pretrain": {"procs_per_node": 6}}},
        overrides=["pretrain.parallel.tp=4"],
        dry_run=True,
    )
    assert "pipeline.stages.pretrain (world 6" in error and "does not divide the world size 6" in error


@pytest.mark.parametrize(("recipe", "pretrain_mesh"), [("hcx-s", "pp1×dp16×tp8"), ("hcx-l", "pp8×dp8×tp8")])
def test_real_scale_recipes_pass_the_dry_run(
    repo_root: Path, recipe: str, pretrain_mesh: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from hcx.cli import app

    for name, value in {"HCX_CORPUS": "/cluster/corpus", "HCX_PIPELINE_DB": "postgresql://db/hcx"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow")
    path = str(repo_root / "recipes" / f"{recipe}.yaml")
    done = CliRunner().invoke(app, ["run", path, "--dry-run"])
    assert done.exit_code == 0, done.output
    pretrain = next(line for line in done.output.splitlines() if line.startswith("pretrain"))
    assert f"mesh={pretrain_mesh}" in pretrain
    broken = CliRunner().invoke(app, ["run", path, "--dry-run", "--set", "pretrain.parallel.tp=3"])
    assert broken.exit_code == 2 and "pipeline.stages.pretrain" in broken.output and "tp=3" in broken.output
