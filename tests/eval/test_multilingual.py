"""FLORES+ translation, X-CSQA, SuperNI and the XNLI group (tasks/multilingual)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sacrebleu

from hcx.eval.rouge import rouge_l
from hcx.eval.translation import xcomet_status
from tests.eval.run_lm_eval import HUB_FIXTURES, evaluate_hf, load_tasks

FLORES_DIRECTIONS = ("ko_en", "en_ko", "ko_ja", "ja_ko", "ko_zh", "zh_ko")


def test_flores_one_shot_prompt_and_perfect_score(data_dir: Path) -> None:
    tasks = load_tasks([f"hcx_flores_{d}" for d in FLORES_DIRECTIONS], data_dir)
    ko_en = tasks["hcx_flores_ko_en"]
    doc = ko_en.test_docs()[0]
    prompt = ko_en.fewshot_context(doc, num_fewshot=1)
    assert prompt.count("Korean: ") == 2 and prompt.count("English:") == 2  # one shot + the item
    assert prompt.endswith(f"Korean: {doc['source_text']}\nEnglish:") and doc["target_text"] not in prompt
    assert (
        doc["source_text"] == '그는 "현재 4개월 된 당뇨병에서 치료된 생쥐가 있다"고 덧붙였다.'
    )  # CSV quoting undone
    for direction, task in tasks.items():
        docs = list(task.test_docs())[:5]
        per_item = [task.process_results(d, [" " + d["target_text"] + " "]) for d in docs]
        assert "xcomet" not in per_item[0]  # unbabel-comet / xCOMET checkpoint not on this machine
        aggregate = task.aggregation()
        for metric in ("chrf", "bleu"):
            assert aggregate[metric]([r[metric] for r in per_item]) == pytest.approx(100.0), direction


def test_flores_scores_match_sacrebleu(data_dir: Path) -> None:
    task = load_tasks(["hcx_flores_ko_zh"], data_dir)["hcx_flores_ko_zh"]
    docs = list(task.test_docs())[:4]
    hypotheses = ["他补充道：我们现在有老鼠。", "研究还处于早期阶段。", "", "今天天气很好"]
    per_item = [task.process_results(d, [h]) for d, h in zip(docs, hypotheses, strict=True)]
    references = [[d["target_text"] for d in docs]]
    aggregate = task.aggregation()
    assert aggregate["bleu"]([r["bleu"] for r in per_item]) == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, references, tokenize="zh").score
    )
    assert aggregate["chrf"]([r["chrf"] for r in per_item]) == pytest.approx(
        sacrebleu.corpus_chrf(hypotheses, references).score
    )


def test_xcomet_reported_unavailable() -> None:
    assert xcomet_status() == "unavailable (unbabel-comet is not installed)"


def test_superni_rouge_l() -> None:
    task = load_tasks(["hcx_superni"], HUB_FIXTURES)["hcx_superni"]
    docs = list(task.test_docs())
    assert [d["task_name"].split("_")[0] for d in docs] == ["task1161", "task033", "task102", "task1195"]
    prompt = task.doc_to_text(docs[1])
    assert prompt.startswith("Definition: You need to answer") and prompt.endswith("is too large.\nOutput:")
    assert task.process_results(docs[1], [" trophy\n"]) == {"rougeL": 1.0}
    # stemmed: "a dog caught a frisbe at the park" vs "a dog catch a frisbe in the park": LCS 6 of 8 and 8
    got = task.process_results(docs[2], ["A dog caught a frisbee at the park."])["rougeL"]
    assert got == pytest.approx(
        rouge_l("A dog caught a frisbee at the park.", ["A dog catches a frisbee in the park."])
    )
    precision, recall = 6 / 8, 6 / 8
    assert got == pytest.approx(2 * precision * recall / (precision + recall))


def test_xnli_cloze_choices() -> None:
    task = load_tasks(["hcx_xnli_zh"], HUB_FIXTURES)["hcx_xnli_zh"]
    doc = task.test_docs()[0]
    assert task.doc_to_choice(doc) == [
        "这家餐厅每天早上七点开门，晚上十点关门。, 对吗？ 是的， 这家餐厅早上营业。",
        "这家餐厅每天早上七点开门，晚上十点关门。, 对吗？ 而且， 这家餐厅早上营业。",
        "这家餐厅每天早上七点开门，晚上十点关门。, 对吗？ 不， 这家餐厅早上营业。",
    ]
    with pytest.raises(ValueError, match="XNLI language 'ja'"):
        task.config.custom_dataset(language="ja", data_dir=HUB_FIXTURES)


def test_model_run_x_csqa_and_flores(base_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """X-CSQA and XNLI from hub-schema fixtures, FLORES from the shared items, scored by lm-eval's hf backend."""
    root = tmp_path / "eval"
    root.mkdir()
    (root / "x_csqa").symlink_to(HUB_FIXTURES / "x_csqa")
    (root / "xnli").symlink_to(HUB_FIXTURES / "xnli")
    (root / "flores200").symlink_to(data_dir / "eval" / "flores200")
    out = evaluate_hf(
        base_model_dir, ["hcx_x_csqa", "hcx_xnli_en", "hcx_xnli_zh", "hcx_flores_ko_en"], tmp_path, limit=3
    )
    for language in ("en", "ja", "zh"):
        samples = out["samples"][f"hcx_x_csqa_{language}"]
        assert [s["target"] for s in samples] == [0, 0, 1]  # answerKey A, A, B
        correct = [max(range(5), key=lambda i: s["filtered_resps"][i][0]) == s["target"] for s in samples]
        assert out["results"][f"hcx_x_csqa_{language}"]["acc,none"] == pytest.approx(sum(correct) / 3)
    for language in ("en", "zh"):
        samples = out["samples"][f"hcx_xnli_{language}"]
        assert [s["target"] for s in samples] == [0, 1, 2]
        correct = [max(range(3), key=lambda i: s["filtered_resps"][i][0]) == s["target"] for s in samples]
        assert out["results"][f"hcx_xnli_{language}"]["acc,none"] == pytest.approx(sum(correct) / 3)
    flores = out["results"]["hcx_flores_ko_en"]
    hypotheses = [s["filtered_resps"][0].strip() for s in out["samples"]["hcx_flores_ko_en"]]
    references = [[s["doc"]["target_text"] for s in out["samples"]["hcx_flores_ko_en"]]]
    assert flores["chrf,none"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, references).score)
    assert "xcomet,none" not in flores
