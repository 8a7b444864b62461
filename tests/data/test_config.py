"""The `data:` recipe section: defaults, per-language overrides, errors that name the field."""

from __future__ import annotations

import pytest

from hcx.config import RecipeError
from hcx.data.config import load_data_config


def write(tmp_path, body: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def test_tiny_recipe_loads_with_shared_data(repo_root, data_dir):
    config = load_data_config(repo_root / "recipes" / "tiny.yaml")
    assert {s.segment for s in config.sources} == {"korean", "multilingual", "code"}
    assert any(s.weight > 1 for s in config.sources if s.segment == "korean")
    assert config.mix.shares() == {"korean": 1 / 3, "multilingual": 1 / 3, "code": 1 / 3}
    assert config.tokenizer is not None and config.tokenizer.startswith(str(data_dir))


def test_unknown_segment_names_the_field(tmp_path):
    recipe = write(
        tmp_path, "data:\n  sources:\n    - {name: x, paths: [a.jsonl], segment: korea, language: ko}\n"
    )
    with pytest.raises(RecipeError, match=r"data\.sources\.0\.segment"):
        load_data_config(recipe)


def test_unknown_mix_segment_names_the_field(tmp_path):
    recipe = write(tmp_path, "data:\n  mix: {korean: 1, english: 1}\n")
    with pytest.raises(RecipeError, match=r"data\.mix\.english"):
        load_data_config(recipe)


def test_language_thresholds_override_single_values(tmp_path):
    recipe = write(tmp_path, "data:\n  prose_filters:\n    ko: {min_words: 3}\n    vi: {min_words: 40}\n")
    config = load_data_config(recipe, ["data.prose_filters.en.min_stop_words=1"])
    assert config.prose_filters_for("ko").min_words == 3
    assert config.prose_filters_for("ko").max_avg_word_length == 4.0
    assert config.prose_filters_for("vi").min_words == 40
    assert config.prose_filters_for("en").min_stop_words == 1
    assert config.prose_filters_for("xx").min_words == 10


def test_a_source_needs_exactly_one_input(tmp_path):
    recipe = write(tmp_path, "data:\n  sources:\n    - {name: x, segment: code, language: code}\n")
    with pytest.raises(RecipeError, match="paths"):
        load_data_config(recipe)
