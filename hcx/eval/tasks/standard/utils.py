"""Item loaders and prompt helpers for the standard benchmarks (SPEC §6) on local or hub data.

Each ``load_*`` is a task's ``custom_dataset``: lm-eval calls it with the TaskManager
metadata (``data_dir``) and the task's ``dataset_kwargs``. Local files that are reformatted
copies (MMLU indices, MosaicML's ARC/WinoGrande/TriviaQA schema, TruthfulQA.csv, the raw
KoBEST TSV columns) are mapped here to the schema the prompts below read, which is the
hub schema lm-eval's own task of the same name reads wherever one exists.
"""

from __future__ import annotations

import re
from typing import Any

import datasets
from lm_eval.tasks.truthfulqa.utils import process_results_mc2 as truthfulqa_mc2

from hcx.eval.local_data import load_benchmark

__all__ = ["truthfulqa_mc2"]  # lm-eval's MC2 scoring (mass on the true answers), reused as is

AGIEVAL_EN = (
    "aqua-rat",
    "logiqa-en",
    "lsat-ar",
    "lsat-lr",
    "lsat-rc",
    "sat-en",
    "sat-en-without-passage",
    "sat-math",
)
XNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


def load_kmmlu(subject: str = "Criminal-Law", **metadata: Any) -> datasets.DatasetDict:
    files = {split: f"{subject}-{split}.jsonl" for split in ("train", "dev", "test")}
    return load_benchmark("kmmlu", files, hub=("HAERAE-HUB/KMMLU", subject), **metadata)


def load_click(**metadata: Any) -> datasets.DatasetDict:
    return load_benchmark(
        "click",
        {"test": "test.jsonl"},
        hub=("EunsuKim/CLIcK", None),
        hub_splits={"test": "train"},
        **metadata,
    )


def click_prompt(doc: dict[str, Any]) -> str:
    """CLIcK's published prompt (paragraph only when the item has one), as lm-eval's click tasks."""
    a, b, c, d = doc["choices"][:4]
    if doc["paragraph"]:
        head = "주어진 맥락을 천천히 읽고, 질문에 대한 적절한 정답을 A, B, C, D 중에 골라 알파벳 하나로 답하시오."
        body = f"맥락: {doc['paragraph']}\n질문: {doc['question']}"
    else:
        head = "주어진 질문을 천천히 읽고, 적절한 정답을 A, B, C, D 중에 골라 알파벳 하나로 답하시오."
        body = f"질문: {doc['question']}"
    return f"{head}\n\n{body}\n보기:\nA:{a}, B: {b}, C: {c}, D: {d}\n정답:"


def click_letters(doc: dict[str, Any]) -> list[str]:
    return list("ABCDE"[: len(doc["choices"])])


def click_answer(doc: dict[str, Any]) -> int:
    return doc["choices"].index(doc["answer"])


def load_mmlu(subject: str, **metadata: Any) -> datasets.DatasetDict:
    loaded = load_benchmark(
        "mmlu", {"dev": "dev.jsonl", "test": "test.jsonl"}, hub=("cais/mmlu", subject), **metadata
    )
    return (
        loaded.filter(lambda row: row["subject"] == subject)
        if "subject" in loaded["test"].features
        else loaded
    )


def load_bbh(**metadata: Any) -> datasets.DatasetDict:
    """BBH items with their task's published 3-shot chain-of-thought prompt attached."""
    prompts = load_benchmark("bbh", {"prompts": "cot_prompts.jsonl"}, **metadata)["prompts"]
    by_task = {row["task"]: _strip_canary(row["prompt"]) for row in prompts}
    items = load_benchmark("bbh", {"test": "test.jsonl"}, **metadata)
    return items.map(lambda row: {"cot_prompt": by_task[row["task"]]})


def _strip_canary(prompt: str) -> str:
    """The prompt files start with a canary line and a ``-----`` rule; the model sees what follows."""
    head, sep, rest = prompt.partition("-----\n")
    return rest if sep and "canary" in head else prompt


def load_agieval_en(**metadata: Any) -> datasets.DatasetDict:
    loaded = load_benchmark("agieval", {"test": "test.jsonl"}, transform=_agieval_fields, **metadata)
    return loaded.filter(lambda row: row["task"] in AGIEVAL_EN and row["label"]).map(_agieval_query)


