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


def _dry_run(repo_root: Path, recipe: str, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> list[str]:
    from typer.testing import CliRunner

    from hcx.cli import app

    for name, value in {"HCX_CORPUS": "/cluster/corpus", "HCX_PIPELINE_DB": "postgresql://db/hcx"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow")
    sets = [arg for override in overrides for arg in ("--set", override)]
    done = CliRunner().invoke(app, ["run", str(repo_root / "recipes" / f"{recipe}.yaml"), "--dry-run", *sets])
    assert done.exit_code == 0, done.output
    return done.output.splitlines()


def test_dry_run_of_hcx_l_prints_memory_per_rank_and_warns_where_a_layout_cannot_fit(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hcx.model.config import ModelConfig
    from hcx.train.memory import GIB, HEADROOM, estimate_memory

    lines = _dry_run(repo_root, "hcx-l", monkeypatch)
    memory = {}
    for stage in ("pretrain", "sft", "rm", "ppo"):
        row = next(i for i, line in enumerate(lines) if line.startswith(f"{stage} "))
        match = re.match(
            r"\s+mem/rank≈([\d.]+) GiB \(params [\d.]+, .*, act [\d.]+, logits [\d.]+\)", lines[row + 1]
        )
        assert match, lines[row + 1]
        memory[stage] = float(match.group(1))
    assert max(memory[s] for s in ("pretrain", "sft", "rm")) <= HEADROOM * 79.6
    # PPO on 8 data-parallel ranks: policy and value (AdamW, fp32 master weights) plus reference and
    # reward model of a 70B-class decoder, each sharded 8 ways, 5 rows of 256 prompt + 128 response
    # tokens, plus the rollout engine's unsharded bf16 copy of the policy (140 GB alone).
    model = ModelConfig(preset="hcx-l", vocab_size=100_032)
    ppo = (
        estimate_memory(model, 5, 384, logit_positions=128, dp=8)
        + estimate_memory(model, 5, 384, lm_head=False, dp=8)
        + estimate_memory(model, 5, 384, trains=False, dp=8)
        + estimate_memory(model, 5, 384, trains=False, lm_head=False, dp=8)
        + estimate_memory(model, 1, 1, trains=False)
    )
    assert memory["ppo"] == round(ppo.total / GIB, 1)
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        f"WARNING: stage ppo needs ≈{memory['ppo']} GiB per rank, more than h100-80gb"
    )
    assert lines[-1].endswith("1 stage(s) may not fit their devices: ppo")

    lines = _dry_run(repo_root, "hcx-l", monkeypatch, "sft.activation_checkpointing=false")
    sft = next(line for line in lines if line.startswith("WARNING: stage sft"))
    assert "raise dp/tp/pp" in sft and "turn on activation_checkpointing" in sft


def test_alignment_stages_fall_back_to_the_recipes_pretrain_model(
    tmp_path: Path, tokenizer_dir: Path, corpus_glob: str
) -> None:
    """sft.init does not exist yet: the shape is pretrain.model's, the vocabulary the tokenizer's."""
    from hcx.model.config import ModelConfig, padded_vocab_size
    from hcx.pipeline.memory import stage_memory
    from hcx.tokenizer.tokenizer import load
    from hcx.train.memory import estimate_memory

    recipe = write_recipe(tmp_path, tokenizer_dir, corpus_glob, {"stages": {"sft": {}}})
    plan = make_plan(recipe, dry_run=True)
    sft = stage_memory(plan.stages["sft"], plan)
    model = ModelConfig(
        preset="tiny",
        vocab_size=padded_vocab_size(load(tokenizer_dir).vocab_size),
        n_layers=2,
        max_seq_len=256,
    )
    # Grouped batching (the default): a 16,384-token budget in rows of the 256-token context.
    assert sft is not None and sft.micro_batch == "64×256"
    assert sft.estimate == estimate_memory(model, 64, 256, dtype="bfloat16")

    recipe = write_recipe(tmp_path, tokenizer_dir, corpus_glob, {"stages": {"sft": {}}}, pretrain={})
    plan = make_plan(recipe, dry_run=True)
    unknown = stage_memory(plan.stages["sft"], plan)
    assert unknown is not None and unknown.estimate is None and "no pretrain.model" in unknown.unknown


def test_a_stage_names_its_gpu_by_a_known_name_or_its_memory() -> None:
    from hcx.pipeline.config import Resources

    assert Resources(gpu="h100-80gb").gpu_memory_gib == 79.6
    assert Resources(gpu="mi300x:192").gpu_memory_gib == 192.0
    assert Resources().gpu_memory_gib is None
    with pytest.raises(ValueError, match="unknown gpu 'h100'"):
        Resources(gpu="h100")
