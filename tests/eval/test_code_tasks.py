"""The code tasks through lm-eval's own request/filter/metric pipeline, scored by hcx's sandbox."""

from __future__ import annotations

import math
from pathlib import Path

import lm_eval
import pytest

from hcx.eval.runner import task_manager
from hcx.eval.tasks.code.utils import mbpp_code

FIXTURES = Path(__file__).parent / "fixtures"


def load_task(name: str, data_dir: Path):
    return task_manager(data_dir).load([name])["tasks"][name]


def score(task, completions: list[str]) -> list[dict[str, float]]:
    """Give each built request a completion, run the task's filters and its process_results."""
    task.build_all_requests(limit=len(completions), rank=0, world_size=1)
    for instance, completion in zip(task.instances, completions, strict=True):
        instance.resps = [completion]
    task.apply_filters()
    return [task.process_results(i.doc, [i.filtered_resps["sandbox"]]) for i in task.instances]


@pytest.mark.parametrize(
    ("name", "source"),
    [("hcx_humaneval", None), ("hcx_k_humaneval", None)],
)
def test_humaneval_scores_canonical_solutions_1_and_wrong_ones_0(
    name: str, source: Path | None, data_dir: Path
):
    task = load_task(name, source or data_dir)
    docs = list(task.test_docs())[:6]
    assert score(task, [d["canonical_solution"] for d in docs]) == [{"pass@1": 1.0}] * len(docs)
    assert score(task, ["    return None\n"] * len(docs)) == [{"pass@1": 0.0}] * len(docs)


def test_k_humaneval_reads_the_shared_korean_problems(data_dir: Path):
    """KR-HumanEval from the shared data, offline: HumanEval's problems with Korean docstrings."""
    task = load_task("hcx_k_humaneval", data_dir)
    docs = list(task.test_docs())
    english = {d["task_id"].split("/")[1]: d for d in load_task("hcx_humaneval", data_dir).test_docs()}
    assert len(docs) == 114 and {d["task_id"].split("/")[1] for d in docs} == set(english)
    for doc in docs:
        original = english[doc["task_id"].split("/")[1]]
        assert doc["entry_point"] == original["entry_point"] and doc["test"] == original["test"]
    assert sum(any("가" <= c <= "힣" for c in d["prompt"]) for d in docs) >= 110
    first = docs[:12]  # ``score`` builds the first requests (the parametrized test above scores 6)
    assert score(task, [d["canonical_solution"] for d in first]) == [{"pass@1": 1.0}] * len(first)


def test_mbpp_three_shot_prompt_and_scoring(data_dir: Path):
    task = load_task("hcx_mbpp", data_dir)
    docs = list(task.test_docs())[:6]
    assert len(list(task.test_docs())) == 350
    completions = [f"{d['code']}\n[DONE]" for d in docs]
    assert score(task, completions) == [{"pass@1": 1.0}] * 6
    prompt = task.instances[0].args[0]
    assert prompt.count("[BEGIN]") == 4 and prompt.count("[DONE]") == 3
    assert prompt.endswith(f"{docs[0]['test_list'][-1]}\n[BEGIN]\n")
    assert mbpp_code("def f():\n    return 1\n[DONE]\ntrailing") == "def f():\n    return 1"


def test_sampled_variant_reports_unbiased_pass_at_10(data_dir: Path):
    task = load_task("hcx_humaneval_pass10", data_dir)
    task.build_all_requests(limit=1, rank=0, world_size=1)
    assert len(task.instances) == 1 and task.instances[0].repeats == 20
    doc = task.instances[0].doc
    task.instances[0].resps = [doc["canonical_solution"]] * 3 + ["    return None\n"] * 17
    task.apply_filters()
    result = task.process_results(doc, [task.instances[0].filtered_resps["sandbox"]])
    assert result["pass@1"] == pytest.approx(3 / 20)
    assert result["pass@10"] == pytest.approx(1 - math.comb(17, 10) / math.comb(20, 10))


def test_end_to_end_with_a_real_model_through_lm_eval(base_model_dir: Path, data_dir: Path):
    manager = task_manager(data_dir)
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={base_model_dir},dtype=float32",
        tasks=["hcx_humaneval", "hcx_mbpp"],
        task_manager=manager,
        limit=2,
        gen_kwargs="max_gen_toks=24",
        device="cpu",
    )
    for name in ("hcx_humaneval", "hcx_mbpp"):
        value = out["results"][name]["pass@1,sandbox"]
        assert 0.0 <= value <= 1.0
        assert len(out["samples"][name]) == 2
