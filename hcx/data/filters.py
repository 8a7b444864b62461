"""Quality filters: datatrove's Gopher/FineWeb filters per language, plus what datatrove lacks.

- ``ScopedFilter`` applies one filter to the documents of one language (or to code) and
  passes the others through, so a single pipeline carries per-language thresholds and the
  stats name the language of every drop.
- ``DensityFilter``: hate-speech and advertising term density (hcx.data.lexicons).
- ``CodeQualityFilter``: rules for source files (line lengths, alphanumeric fraction,
  generated-file markers, repeated lines), since prose rules would drop most code.

``build_filters`` turns the recipe's thresholds into the filter steps for the languages
present in the recipe. Word statistics use hcx.data.words (Kiwi for Korean).
"""

from __future__ import annotations

import re
from collections import Counter

from datatrove.data import Document
from datatrove.pipeline.filters import FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates, get_n_grams
from datatrove.utils.text import split_into_words
from datatrove.utils.word_tokenizers import WordTokenizer

from hcx.data.config import CodeFilters, DataConfig, ProseFilters
from hcx.data.lexicons import ADS, HATE
from hcx.data.words import word_tokenizer_for

CODE = "code"


def _decision_view(doc: Document) -> Document:
    """The document as the rules should judge it: trailing spaces on lines are layout, not content
    (WikiText ends sentences with " . "). The text that is written out is unchanged."""
    text = "\n".join(line.rstrip() for line in doc.text.split("\n"))
    return doc if text == doc.text else Document(text=text, id=doc.id, metadata=doc.metadata)


class ScopedFilter(BaseFilter):
    """Runs ``inner`` on documents whose ``metadata[key]`` equals ``value``; others pass through."""

    def __init__(self, inner: BaseFilter, key: str, value: str):
        self.name = f"{inner.name} [{value}]"  # before super().__init__, which names the stats after it
        super().__init__()
        self.inner = inner
        self.key = key
        self.value = value

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get(self.key) != self.value or (
            self.key == "language" and doc.metadata["segment"] == CODE
        ):
            return True
        self.stat_update("in_scope")
        try:
            return self.inner.filter(_decision_view(doc))
        except ZeroDivisionError:
            return False, "no_words"


class RepetitionFilter(GopherRepetitionFilter):
    """datatrove's Gopher repetition rules, except that the "top n-gram" must actually repeat.

    Gopher only scored documents of 50+ words; in a one-sentence document every n-gram is
    the most frequent one, so the rule would act as a length filter for short Korean text.
    """

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        words = split_into_words(doc.text, self.language)
        for n, max_fraction in self.top_n_grams:
            counts = Counter(get_n_grams(words, n))
            if counts:
                gram, k = counts.most_common(1)[0]
                if k > 1 and len(gram) * k / len(doc.text) > max_fraction:
                    return False, f"top_{n}_gram"
        top_n_grams, self.top_n_grams = self.top_n_grams, ()
        try:
            return super().filter(doc)
        finally:
            self.top_n_grams = top_n_grams


class MinLengthFilter(BaseFilter):
    name = "📏 Min length"

    def __init__(self, min_chars: int):
        super().__init__()
        self.min_chars = min_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return len(doc.text.strip()) >= self.min_chars or (False, "too_short")


class DensityFilter(BaseFilter):
    """Drops documents where hate-speech or advertising terms make up too much of the text."""

    name = "🚫 Hate/ad density"

    def __init__(
        self,
        language: str,
        words: WordTokenizer,
        max_hate: float | None,
        max_ads: float | None,
        min_hate_hits: int = 2,
        min_ad_hits: int = 3,
    ):
        super().__init__()
        self.min_hate_hits = min_hate_hits
        self.min_ad_hits = min_ad_hits
        self.words = words
        self.max_hate = max_hate
        self.max_ads = max_ads
        self.hate = self._pattern(HATE.get(language, HATE["en"]))
        self.ads = self._pattern(ADS.get(language, ADS["en"]))

    @staticmethod
    def _pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
        def one(term: str) -> str:
            return rf"\b{re.escape(term)}\b" if term.isascii() else re.escape(term)

        return re.compile("|".join(one(t) for t in sorted(terms, key=len, reverse=True)), re.IGNORECASE)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        n_words = max(1, len(split_into_words(doc.text, self.words)))
        hate = len(self.hate.findall(doc.text)) if self.max_hate is not None else 0
        if hate >= self.min_hate_hits and hate / n_words > self.max_hate:
            return False, "hate_density"
        ads = len(self.ads.findall(doc.text)) if self.max_ads is not None else 0
        if ads >= self.min_ad_hits and ads / n_words > self.max_ads:
            return False, "ad_density"
        return True


