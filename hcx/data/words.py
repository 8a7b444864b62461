"""Word segmentation for the quality filters' word statistics (SPEC §1).

datatrove's filters accept a ``WordTokenizer`` instance wherever they take a language, so
these plug straight into its Gopher/FineWeb filters:

- Korean: Kiwi morphemes. An eojeol (space-separated unit) such as ``형태소를`` is one
  English-style "word" but two morphemes (``형태소`` + ``를``); counting morphemes gives
  Korean documents meaningful word counts, lengths, stop words (particles) and n-grams.
  Each distinct eojeol is analysed once and cached (on the benchmark's Korean sample: 170k
  eojeols, 80k distinct). Kiwi is still most of what Korean costs beyond English (see
  ``benchmarks/corpus_throughput.py`` and docs/data.md).
- Kiwi's multi-word dictionary is off by default (``multi_words``). Its entries are names
  written with spaces; analysed one eojeol at a time they only merge the same names written
  without them (SKY캐슬 one noun instead of SKY + 캐슬: 0.5 % of the shared Korean text's
  527k distinct eojeols), and loading it costs each worker process ~4 s more (5.2 vs 0.9 s
  until the first analysis, on the 2-core Xeon; per eojeol both take ~70 µs).
- Other languages: Unicode word runs; Han/Kana characters count as one word each, since
  Chinese and Japanese are written without spaces.

Punctuation is not a word in either (as in Gopher's whitespace words, where it sticks to
a word), so ratios such as "words with a letter" mean the same thing in every language.
"""

from __future__ import annotations

import re
from functools import cache

from datatrove.utils.word_tokenizers import WordTokenizer

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_HANGUL = re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _spans(text: str, pieces: list[str]) -> list[tuple[int, int]]:
    spans, start = [], 0
    for piece in pieces:
        begin = text.find(piece, start)
        if begin < 0:
            continue
        spans.append((begin, begin + len(piece)))
        start = begin + len(piece)
    return spans


class UnicodeWordTokenizer(WordTokenizer):
    """Words are runs of letters/digits or single Han/Kana characters; punctuation is not a word."""

    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return _sentences(text)

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return _spans(text, self.sent_tokenize(text))


def _surface_morphemes(eojeol: str, tokens) -> tuple[str, ...]:
    """Surface strings of Kiwi tokens; contracted morphemes (했 = 하 + 었) share a span and count once."""
    pieces, end = [], 0
    for token in tokens:
        if token.start >= end:
            pieces.append(eojeol[token.start : token.end])
            end = token.end
    return tuple(pieces)


def _words_only(pieces: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p for p in pieces if any(ch.isalnum() for ch in p))


class KiwiWordTokenizer(WordTokenizer):
    """Kiwi morphemes, analysed per eojeol with a bounded cache (pickles without the Kiwi model)."""

    def __init__(self, model_type: str = "cong", cache_size: int = 1_000_000, multi_words: bool = False):
        super().__init__("ko")
        self.model_type = model_type
        self.cache_size = cache_size
        self.multi_words = multi_words
        self._kiwi = None
        self._cache: dict[str, tuple[str, ...]] = {}

    def __getstate__(self) -> dict:
        return {"model_type": self.model_type, "cache_size": self.cache_size, "multi_words": self.multi_words}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_type"], state["cache_size"], state["multi_words"])

    @property
    def kiwi(self):
        if self._kiwi is None:
            from kiwipiepy import Kiwi

            self._kiwi = Kiwi(model_type=self.model_type, num_workers=1, load_multi_dict=self.multi_words)
        return self._kiwi

    def _analyse(self, eojeols: set[str]) -> None:
        """Kiwi for eojeols with Hangul; numbers, Latin words and symbols need no morphology.

        The cache holds each eojeol's words already stripped of punctuation-only pieces, so a
        cached document costs one lookup per eojeol.
        """
        korean = [e for e in eojeols if _HANGUL.search(e)]
        for eojeol in eojeols.difference(korean):
            self._cache[eojeol] = _words_only(tuple(_WORD.findall(eojeol)) or (eojeol,))
        for eojeol, tokens in zip(korean, self.kiwi.tokenize(korean), strict=True):
            self._cache[eojeol] = _words_only(_surface_morphemes(eojeol, tokens) or (eojeol,))

    def word_tokenize(self, text: str) -> list[str]:
        eojeols = text.split()
        missing = set(eojeols).difference(self._cache)
        if missing:
            if len(self._cache) + len(missing) > self.cache_size:
                self._cache.clear()
                missing = set(eojeols)
            self._analyse(missing)
        cache = self._cache
        return [m for e in eojeols for m in cache[e]]

    def sent_tokenize(self, text: str) -> list[str]:
        return _sentences(text)

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return _spans(text, self.sent_tokenize(text))


@cache
def word_tokenizer_for(
    language: str, kiwi_model: str = "cong", kiwi_multi_words: bool = False
) -> WordTokenizer:
    """One shared instance per language, so datatrove's per-text cache is hit across filters."""
    if language == "ko":
        return KiwiWordTokenizer(kiwi_model, multi_words=kiwi_multi_words)
    return UnicodeWordTokenizer(language)
