"""The report: aggregation by category, Markdown table, radar chart (SPEC §6)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from hcx.eval.radar import radar_chart
from hcx.eval.report import SUMMARY_CATEGORIES, EvalReport, comparison_markdown, headline, within_noise


def _report(shift: float = 0.0) -> EvalReport:
    metrics = {
        "hcx_kmmlu_criminal_law": {"acc,none": 0.30 + shift, "acc_stderr,none": 0.04},
        "hcx_click": {"acc,none": 0.40 + shift, "acc_norm,none": 0.5},
        "hcx_piqa": {"acc,none": 0.6, "acc_norm,none": 0.7 + shift},
        "hcx_gsm8k_cot": {"exact_match,strict-match": 0.1, "exact_match,flexible-extract": 0.2},
        "hcx_xnli_ko": {"acc,none": 0.5},
    }
    categories = {
        "hcx_kmmlu_criminal_law": "korean",
        "hcx_click": "korean",
        "hcx_piqa": "commonsense",
        "hcx_gsm8k_cot": "math",
        "hcx_xnli_ko": "multilingual",
    }
    return EvalReport.build(metrics, categories, {"hcx_piqa": "acc_norm"}, model="tiny", suite="test")


def test_aggregation_by_category():
    report = _report()
    assert report.scores["hcx_piqa"] == pytest.approx(70.0)
    assert report.headline_metrics["hcx_gsm8k_cot"] == "exact_match,strict-match"
    assert report.categories == pytest.approx(
        {"korean": 35.0, "commonsense": 70.0, "math": 10.0, "multilingual": 50.0}
    )
    assert report.overall == pytest.approx((35.0 + 70.0 + 10.0) / 3)


def test_headline_metric_must_exist():
    assert headline({"acc,none": 0.5, "acc_stderr,none": 0.1}) == ("acc,none", 0.5)
    with pytest.raises(KeyError, match="acc_norm"):
        headline({"acc,none": 0.5}, "acc_norm")


def test_write_json_markdown_radar(tmp_path):
    paths = _report().write(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["overall"] == pytest.approx(38.3333, abs=1e-3) and "aggregation" in data
    assert EvalReport.read(paths["json"]).categories == _report().categories
    table = paths["markdown"].read_text()
    for row in (
        "| korean | 35.00 | 61.73 | 72.07 |",
        "| commonsense | 70.00 |",
        "| math | 10.00 |",
        "| multilingual | 50.00 | – | – |",
        "| **overall** | **38.33** | 53.01 | 62.68 |",
    ):
        assert row in table
    assert "Aggregation:" in table and "hcx_gsm8k_cot | math | exact_match,strict-match" in table
    _assert_rendered(paths["radar"])


def test_radar_compares_models(tmp_path):
    path = radar_chart({"sft": _report(), "ppo": _report(0.1)}, tmp_path / "cmp.png")
    _assert_rendered(path)
    no_reference = radar_chart({"sft": _report()}, tmp_path / "plain.png", reference=False)
    assert not np.array_equal(_pixels(path), _pixels(no_reference))


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _assert_rendered(path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (640, 640)
    pixels = _pixels(path)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    assert set(SUMMARY_CATEGORIES) >= {"korean", "math"}


def test_percent_scaled_metrics_are_kept_and_model_graded_scorers_are_named() -> None:
    report = EvalReport.build(
        {
            "hcx_flores_ko_en": {"chrf,none": 31.5, "bleu,none": 8.25},
            "hcx_kold": {"non_toxicity,none": 0.75},
            "hcx_piqa": {"acc,none": 0.5},
        },
        {"hcx_flores_ko_en": "multilingual", "hcx_kold": "safety", "hcx_piqa": "commonsense"},
        {"hcx_flores_ko_en": "chrf", "hcx_kold": "non_toxicity"},
    )
    assert report.scores == {"hcx_flores_ko_en": 31.5, "hcx_kold": 75.0, "hcx_piqa": 50.0}
    assert report.notes["toxicity scorer"] in ("lexicon", "perspective") or report.notes[
        "toxicity scorer"
    ].startswith("classifier:")
    assert report.notes["xcomet"]
    markdown = report.markdown()
    assert f"- toxicity scorer: {report.notes['toxicity scorer']}" in markdown and "- xcomet:" in markdown


def _scored(acc: dict[str, float], stderr: float = 0.02) -> EvalReport:
    tasks = {"hcx_kmmlu_criminal_law": "korean", "hcx_kobest_copa": "korean", "hcx_piqa": "commonsense"}
    metrics = {t: {"acc,none": acc[t], "acc_stderr,none": stderr} for t in tasks}
    metrics["hcx_bpb_ko"] = {"bits_per_byte,none": 1.25, "bits_per_byte_stderr,none": "N/A"}
    tasks["hcx_bpb_ko"] = "bits_per_byte"
    return EvalReport.build(metrics, tasks, {"hcx_bpb_ko": "bits_per_byte"}, model="m", suite="s")


def test_standard_errors_follow_the_scores_into_categories_and_overall():
    report = _scored({"hcx_kmmlu_criminal_law": 0.3, "hcx_kobest_copa": 0.5, "hcx_piqa": 0.6})
    assert report.stderrs["hcx_piqa"] == pytest.approx(2.0)
    assert report.category_stderrs["korean"] == pytest.approx(math.sqrt(2 * 2.0**2) / 2)
    assert report.overall_stderr == pytest.approx(math.sqrt(2.0 + 4.0) / 2)  # korean √2, commonsense 2
    assert report.stderrs["hcx_bpb_ko"] is None
    # Bits per byte stays in bits and out of overall.
    assert report.scores["hcx_bpb_ko"] == 1.25 and report.categories["bits_per_byte"] == 1.25
    assert report.overall == pytest.approx((40.0 + 60.0) / 2)
    table = report.markdown()
    assert "| korean | 40.00 ± 1.41 |" in table and "| **overall** | **50.00 ± 1.22** |" in table
    assert "| bits_per_byte (lower is better) | 1.25 |" in table
    # A report without any standard error (an old report.json) still reads and prints.
    assert "| korean | 35.00 |" in _report().markdown()


def test_comparison_marks_differences_within_noise():
    base = _scored({"hcx_kmmlu_criminal_law": 0.30, "hcx_kobest_copa": 0.50, "hcx_piqa": 0.60})
    moved = _scored({"hcx_kmmlu_criminal_law": 0.32, "hcx_kobest_copa": 0.52, "hcx_piqa": 0.75})
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in comparison_markdown({"sft": base, "ppo": moved}).splitlines()
    }
    # Korean +2.00 with a difference stderr of 2.0: within noise; commonsense +15 with 2.83: not.
    assert rows["korean"].endswith("| +2.00 ≈ |")
    assert rows["commonsense"].endswith("| +15.00 |")
    assert rows["hcx_bpb_ko"].endswith("| +0.00 ? |")  # no standard error: unknown
    assert within_noise(10.0, 1.0, 12.0, 1.0) and not within_noise(10.0, 1.0, 13.0, 1.0)
    assert within_noise(10.0, None, 12.0, 1.0) is None