def _agieval_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The multiple-choice fields; ``label`` is a letter, or a list of them in a few Chinese tasks."""
    label = row.get("label")
    return {
        "task": row["task"],
        "passage": row.get("passage"),
        "question": row["question"],
        "options": row.get("options") or [],
        "label": label if isinstance(label, str) else "",
    }


def _agieval_query(row: dict[str, Any]) -> dict[str, Any]:
    """AGIEval's zero-shot English prompt, as in the hub copies lm-eval's agieval_en reads."""
    passage = f"{row['passage']} " if row["passage"] else ""
    options = " ".join(row["options"])
    query = f"Q: {passage}{row['question']} Answer Choices: {options}\nA: Among A through {'ABCDE'[len(row['options']) - 1]}, the answer is"
    letters = "ABCDE"[: len(row["options"])]
    return {"query": query, "choices": [f"({x})" for x in letters], "gold": letters.index(row["label"][0])}


def load_arc(subset: str, **metadata: Any) -> datasets.DatasetDict:
    """ARC from MosaicML's ``{query, choices, gold}`` copy, mapped to ``{question, choices.text, gold}``."""
    name = {"easy": "ARC-Easy", "challenge": "ARC-Challenge"}[subset]
    root_files = {"test": f"arc_{subset}_test.jsonl"}
    loaded = load_benchmark("arc", root_files, hub=("allenai/ai2_arc", name), **metadata)
    if "query" not in loaded["test"].features:
        return loaded.map(
            lambda row: {
                "gold": row["choices"]["label"].index(row["answerKey"]),
                "options": row["choices"]["text"],
            }
        )
    return loaded.map(
        lambda row: {"question": row["query"].removeprefix("Question: "), "options": row["choices"]}
    )


def load_commonsense_qa(**metadata: Any) -> datasets.DatasetDict:
    return load_benchmark(
        "commonsenseqa", {"validation": "dev.jsonl"}, hub=("tau/commonsense_qa", None), **metadata
    )


def load_winogrande(**metadata: Any) -> datasets.DatasetDict:
    """WinoGrande from MosaicML's ``{context_options, continuation, gold}`` copy: the same partial scoring."""
    loaded = load_benchmark(
        "winogrande", {"validation": "dev.jsonl"}, hub=("allenai/winogrande", "winogrande_xl"), **metadata
    )
    if "sentence" in loaded["validation"].features:
        return loaded.map(_winogrande_from_hub)
    return loaded


def _winogrande_from_hub(row: dict[str, Any]) -> dict[str, Any]:
    cut = row["sentence"].index("_")
    options = [row["option1"], row["option2"]]
    return {
        "context_options": [row["sentence"][:cut] + option for option in options],
        "continuation": row["sentence"][cut + 1 :].strip(),
        "gold": int(row["answer"]) - 1,
    }


def load_piqa(**metadata: Any) -> datasets.DatasetDict:
    return load_benchmark("piqa", {"validation": "valid.jsonl"}, hub=("baber/piqa", None), **metadata)


def load_nq_open(**metadata: Any) -> datasets.DatasetDict:
    return load_benchmark(
        "nq_open", {"validation": "dev.jsonl"}, hub=("google-research-datasets/nq_open", None), **metadata
    )


def load_triviaqa(**metadata: Any) -> datasets.DatasetDict:
    """TriviaQA (no context) from MosaicML's ``{context, answer, aliases}`` copy: question and aliases."""
    loaded = load_benchmark(
        "triviaqa", {"validation": "subset.jsonl"}, hub=("mandarjoshi/trivia_qa", "rc.nocontext"), **metadata
    )
    if "context" in loaded["validation"].features:
        return loaded.map(
            lambda row: {
                "question": re.sub(r"^Question: |\?*\nAnswer:$", "", row["context"]),
                "targets": sorted({row["answer"], *row["aliases"]}),
            }
        )
    return loaded.map(lambda row: {"targets": row["answer"]["aliases"]})


def load_truthfulqa(**metadata: Any) -> datasets.DatasetDict:
    """TruthfulQA MC2 from TruthfulQA.csv: true answers (best first) then false ones, labels 1/0."""
    loaded = load_benchmark(
        "truthfulqa",
        {"validation": "TruthfulQA.jsonl"},
        hub=("truthfulqa/truthful_qa", "multiple_choice"),
        **metadata,
    )
    if "Question" not in loaded["validation"].features:
        return loaded
    return loaded.map(_truthfulqa_targets, remove_columns=loaded["validation"].column_names)


def _truthfulqa_targets(row: dict[str, Any]) -> dict[str, Any]:
    def split(field: str) -> list[str]:
        return [a.strip() for a in row[field].split(";") if a.strip()]

    true = list(dict.fromkeys([row["Best Answer"].strip(), *split("Correct Answers")]))
    false = [a for a in dict.fromkeys(split("Incorrect Answers")) if a not in true]
    return {
        "question": row["Question"],
        "mc2_targets": {"choices": true + false, "labels": [1] * len(true) + [0] * len(false)},
    }


