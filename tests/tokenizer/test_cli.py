from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from hcx.cli import app
from hcx.tokenizer import load


def test_train_then_stats_from_the_tiny_recipe(repo_root: Path, tmp_path: Path, ablation_dir: Path):
    runner = CliRunner()
    out = tmp_path / "tok"
    recipe = str(repo_root / "recipes" / "tiny.yaml")
    result = runner.invoke(
        app,
        [
            "tokenizer", "train", recipe,
            "--set", f"tokenizer.output_dir={out}",
            "--set", f"tokenizer.cache_dir={tmp_path / 'cache'}",
            "--set", "tokenizer.vocab_size=600",
            "--set", "tokenizer.max_bytes_per_file=40000",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load(out).vocab_size == 600
    result = runner.invoke(
        app,
        [
            "tokenizer", "stats", recipe,
            "--set", f"tokenizer.output_dir={out}",
            "--set", "tokenizer.stats.references=[gpt4-cl100k, polyglot-ko-30k]",
            "--set", "tokenizer.stats.docs_per_language=20",
            "--tokenizer", f"ablation={ablation_dir}",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("hcx (ours)", "ablation", "gpt4-cl100k", "polyglot-ko-30k", "Korean", "English", "code"):
        assert name in result.output


def test_bad_override_is_reported_with_the_field(repo_root: Path):
    result = CliRunner().invoke(
        app,
        ["tokenizer", "train", str(repo_root / "recipes" / "tiny.yaml"), "--set", "tokenizer.vocab_sise=10"],
    )
    assert result.exit_code == 2
    assert "tokenizer.vocab_sise" in result.output