_GENERATED = re.compile(
    r"auto-?generated|generated by|do not edit|autogenerated file|this file was generated", re.IGNORECASE
)


class CodeQualityFilter(BaseFilter):
    """Source-file rules after The Stack / StarCoder cleaning: no minified, generated or binary-ish files."""

    name = "🧑‍💻 Code quality"

    def __init__(self, config: CodeFilters):
        super().__init__()
        self.config = config

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        c, text = self.config, doc.text
        if len(text) < c.min_chars:
            return False, "code_too_short"
        if len(text) > c.max_chars:
            return False, "code_too_long"
        lines = text.splitlines() or [text]
        if max(len(line) for line in lines) > c.max_line_length:
            return False, "code_long_line"
        if sum(len(line) for line in lines) / len(lines) > c.max_avg_line_length:
            return False, "code_avg_line_length"
        if sum(ch.isalnum() for ch in text) / len(text) < c.min_alnum_fraction:
            return False, "code_alnum_fraction"
        if any(_GENERATED.search(line) for line in lines[: c.max_autogenerated_lines]):
            return False, "code_autogenerated"
        code_lines = [line.strip() for line in lines if len(line.strip()) > 10]
        if (
            c.dup_line_frac is not None
            and code_lines
            and find_duplicates(code_lines)[0] / len(code_lines) > c.dup_line_frac
        ):
            return False, "code_dup_lines"
        return True


def prose_filters(
    language: str, t: ProseFilters, kiwi_model: str, kiwi_multi_words: bool = False
) -> list[BaseFilter]:
    """Cheap character rules first, word statistics after, so Kiwi only sees survivors."""
    words = word_tokenizer_for(language, kiwi_model, kiwi_multi_words)
    steps: list[BaseFilter] = []
    if t.min_chars:
        steps.append(MinLengthFilter(t.min_chars))
    steps.append(
        FineWebQualityFilter(
            line_punct_thr=t.line_punct_thr if t.line_punct_thr is not None else -1,
            short_line_thr=t.short_line_thr if t.short_line_thr is not None else 1.1,
            short_line_length=t.short_line_length,
            char_duplicates_ratio=t.char_duplicates_ratio if t.char_duplicates_ratio is not None else 1.1,
            new_line_ratio=t.new_line_ratio if t.new_line_ratio is not None else float("inf"),
            language=words,
        )
    )
    steps.append(
        RepetitionFilter(
            dup_line_frac=t.dup_line_frac,
            dup_para_frac=t.dup_para_frac,
            dup_line_char_frac=t.dup_line_char_frac,
            dup_para_char_frac=t.dup_para_char_frac,
            top_n_grams=tuple(t.top_n_grams),
            dup_n_grams=tuple(t.dup_n_grams),
            language=words,
        )
    )
    steps.append(
        GopherQualityFilter(
            min_doc_words=t.min_words,
            max_doc_words=t.max_words,
            min_avg_word_length=t.min_avg_word_length,
            max_avg_word_length=t.max_avg_word_length,
            max_symbol_word_ratio=t.max_symbol_word_ratio,
            max_bullet_lines_ratio=t.max_bullet_lines_ratio,
            max_ellipsis_lines_ratio=t.max_ellipsis_lines_ratio,
            max_non_alpha_words_ratio=t.min_alpha_words_ratio,
            min_stop_words=t.min_stop_words,
            stop_words=t.stop_words,
            language=words,
        )
    )
    if t.max_hate_density is not None or t.max_ad_density is not None:
        steps.append(DensityFilter(language, words, t.max_hate_density, t.max_ad_density))
    return steps


def build_filters(config: DataConfig) -> list[BaseFilter]:
    """One scoped step per (rule, language) for the languages the recipe's sources use."""
    languages = sorted({s.language for s in config.sources if s.segment != CODE})
    steps: list[BaseFilter] = []
    for language in languages:
        rules = prose_filters(
            language, config.prose_filters_for(language), config.kiwi_model, config.kiwi_multi_words
        )
        steps.extend(ScopedFilter(rule, "language", language) for rule in rules)
    if any(s.segment == CODE for s in config.sources):
        steps.append(ScopedFilter(CodeQualityFilter(config.code_filters), "segment", CODE))
    return steps
