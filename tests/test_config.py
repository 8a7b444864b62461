from __future__ import annotations

from pathlib import Path

import pytest

from hcx.config import RecipeError, Section, apply_overrides, load_section


class Inner(Section):
    lr: float = 3e-4
    steps: int = 10


class Stage(Section):
    name: str = "x"
    path: str = "${data_dir}/pretrain"
    inner: Inner = Inner()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_overrides_and_variables(tmp_path: Path, data_dir: Path) -> None:
    recipe = write(tmp_path, "stage:\n  name: tiny\n  path: ${data_dir}/pretrain\n")
    cfg = load_section(recipe, "stage", Stage, ["stage.inner.lr=0.01", "stage.inner.steps=7"])
    assert cfg.name == "tiny"
    assert cfg.inner.lr == pytest.approx(0.01)
    assert cfg.inner.steps == 7
    assert Path(cfg.path) == data_dir / "pretrain"
    assert Path(cfg.path).is_dir()


def test_missing_section_gives_defaults(tmp_path: Path) -> None:
    recipe = write(tmp_path, "other: {}\n")
    cfg = load_section(recipe, "stage", Stage, variables={"data_dir": "/d"})
    assert cfg.inner.steps == 10
    assert cfg.path == "/d/pretrain"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    recipe = write(tmp_path, "stage:\n  inner:\n    stepz: 3\n")
    with pytest.raises(RecipeError, match=r"stage\.inner\.stepz"):
        load_section(recipe, "stage", Stage)


def test_bad_type_is_named(tmp_path: Path) -> None:
    recipe = write(tmp_path, "stage:\n  inner:\n    steps: many\n")
    with pytest.raises(RecipeError, match=r"stage\.inner\.steps"):
        load_section(recipe, "stage", Stage)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_section(write(tmp_path, "stage: [unclosed\n"), "stage", Stage)
    with pytest.raises(RecipeError, match="recipe not found"):
        load_section(tmp_path / "nope.yaml", "stage", Stage)


def test_unknown_variable_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RecipeError, match=r"unknown variable \$\{nope\}"):
        load_section(write(tmp_path, "stage:\n  name: ${nope}\n"), "stage", Stage)
    monkeypatch.setenv("HCX_TEST_NAME", "from-env")
    cfg = load_section(write(tmp_path, "stage:\n  name: ${env:HCX_TEST_NAME}\n"), "stage", Stage)
    assert cfg.name == "from-env"


def test_override_syntax_errors() -> None:
    with pytest.raises(RecipeError, match=r"section\.key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(RecipeError, match="not a mapping"):
        apply_overrides({"a": 3}, ["a.b=1"])
