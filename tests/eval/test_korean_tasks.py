"""KoIF-style instruction following and KoBigBench (tasks/korean): no public items, so their
formats are defined by hcx; they fail clearly without data and run on the labelled fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from hcx.eval.local_data import MissingBenchmarkError
from hcx.eval.rouge import KiwiTokenizer, rouge_l
from tests.eval.run_lm_eval import HUB_FIXTURES, evaluate_hf, load_tasks


def test_korean_rouge_l_on_morphemes_by_hand() -> None:
    reference, prediction = "오늘 날씨는 맑았다", "오늘은 날씨가 맑습니다"
    tokenizer = KiwiTokenizer()
    assert tokenizer.tokenize(reference) == ["오늘", "날씨", "는", "맑", "었", "다"]
    assert tokenizer.tokenize(prediction) == ["오늘", "은", "날씨", "가", "맑", "습니다"]
    # LCS = 오늘 날씨 맑 (3 of 6 each side) → F1 = 0.5; rouge-score's own tokenizer drops Hangul entirely
    assert rouge_l(prediction, [reference]) == pytest.approx(0.5)
    assert rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure == 0.0
    assert rouge_l(prediction, ["전혀 다른 문장", reference]) == pytest.approx(0.5)  # best reference
    with pytest.raises(ValueError, match="at least one reference"):
        rouge_l(prediction, [])


@pytest.mark.parametrize("task, benchmark", [("hcx_koif", "koif"), ("hcx_kobigbench", "kobigbench")])
def test_missing_data_names_the_file(task: str, benchmark: str, data_dir: Path) -> None:
    with pytest.raises(MissingBenchmarkError, match=f"benchmark '{benchmark}'.*{benchmark}/test.jsonl"):
        load_tasks([task], data_dir)


def test_koif_prompt_and_scoring() -> None:
    task = load_tasks(["hcx_koif"], HUB_FIXTURES)["hcx_koif"]
    docs = list(task.test_docs())
    assert (
        task.doc_to_text(docs[0])
        == "### 지시문:\n다음 문장을 존댓말로 바꿔 주세요.\n\n### 입력:\n내일 회의 몇 시에 시작해?\n\n### 응답:\n"
    )
    assert "### 입력" not in task.doc_to_text(docs[1])  # empty input: no input section
    assert task.process_results(docs[1], ["한국의 수도는 서울입니다."]) == {"rougeL": 1.0}
    assert task.process_results(docs[1], ["서울"])["rougeL"] == pytest.approx(
        rouge_l("서울", [docs[1]["output"]])
    )


def test_model_run_on_fixtures(base_model_dir: Path) -> None:
    out = evaluate_hf(base_model_dir, ["hcx_koif", "hcx_kobigbench"], HUB_FIXTURES, limit=3)
    kbb = out["samples"]["hcx_kobigbench"]
    assert [s["target"] for s in kbb] == [0, 1, 2]
    correct = [max(range(3), key=lambda i: s["filtered_resps"][i][0]) == s["target"] for s in kbb]
    assert out["results"]["hcx_kobigbench"]["acc,none"] == pytest.approx(sum(correct) / 3)
    koif = out["samples"]["hcx_koif"]
    expected = [rouge_l(s["filtered_resps"][0].strip(), [s["doc"]["output"]]) for s in koif]
    assert out["results"]["hcx_koif"]["rougeL,none"] == pytest.approx(sum(expected) / 3)
