"""GSM8K and MATH chain of thought with majority voting (maj@k), through lm-eval's filters."""

from __future__ import annotations

from pathlib import Path

import lm_eval
import pytest

from hcx.eval.runner import task_manager
from hcx.eval.tasks.math.utils import INVALID, extract_answer


@pytest.fixture(scope="module")
def tasks(data_dir: Path) -> dict:
    return task_manager(data_dir).load(["hcx_gsm8k_cot_maj", "hcx_minerva_math", "hcx_minerva_math_maj"])[
        "tasks"
    ]


def vote(task, samples_per_doc: list[list[str]]) -> dict[str, list[int]]:
    """Feed sampled responses to the task's requests, run its filters, score every filter."""
    task.build_all_requests(limit=len(samples_per_doc), rank=0, world_size=1)
    for instance, samples in zip(task.instances, samples_per_doc, strict=True):
        assert instance.repeats == len(samples)
        instance.resps = samples
    task.apply_filters()
    return {
        name: [task.process_results(i.doc, [i.filtered_resps[name]])["exact_match"] for i in task.instances]
        for name in task.instances[0].filtered_resps
    }


def test_gsm8k_majority_vote_over_eight_samples(tasks: dict):
    task = tasks["hcx_gsm8k_cot_maj"]
    docs = list(task.test_docs())[:2]
    gold = [d["answer"].split("####")[-1].strip() for d in docs]
    first = [f"So the total is 7. The answer is {int(gold[0]) + 1}."] + [
        f"Adding up. The answer is {gold[0]}."
    ] * 5
    first += ["The answer is 0."] * 2
    second = [f"The answer is {gold[1]}."] * 3 + [f"The answer is {int(gold[1]) + 2}."] * 5
    scores = vote(task, [first, second])
    assert scores["maj@8"] == [1, 0]
    assert scores["first"] == [0, 1]


def test_gsm8k_prompt_has_eight_shots(tasks: dict):
    task = tasks["hcx_gsm8k_cot_maj"]
    task.build_all_requests(limit=1, rank=0, world_size=1)
    prompt = task.instances[0].args[0]
    assert prompt.count("Q: ") == 9 and prompt.count("The answer is") == 8
    assert task.config.generation_kwargs["do_sample"] is True


def test_math_majority_vote_uses_minerva_equivalence(tasks: dict):
    task = tasks["hcx_minerva_math_maj"]
    docs = list(task.test_docs())[:2]
    right = [d["solution"] for d in docs]
    samples = [
        [
            "Final Answer: The final answer is $\\frac{99}{7}$. I hope it is correct.",
            right[0],
            right[0],
            "no idea",
        ],
        [
            right[1],
            "$\\boxed{12345}$",
            "Final Answer: The final answer is $12345$. I hope it is correct.",
            "x",
        ],
    ]
    scores = vote(task, samples)
    assert scores["maj@4"] == [1, 0]
    assert scores["first"] == [0, 1]


def test_math_prompt_has_four_minerva_shots(tasks: dict):
    task = tasks["hcx_minerva_math"]
    task.build_all_requests(limit=1, rank=0, world_size=1)
    prompt = task.instances[0].args[0]
    assert prompt.count("Problem:\n") == 5 and prompt.count("Final Answer:") == 4
    assert prompt.endswith("Solution:")


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("... Final Answer: The final answer is $\\frac12$. I hope it is correct.", "\\frac{1}{2}"),
        ("so $x = \\boxed{5}$ cm.", "5"),
        ("Final Answer: The final answer is $1,000$. I hope it is correct.", "1000"),
        ("I cannot solve this.", INVALID),
    ],
)
def test_extract_answer(response: str, answer: str):
    assert extract_answer(response) == answer


def test_gsm8k_maj_end_to_end_with_a_real_model(base_model_dir: Path, data_dir: Path):
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={base_model_dir},dtype=float32",
        tasks=["hcx_gsm8k_cot_maj"],
        task_manager=task_manager(data_dir),
        limit=1,
        gen_kwargs="max_gen_toks=8",
        device="cpu",
    )
    result = out["results"]["hcx_gsm8k_cot_maj"]
    assert {"exact_match,maj@8", "exact_match,first", "exact_match,maj@8-flexible"} <= set(result)
    assert len(out["samples"]["hcx_gsm8k_cot_maj"][0]["resps"][0]) == 8
