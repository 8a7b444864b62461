"""Task configs on the shared items: schemas mapped, few-shot prompts built with the right shots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hcx.eval.runner import task_manager


def _load(data_dir: Path, *names: str) -> dict:
    return task_manager(data_dir).load(list(names))["tasks"]


def _requests(task, num_fewshot: int, limit: int = 3):
    """lm-eval's own requests for the first ``limit`` items with ``num_fewshot`` shots."""
    task.set_config(key="num_fewshot", value=num_fewshot)
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return task.instances


def test_kmmlu_five_shots_from_dev(data_dir):
    task = _load(data_dir, "hcx_kmmlu_criminal_law")["hcx_kmmlu_criminal_law"]
    dev = [json.loads(line) for line in (data_dir / "eval/kmmlu/Criminal-Law-dev.jsonl").open()]
    for instance in _requests(task, 5):
        context, continuation = instance.args
        assert context.count("정답：") == 6
        assert sum(row["question"].strip() in context for row in dev) == 5
        assert continuation in (" A", " B", " C", " D")
    gold = task.doc_to_target(task.test_docs()[0])
    assert (
        gold == json.loads((data_dir / "eval/kmmlu/Criminal-Law-test.jsonl").open().readline())["answer"] - 1
    )


def test_mmlu_subject_shots_and_index_answers(data_dir):
    name = "hcx_mmlu_high_school_geography"
    task = _load(data_dir, name)[name]
    dev = [json.loads(line) for line in (data_dir / "eval/mmlu/dev.jsonl").open()]
    own = [row for row in dev if row["subject"] == "high_school_geography"]
    context = _requests(task, 5, limit=1)[0].args[0]
    assert context.startswith(
        "The following are multiple choice questions (with answers) about high school geography."
    )
    assert context.count("\nAnswer:") == 6
    assert all(row["question"].strip() in context for row in own)
    assert f"Answer: {'ABCD'[own[0]['answer']]}" in context
    assert all(0 <= task.doc_to_target(doc) <= 3 for doc in task.test_docs())


@pytest.mark.parametrize(
    ("name", "shots", "marker"), [("hcx_gsm8k_cot", 8, "\nA:"), ("hcx_commonsense_qa", 5, "\nAnswer:")]
)
def test_shot_counts(data_dir, name, shots, marker):
    task = _load(data_dir, name)[name]
    for instance in _requests(task, shots, limit=2):
        assert instance.args[0].count(marker) == shots + 1


def test_gsm8k_shots_end_with_the_answer_sentence(data_dir):
    task = _load(data_dir, "hcx_gsm8k_cot")["hcx_gsm8k_cot"]
    context = _requests(task, 8, limit=1)[0].args[0]
    assert context.count("The answer is") == 8
    assert "<<" not in context and "####" not in context


def test_bbh_carries_its_tasks_cot_prompt(data_dir):
    task = _load(data_dir, "hcx_bbh_cot")["hcx_bbh_cot"]
    instance = _requests(task, 0, limit=1)[0]
    context, gen_kwargs = instance.args
    assert context.count("Let's think step by step.") == 4
    assert "canary" not in context
    assert instance.doc["input"] in context and gen_kwargs["until"]


def test_reformatted_local_schemas(data_dir):
    tasks = _load(
        data_dir, "hcx_arc_easy", "hcx_winogrande", "hcx_triviaqa", "hcx_truthfulqa_mc2", "hcx_xnli_ko"
    )
    arc = tasks["hcx_arc_easy"].test_docs()[0]
    assert not arc["question"].startswith("Question:") and len(arc["options"]) == 4
    wino = tasks["hcx_winogrande"]
    doc = wino.test_docs()[0]
    assert (
        wino.doc_to_choice(doc) == doc["context_options"] and wino.doc_to_target(doc) == doc["continuation"]
    )
    trivia = tasks["hcx_triviaqa"].test_docs()[0]
    assert "Answer:" not in trivia["question"] and "Eleanor Rigby" in trivia["targets"]
    truthful = tasks["hcx_truthfulqa_mc2"].test_docs()[0]["mc2_targets"]
    assert truthful["labels"][0] == 1 and 0 in truthful["labels"]
    assert truthful["choices"][0] == "The watermelon seeds pass through your digestive system"
    assert {doc["label"] for doc in tasks["hcx_xnli_ko"].test_docs()} == {0, 1, 2}


def test_kobest_tsv_columns_mapped(data_dir):
    tasks = _load(data_dir, "hcx_kobest")
    assert set(tasks) == {f"hcx_kobest_{s}" for s in ("boolq", "copa", "hellaswag", "sentineg", "wic")}
    copa = tasks["hcx_kobest_copa"]
    doc = copa.test_docs()[0]
    assert copa.doc_to_text(doc).endswith(" 그래서") and copa.doc_to_target(doc) == 1
    hellaswag = tasks["hcx_kobest_hellaswag"].test_docs()[0]
    assert hellaswag["query"].startswith("문장: ") and len(hellaswag["choices"]) == 4


def test_hub_only_tasks_on_hub_schema_fixtures(hub_fixture_dir):
    """HellaSwag and HAE-RAE have no local items: their configs run on hand-written hub-schema items."""
    tasks = _load(hub_fixture_dir, "hcx_hellaswag", "hcx_haerae_general_knowledge")
    hellaswag = tasks["hcx_hellaswag"]
    instances = _requests(hellaswag, 2, limit=3)
    assert len(instances) == 3 * 4
    doc = instances[0].doc
    assert doc["query"] == "Tying shoes: A child sits on the steps and pulls on a pair of sneakers. The child"
    assert instances[0].args[0].count("\n\n") == 2 and doc["gold"] == 2
    assert "[title]" not in hellaswag.test_docs()[2]["query"]
    haerae = tasks["hcx_haerae_general_knowledge"]
    assert [haerae.doc_to_choice(d).index(haerae.doc_to_target(d)) for d in haerae.test_docs()] == [1, 2, 0]
