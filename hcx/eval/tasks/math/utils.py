"""MATH (Hendrycks et al.) 4-shot chain of thought with majority voting, SPEC §6 math row.

Prompt, few-shot exemplars, answer normalisation and equivalence are lm-eval's Minerva ones
(Lewkowycz et al. 2022), reused rather than rewritten; hcx adds the offline loader and the
per-sample answer extraction that lets lm-eval's ``majority_vote`` filter vote on answers
(maj@k) instead of on whole solutions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import datasets
from lm_eval.tasks.minerva_math import utils as minerva

from hcx.eval.local_data import eval_root, load_benchmark

MATH_HUB = "EleutherAI/hendrycks_math"
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
INVALID = "[invalidanswer]"

doc_to_text = minerva.doc_to_text
list_fewshot_samples = minerva.list_fewshot_samples


def load_math(data_dir: str | None = None, **metadata: Any) -> datasets.DatasetDict:
    """The shared MATH test items offline; online, the seven subject configs of the hub copy."""
    if eval_root(data_dir) is not None:
        return load_benchmark("math", {"test": "test.jsonl"}, data_dir=data_dir, **metadata)
    parts = [datasets.load_dataset(MATH_HUB, subject, split="test") for subject in MATH_SUBJECTS]
    return datasets.DatasetDict({"test": datasets.concatenate_datasets(parts)})


def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Keep problem and solution; add the normalised boxed answer as the gold."""
    return minerva.process_docs(dataset)


def extract_answer(response: str) -> str:
    """The normalised final answer: Minerva's "Final Answer: ..." line, else the last ``\\boxed{}``."""
    answer = minerva.get_unnormalized_answer(response)
    if answer == INVALID:
        boxed = minerva.last_boxed_only_string(response)
        if boxed is None:
            return INVALID
        try:
            answer = minerva.remove_boxed(boxed)
        except AssertionError:
            return INVALID
    return minerva.normalize_final_answer(answer)


def extract_answers(resps: Iterable[list[str]], docs: list[dict[str, Any]]) -> list[list[str]]:
    """lm-eval custom filter: every sampled solution becomes its normalised answer."""
    return [[extract_answer(r) for r in samples] for samples in resps]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, int]:
    answer = results[0]
    return {"exact_match": int(answer != INVALID and minerva.is_equiv(answer, doc["answer"]))}
