"""``hcx eval`` end to end on the tiny pretrained export and the shared items."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from hcx.cli import app
from hcx.eval.suites import load_suite


def test_run_quick_suite_writes_report_and_resumes(base_model_dir, data_dir, tmp_path):
    out = tmp_path / "eval"
    args = [
        "eval",
        "run",
        str(base_model_dir),
        "--suite",
        "quick",
        "--data-dir",
        str(data_dir),
        "--limit",
        "3",
        "--output",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["scores"]) == {entry.task for entry in load_suite("quick").tasks}
    assert {"korean", "english", "commonsense", "factual", "harmlessness"} <= set(report["categories"])
    assert all(n <= 3 for n in report["samples"].values())
    # the choices of an item share its context through the engine's prefix cache
    assert 0 < report["prefix_cache_hit_rates"]["hcx_kmmlu_criminal_law"] < 1
    assert "Prefix cache" in (out / "report.md").read_text()
    assert "| korean |" in (out / "report.md").read_text() and (out / "radar.png").stat().st_size > 10_000
    cached = {p.name: p.stat().st_mtime_ns for p in (out / "tasks").glob("*.json")}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "tasks").glob("*.json")} == cached
    assert json.loads((out / "report.json").read_text())["scores"] == report["scores"]


def test_recipe_compares_checkpoints(base_model_dir, data_dir, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    suite = tmp_path / "one.yaml"
    suite.write_text("tasks:\n  - {task: hcx_kobest_copa, limit: 4, category: korean}\n")
    recipe.write_text(
        f"eval:\n  checkpoints: {{sft: {base_model_dir}, ppo: {base_model_dir}}}\n  suite: {suite}\n"
        f"  output_dir: {tmp_path / 'out'}\n"
    )
    result = CliRunner().invoke(app, ["eval", "recipe", str(recipe), "--set", "eval.limit=2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "radar.png").is_file()
    # The same weights twice: every difference is zero, within noise.
    comparison = (tmp_path / "out" / "comparison.md").read_text()
    assert "| hcx_kobest_copa |" in comparison and "| +0.00 ≈ |" in comparison
    assert comparison in result.output
    for name in ("sft", "ppo"):
        assert (
            json.loads((tmp_path / "out" / name / "report.json").read_text())["samples"]["hcx_kobest_copa"]
            == 2
        )


def test_cli_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(app, ["eval", "run", str(tmp_path), "--suite", "no-such-suite"])
    assert result.exit_code == 2 and "unknown suite 'no-such-suite'" in result.output
