"""ROUGE-L for instruction following in English and Korean (SPEC §6: SuperNI, KoIF).

``rouge-score``'s default tokenizer keeps only ``[a-z0-9]``, so a Korean answer scores 0
whatever it says. English keeps that tokenizer with Porter stemming (SuperNI's official
setting); Korean is split into Kiwi morphemes, the Korean analogue of stemming: ``먹었다`` and
``먹는다`` share the morpheme ``먹``. Other scripts fall back to characters, as ROUGE on
Chinese and Japanese usually does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from rouge_score import rouge_scorer
from rouge_score.tokenizers import Tokenizer

_HANGUL = re.compile(r"[\uac00-\ud7a3]")


@functools.cache
def _kiwi():
    """One analyser per process: loading Kiwi's model takes seconds."""
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=1)


class KiwiTokenizer(Tokenizer):
    """Morpheme forms from Kiwi; punctuation and symbols dropped, Latin words, numbers and Hanja kept."""

    def tokenize(self, text: str) -> list[str]:
        return [
            t.form for t in _kiwi().tokenize(text) if not t.tag.startswith("S") or t.tag in ("SL", "SN", "SH")
        ]


class CharTokenizer(Tokenizer):
    def tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


@functools.cache
def _scorer(language: str) -> rouge_scorer.RougeScorer:
    if language == "en":
        return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    tokenizer = KiwiTokenizer() if language == "ko" else CharTokenizer()
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=tokenizer)


def guess_language(text: str) -> str:
    """``ko`` when the text has Hangul, else ``en`` (enough to pick a ROUGE tokenizer)."""
    return "ko" if _HANGUL.search(text) else "en"


def rouge_l(prediction: str, references: Sequence[str], language: str | None = None) -> float:
    """Best ROUGE-L F1 of ``prediction`` against any reference, in [0, 1]."""
    if not references:
        raise ValueError("rouge_l needs at least one reference")
    scorer = _scorer(language or guess_language(references[0]))
    return max(scorer.score(reference, prediction)["rougeL"].fmeasure for reference in references)