def load_xnli_ko(**metadata: Any) -> datasets.DatasetDict:
    """Korean XNLI from KorNLI's ``{sentence1, sentence2, gold_label}``, as the hub's premise/hypothesis/label."""
    loaded = load_benchmark(
        "xnli_ko", {"validation": "dev.jsonl", "test": "test.jsonl"}, hub=("kor_nli", "xnli"), **metadata
    )
    if "sentence1" not in loaded["test"].features:
        return loaded
    return loaded.map(
        lambda row: {
            "premise": row["sentence1"],
            "hypothesis": row["sentence2"],
            "label": XNLI_LABELS[row["gold_label"]],
        }
    )


def load_kobest(subset: str, **metadata: Any) -> datasets.DatasetDict:
    """KoBEST; local rows (the original TSV columns) are mapped to the ``skt/kobest_v1`` fields."""
    files = {"train": "train.jsonl.gz", "validation": "dev.jsonl", "test": "test.jsonl"}
    loaded = load_benchmark(
        f"kobest/{subset}", files, hub=("skt/kobest_v1", subset), transform=_KOBEST[subset], **metadata
    )
    if subset == "hellaswag":
        return loaded.map(
            lambda row: {
                "query": f"문장: {row['context']}",
                "choices": [row[f"ending_{i}"] for i in range(1, 5)],
            }
        )
    return loaded


def _kobest_boolq(row: dict[str, Any]) -> dict[str, Any]:
    return {"paragraph": row["Text"], "question": row["Question"], "label": int(row["Answer"] == "True")}


def _kobest_copa(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "premise": row["sentence"],
        "question": row["question"],
        "alternative_1": row["1"],
        "alternative_2": row["2"],
        "label": int(row["Answer"]) - 1,
    }


def _kobest_hellaswag(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "context": row["context"],
        **{f"ending_{i}": row[f"choice{i}"] for i in range(1, 5)},
        "label": int(row["label"]),
    }


def _kobest_sentineg(row: dict[str, Any]) -> dict[str, Any]:
    return {"sentence": row["Text"], "label": int(row["Label"])}


def _kobest_wic(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "word": row["Target"],
        "context_1": row["SENTENCE1"],
        "context_2": row["SENTENCE2"],
        "label": int(row["ANSWER"] == "True"),
    }


_KOBEST = {
    "boolq": _kobest_boolq,
    "copa": _kobest_copa,
    "hellaswag": _kobest_hellaswag,
    "sentineg": _kobest_sentineg,
    "wic": _kobest_wic,
}


def load_gsm8k(**metadata: Any) -> datasets.DatasetDict:
    return load_benchmark(
        "gsm8k", {"train": "train.jsonl.gz", "test": "test.jsonl"}, hub=("openai/gsm8k", "main"), **metadata
    )


def load_hellaswag(**metadata: Any) -> datasets.DatasetDict:
    """English HellaSwag: no local items, so hub only unless a data dir carries ``hellaswag/``."""
    files = {"train": "train.jsonl", "validation": "validation.jsonl"}
    return load_benchmark("hellaswag", files, hub=("Rowan/hellaswag", None), **metadata).map(_hellaswag_doc)


def _hellaswag_doc(row: dict[str, Any]) -> dict[str, Any]:
    def clean(text: str) -> str:
        text = re.sub(r"\[.*?\]", "", text.strip().replace(" [title]", ". "))
        return text.replace("  ", " ")

    context = f"{row['ctx_a']} {row['ctx_b'].capitalize()}"
    return {
        "query": clean(f"{row['activity_label']}: {context}"),
        "options": [clean(ending) for ending in row["endings"]],
        "gold": int(row["label"]) if str(row["label"]).strip() else 0,
    }


def load_haerae(subset: str, **metadata: Any) -> datasets.DatasetDict:
    """HAE-RAE Bench: no local items; hub only unless a data dir carries ``haerae/<subset>.jsonl``."""
    return load_benchmark(
        "haerae", {"test": f"{subset}.jsonl"}, hub=("HAERAE-HUB/HAE_RAE_BENCH", subset), **metadata
    )


def macro_f1(items: list[tuple[int, int]]) -> float:
    """Macro-averaged F1 over (gold, prediction) pairs: KoBEST's second metric."""
    from sklearn.metrics import f1_score

    golds, preds = zip(*items, strict=True)
    return float(f1_score(golds, preds, average="macro"))


def gsm8k_cot_target(doc: dict[str, Any]) -> str:
    """A training solution as a chain-of-thought shot: calculator marks removed, answer sentence last."""
    reasoning, _, final = doc["answer"].partition("####")
    reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip().replace("\n", " ")
    return f"{reasoning} The answer is {final.strip()}."
