"""Multilingual tasks (SPEC §6 "Multilingual"): FLORES+ translation, X-CSQA, XNLI, SuperNI.

Translation metrics live in :mod:`hcx.eval.translation` (chrF, BLEU, xCOMET when available);
without xCOMET the ``xcomet`` metric is simply absent from the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets

from hcx.eval.local_data import load_benchmark
from hcx.eval.rouge import rouge_l
from hcx.eval.translation import BLEU_TOKENIZERS, xcomet_status
from hcx.eval.translation import corpus_bleu as corpus_bleu  # the FLORES configs' aggregations
from hcx.eval.translation import corpus_chrf as corpus_chrf
from hcx.eval.translation import corpus_xcomet as corpus_xcomet

FLORES_NAMES = {"eng_Latn": "English", "kor_Hang": "Korean", "jpn_Jpan": "Japanese", "zho_Hans": "Chinese"}

# --- FLORES+ ----------------------------------------------------------------------------------


def load_flores(source: str, target: str, **metadata: Any) -> datasets.DatasetDict:
    """FLORES-200 devtest as ``source_text``/``target_text`` for one direction.

    ``source``/``target`` are FLORES column names (``kor_Hang``…) passed from the task's
    ``dataset_kwargs``. Local items only: FLORES+ on the hub (``openlanguagedata/flores_plus``)
    is gated behind a login.
    """
    for code in (source, target):
        if code not in FLORES_NAMES:
            raise ValueError(f"FLORES language {code!r}: choose one of {', '.join(FLORES_NAMES)}")
    loaded = load_benchmark("flores200", {"devtest": "devtest.jsonl"}, hub=None, **metadata)
    return loaded.map(
        lambda row: {
            "source_text": unquote_csv(row[source]),
            "target_text": unquote_csv(row[target]),
            "source_name": FLORES_NAMES[source],
            "target_name": FLORES_NAMES[target],
            "bleu_tokenize": BLEU_TOKENIZERS[target],
        }
    )


def unquote_csv(text: str) -> str:
    """Undo CSV quoting left in some FLORES-200 ``kor_Hang`` lines (38 of 712 here).

    Those lines arrive as ``"그는 ""현재 …""고 덧붙였다."``: wrapped in quotes with inner quotes
    doubled. Scoring against them would charge every model for the artifact.
    """
    if len(text) >= 2 and text[0] == text[-1] == '"' and '""' in text:
        return text[1:-1].replace('""', '"')
    return text


def translation_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, Any]:
    hypothesis = results[0].strip()
    item = (doc["target_text"], hypothesis, doc["bleu_tokenize"])
    out: dict[str, Any] = {"chrf": item, "bleu": item}
    if xcomet_status() == "available":
        out["xcomet"] = (doc["source_text"], hypothesis, doc["target_text"])
    return out


# --- X-CSQA -----------------------------------------------------------------------------------


def load_x_csqa(language: str, **metadata: Any) -> datasets.DatasetDict:
    """X-CSQA (Lin et al., ACL 2021) validation items, the only labelled split (``INK-USC/xcsr``)."""
    return load_benchmark(
        "x_csqa",
        {"validation": f"{language}/validation.jsonl"},
        hub=("INK-USC/xcsr", f"X-CSQA-{language}"),
        hub_splits={"validation": "validation"},
        **metadata,
    )


def x_csqa_choices(doc: dict[str, Any]) -> list[str]:
    return list(doc["question"]["choices"]["text"])


def x_csqa_gold(doc: dict[str, Any]) -> int:
    return list(doc["question"]["choices"]["label"]).index(doc["answerKey"])


# --- XNLI beyond Korean -------------------------------------------------------------------------

XNLI_CONNECTIVES = {
    "en": ("right?", "Yes,", "Also,", "No,"),
    "zh": ("对吗？", "是的，", "而且，", "不，"),
    "de": ("richtig?", "Ja,", "Auch,", "Nein,"),
    "fr": ("n'est-ce pas ?", "Oui,", "Aussi,", "Non,"),
    "es": ("¿verdad?", "Sí,", "Además,", "No,"),
    "ru": ("верно?", "Да,", "Также,", "Нет,"),
}
"""XGLM's cloze form of NLI (Lin et al., 2022): ``premise, right? {Yes|Also|No}, hypothesis`` —
the same form as ``hcx_xnli_ko`` (tasks/standard), so the languages compare."""


def load_xnli(language: str, **metadata: Any) -> datasets.DatasetDict:
    """XNLI test items (``facebook/xnli`` schema: premise, hypothesis, label 0/1/2 = entail/neutral/contradict)."""
    if language not in XNLI_CONNECTIVES:
        raise ValueError(f"XNLI language {language!r}: choose one of {', '.join(XNLI_CONNECTIVES)}")
    loaded = load_benchmark(
        "xnli",
        {"test": f"{language}/test.jsonl"},
        hub=("facebook/xnli", language),
        hub_splits={"test": "test"},
        **metadata,
    )
    return loaded.map(lambda _: {"language": language})


def xnli_choices(doc: dict[str, Any]) -> list[str]:
    question, *answers = XNLI_CONNECTIVES[doc["language"]]
    return [f"{doc['premise']}, {question} {answer} {doc['hypothesis']}" for answer in answers]


# --- SuperNI ------------------------------------------------------------------------------------


def load_superni(**metadata: Any) -> datasets.DatasetDict:
    """Super-NaturalInstructions test tasks (Wang et al., EMNLP 2022), ``Muennighoff/natural-instructions``."""
    return load_benchmark(
        "superni",
        {"test": "test.jsonl"},
        hub=("Muennighoff/natural-instructions", None),
        hub_splits={"test": "test"},
        **metadata,
    )


def superni_prompt(doc: dict[str, Any]) -> str:
    """SuperNI's "definition + input" prompt (its paper's default evaluation setting)."""
    return f"Definition: {doc['definition'].strip()}\n\nNow complete the following example -\nInput: {doc['inputs'].strip()}\nOutput:"


def superni_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    targets = doc["targets"] if isinstance(doc["targets"], list) else [doc["targets"]]
    return {"rougeL": rouge_l(results[0].strip(), targets, language="en")}
