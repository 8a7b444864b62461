"""The report: aggregation by category, Markdown table, radar chart (SPEC §6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hcx.eval.radar import radar_chart
from hcx.eval.report import SUMMARY_CATEGORIES, EvalReport, headline


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
