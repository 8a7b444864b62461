from __future__ import annotations

import pytest

from hcx.config import RecipeError, load_section
from hcx.train.config import PretrainConfig


def test_defaults_are_the_spec_schedule():
    cfg = PretrainConfig(steps=1000)
    assert [(s.fraction, s.seq_len) for s in cfg.stages] == [(0.9, 4096), (0.1, 32768)]
    assert cfg.stages[1].rope_base > cfg.stages[0].rope_base
    assert cfg.stages[0].batch_size * 4096 == cfg.stages[1].batch_size * 32768
    assert cfg.stage_starts() == [0, 900]
    assert cfg.stage_at(899)[0] == 0 and cfg.stage_at(900)[0] == 1
    assert cfg.dtype == "auto" and cfg.model.n_kv_heads < cfg.model.n_heads


def test_context_longer_than_the_model_takes_is_rejected_with_the_field(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "pretrain:\n  model: {preset: tiny}\n  stages:\n"
        "    - {fraction: 0.9, seq_len: 256, batch_size: 8, rope_base: 10000}\n"
        "    - {fraction: 0.1, seq_len: 4096, batch_size: 2, rope_base: 500000}\n"
    )
    with pytest.raises(RecipeError, match=r"stages\[1\]\.seq_len 4096 exceeds model\.max_seq_len 1024"):
        load_section(recipe, "pretrain", PretrainConfig)
    with pytest.raises(RecipeError, match="fractions must sum to 1"):
        load_section(
            recipe,
            "pretrain",
            PretrainConfig,
            ["pretrain.stages=[{fraction: 0.5, seq_len: 64, batch_size: 1, rope_base: 1.0}]"],
        )


def test_tiny_recipe_section_loads(repo_root):
    cfg = load_section(repo_root / "recipes" / "tiny.yaml", "pretrain", PretrainConfig)
    assert cfg.model.preset == "tiny" and cfg.fim.rate > 0
    assert len(cfg.stages) == 2 and cfg.stages[1].seq_len > cfg.stages[0].seq_len
    assert cfg.export_hf
