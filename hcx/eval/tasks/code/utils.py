"""Items, programs and scoring for the code rows of SPEC §6 (HumanEval, MBPP, K-HumanEval).

Completions are executed by :mod:`hcx.eval.sandbox` (never lm-eval's ``code_eval``, which runs
model code unconfined) and scored with the unbiased pass@k of :mod:`hcx.eval.passk`. The
``execute`` filter runs every sample of every problem concurrently, so ``process_results``
only counts outcomes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import datasets

from hcx.eval.local_data import load_benchmark
from hcx.eval.passk import pass_at_k
from hcx.eval.sandbox import SandboxConfig, run_programs

HUMANEVAL_HUB = ("openai/openai_humaneval", None)
MBPP_HUB = ("google-research-datasets/mbpp", "full")
# HCX's own K-HumanEval is not public; this public Korean HumanEval (P-MMEval's humaneval-ko
# config, HumanEval schema plus translation fields) stands in for it.
K_HUMANEVAL_HUB = ("DKYoon/P-MMEval", "humaneval-ko")
MBPP_PROMPT_IDS = (2, 3, 4)
PASS_AT = (1, 10, 100)


def load_humaneval(**metadata: Any) -> datasets.DatasetDict:
    return load_benchmark("humaneval", {"test": "test.jsonl"}, hub=HUMANEVAL_HUB, **metadata)


def load_k_humaneval(**metadata: Any) -> datasets.DatasetDict:
    return load_benchmark("k_humaneval", {"test": "test.jsonl"}, hub=K_HUMANEVAL_HUB, **metadata)


def load_mbpp(**metadata: Any) -> datasets.DatasetDict:
    """MBPP test problems plus the 3 prompt problems (task ids 2-4) of the original paper's prompt.

    The shared copy is one file with a ``split`` column; the hub has one split each.
    """
    loaded = load_benchmark("mbpp", {"all": "mbpp.jsonl"}, hub=MBPP_HUB, **metadata)
    if "all" in loaded:
        rows = loaded["all"]
        test = rows.filter(lambda r: r["split"] == "test")
        prompt = rows.filter(lambda r: r["split"] == "prompt")
    else:
        test, prompt = loaded["test"], loaded["prompt"]
    prompt = prompt.filter(lambda r: r["task_id"] in MBPP_PROMPT_IDS)
    return datasets.DatasetDict(
        {
            "test": test.map(lambda _: {"is_fewshot": False}),
            "prompt": prompt.map(lambda _: {"is_fewshot": True}),
        }
    )


def humaneval_program(doc: dict[str, Any], completion: str) -> str:
    """Prompt + completion, then the item's ``check`` called on its entry point."""
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def mbpp_program(doc: dict[str, Any], code: str) -> str:
    tests = "\n".join(doc["test_list"])
    return f"{doc.get('test_setup_code') or ''}\n{code}\n\n{tests}\n"


def mbpp_code(response: str) -> str:
    """The code before ``[DONE]`` (the stop string may be absent when generation ran out)."""
    return response.split("[DONE]")[0].strip()


def _sandbox_config() -> SandboxConfig:
    workers = os.environ.get("HCX_SANDBOX_WORKERS")
    return SandboxConfig(workers=int(workers)) if workers else SandboxConfig()


def _execute(programs_per_doc: list[list[str]]) -> list[list[str]]:
    flat = [p for programs in programs_per_doc for p in programs]
    results = iter(run_programs(flat, _sandbox_config()))
    return [[next(results).status for _ in programs] for programs in programs_per_doc]


def execute_humaneval(resps: Iterable[list[str]], docs: list[dict[str, Any]]) -> list[list[str]]:
    """lm-eval custom filter: every sampled completion becomes a sandbox status."""
    return _execute([[humaneval_program(d, r) for r in rs] for rs, d in zip(resps, docs, strict=True)])


def execute_mbpp(resps: Iterable[list[str]], docs: list[dict[str, Any]]) -> list[list[str]]:
    return _execute([[mbpp_program(d, mbpp_code(r)) for r in rs] for rs, d in zip(resps, docs, strict=True)])


def process_results(doc: dict[str, Any], results: list[list[str]]) -> dict[str, float]:
    """pass@k for every k in ``PASS_AT`` not larger than the number of samples (``repeats``)."""
    statuses = results[0]
    n, c = len(statuses), sum(s == "passed" for s in statuses)
    return {f"pass@{k}": pass_at_k(n, c, k) for k in PASS_AT if k <= n}
