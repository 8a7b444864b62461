"""Table 1 of the report: average tokens per document by language, for many tokenizers.

Documents are the held-out ones (:func:`hcx.tokenizer.corpus.is_held_out`) of each
language file, so a tokenizer trained by ``hcx tokenizer train`` on the same files never
saw them. Besides tokens per document the table gives bytes (UTF-8) per token and each
tokenizer's token count relative to ours ("×ours": above 1 means it needs more tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hcx.tokenizer.config import TokenizerConfig
from hcx.tokenizer.corpus import select_documents
from hcx.tokenizer.references import TokenCounter, hcx_counter, load_reference

OURS = "hcx (ours)"


@dataclass
class Row:
    name: str
    vocab_size: int
    tokens: dict[str, int] = field(default_factory=dict)


@dataclass
class Comparison:
    """Token totals per tokenizer and language over the same documents."""

    languages: list[str]
    docs: dict[str, int]
    bytes: dict[str, int]
    rows: list[Row]

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def avg_tokens(self, name: str, language: str) -> float:
        return self.row(name).tokens[language] / self.docs[language]

    def bytes_per_token(self, name: str, language: str) -> float:
        return self.bytes[language] / max(1, self.row(name).tokens[language])

    def ratio(self, name: str, language: str, to: str = OURS) -> float:
        """Tokens of ``name`` divided by tokens of ``to`` on the same documents."""
        return self.row(name).tokens[language] / max(1, self.row(to).tokens[language])


def held_out_documents(
    files: Mapping[str, str | Path], count: int, fraction: float, field: str = "text"
) -> dict[str, list[str]]:
    """``count`` held-out documents of each language file, spread evenly over the file.

    Files are grouped by source, so the first documents alone would measure one source.
    """
    chosen = {}
    for language, path in files.items():
        docs = list(select_documents(Path(path), held_out=True, fraction=fraction, field=field))
        step = max(1.0, len(docs) / count)
        chosen[language] = [docs[int(i * step)] for i in range(min(count, len(docs)))]
    return chosen


def compare(counters: Sequence[TokenCounter], documents: Mapping[str, Sequence[str]]) -> Comparison:
    languages = list(documents)
    rows = [
        Row(c.name, c.vocab_size, {lang: sum(c.count(documents[lang])) for lang in languages})
        for c in counters
    ]
    return Comparison(
        languages=languages,
        docs={lang: len(documents[lang]) for lang in languages},
        bytes={lang: sum(len(t.encode("utf-8")) for t in documents[lang]) for lang in languages},
        rows=rows,
    )


def compare_from_config(config: TokenizerConfig, extra: Mapping[str, str] | None = None) -> Comparison:
    """Ours (``output_dir``), any ``extra`` hcx tokenizers and the configured references."""
    counters = [hcx_counter(OURS, config.output_dir)]
    counters += [hcx_counter(name, path) for name, path in (extra or {}).items()]
    counters += [load_reference(name, config.stats.reference_dir) for name in config.stats.references]
    documents = held_out_documents(
        config.stats.documents, config.stats.docs_per_language, config.held_out_fraction, config.text_field
    )
    empty = [lang for lang, docs in documents.items() if not docs]
    if empty:
        raise ValueError(f"no held-out documents for {empty}; is tokenizer.held_out_fraction 0?")
    return compare(counters, documents)


def print_table(table: Comparison, console: Console, reference: str = OURS) -> None:
    tokens = Table(title="Average tokens per held-out document (×ours: tokens relative to ours)")
    tokens.add_column("tokenizer")
    tokens.add_column("vocab", justify="right")
    for lang in table.languages:
        tokens.add_column(f"{lang} (n={table.docs[lang]})", justify="right")
    for row in table.rows:
        cells = [
            f"{table.avg_tokens(row.name, lang):,.1f} ({table.ratio(row.name, lang, reference):.2f}×)"
            for lang in table.languages
        ]
        tokens.add_row(row.name, f"{row.vocab_size:,}", *cells)
    console.print(tokens)
    per_token = Table(title="UTF-8 bytes per token (higher is more compact)")
    per_token.add_column("tokenizer")
    for lang in table.languages:
        per_token.add_column(lang, justify="right")
    for row in table.rows:
        per_token.add_row(
            row.name, *[f"{table.bytes_per_token(row.name, lang):.2f}" for lang in table.languages]
        )
    console.print(per_token)
