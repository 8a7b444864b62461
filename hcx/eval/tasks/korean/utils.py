"""Korean tasks with no public items (SPEC §6): KoIF instruction following and KoBigBench.

Neither benchmark has been released, so both are defined here by their format and read only
from ``<data_dir>/eval/<benchmark>/test.jsonl``; without that file the task fails with
:class:`hcx.eval.local_data.MissingBenchmarkError` naming the missing path (status:
missing-data). Anyone holding the data can drop it in and run the task unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets

from hcx.eval.local_data import load_benchmark
from hcx.eval.rouge import rouge_l


def load_koif(**metadata: Any) -> datasets.DatasetDict:
    """KoIF rows: ``{"instruction", "input" (may be empty), "output"}`` (Alpaca-style, Korean)."""
    return load_benchmark("koif", {"test": "test.jsonl"}, hub=None, **metadata)


def koif_prompt(doc: dict[str, Any]) -> str:
    context = f"\n\n### 입력:\n{doc['input'].strip()}" if doc.get("input") else ""
    return f"### 지시문:\n{doc['instruction'].strip()}{context}\n\n### 응답:\n"


def koif_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    return {"rougeL": rouge_l(results[0].strip(), [doc["output"]], language="ko")}


def load_kobigbench(**metadata: Any) -> datasets.DatasetDict:
    """KoBigBench rows in the Hugging Face ``bigbench`` schema.

    ``{"idx", "inputs", "targets", "multiple_choice_targets": [...], "multiple_choice_scores": [0|1, ...]}``
    (BIG-bench's own ``target_scores`` dict has per-item keys, which a columnar dataset cannot hold).
    """
    return load_benchmark("kobigbench", {"test": "test.jsonl"}, hub=None, **metadata)


def kobigbench_choices(doc: dict[str, Any]) -> list[str]:
    return list(doc["multiple_choice_targets"])


def kobigbench_gold(doc: dict[str, Any]) -> int:
    scores = list(doc["multiple_choice_scores"])
    return scores.index(max(scores))
