"""Vocabulary extension: append one language's morphology-aware tokens to an existing model's
tokenizer (EEVE-Korean, arXiv 2402.14714), so a published model can start from its own vocabulary.

Algorithm (continued BPE):

1. Training text is cut into words by the base tokenizer's own normalizer and pre-tokenizer
   (SentencePiece-style text, one pre-token per document, is cut before each ``▁``); only words
   with a character of the language's script are kept.
2. SentencePiece-style bases first get the script's missing characters (those the base spells
   with ``<0xNN>`` byte fallback) as new single-character tokens, most frequent first.
3. Each word is encoded by the base BPE (plus those characters), and the token sequence is cut
   where a Kiwi morpheme boundary falls between two tokens (:mod:`hcx.tokenizer.morphemes`).
4. :func:`hcx.tokenizer.continued_bpe.learn_merges` greedily merges the most frequent adjacent
   pair until ``new_tokens`` tokens exist, accepting only pairs whose joined bytes *pin* the
   script (:func:`hcx.tokenizer.spelling.pins_script`) and are not already a base token.
5. New tokens get ids after the largest existing id (vocabulary or added tokens), in the order
   they were made; their merges go to the end of ``model.merges`` (lowest priority).

Why text without the script encodes exactly as before: no base merge involves a new token, and
every new merge ranks after every base merge, so on any word the base merges run first and as
before. A new merge (or new character) can fire only where its bytes occur, and its bytes pin
the script, so they occur only in text that has a character of the script. The same holds for
tiktoken's rank-by-id merging of an hcx base, whose new tokens also rank after all old ones.

An hcx base is encoded by tiktoken with rank = id, so its new merges are re-derived the way
:func:`hcx.tokenizer.bytelevel.canonical_merges` derives the base's (the pair tiktoken joins last
to build each token): then ``tokenizers`` and tiktoken agree on the extended vocabulary too.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer

from hcx.tokenizer.bytelevel import tiktoken_parts, token_bytes, token_string
from hcx.tokenizer.cache import StageCache, morphemes_key
from hcx.tokenizer.config import TokenizerConfig
from hcx.tokenizer.continued_bpe import learn_merges
from hcx.tokenizer.corpus import expand_inputs, select_documents
from hcx.tokenizer.hf_files import TOKENIZER_FILE
from hcx.tokenizer.morphemes import MorphemeSplitter
from hcx.tokenizer.references import TokenCounter
from hcx.tokenizer.spelling import SCRIPTS, Spelling, pins_script, spelling_of
from hcx.tokenizer.stats import Comparison, compare, held_out_documents
from hcx.tokenizer.train import replace_dir

EXTENSION_FILE = "extension.json"
COPIED_FILES = ("tokenizer_config.json", "special_tokens_map.json", "LICENSE")


@dataclass(frozen=True)
class Extension:
    """What ``extension.json`` records: ids ``first_new_id`` .. ``vocab_size - 1`` are new."""

    base: str
    base_vocab_size: int
    first_new_id: int
    added: int
    vocab_size: int
    language: str
    new_characters: int
    documents: int
    bytes: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def new_ids(self) -> range:
        return range(self.first_new_id, self.first_new_id + self.added)

    @classmethod
    def read(cls, directory: str | Path) -> Extension:
        return cls(**json.loads((Path(directory) / EXTENSION_FILE).read_text(encoding="utf-8")))


def tokenizer_file(path: str | Path) -> Path:
    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"base tokenizer not found: {file}")
    return file


def _count_words(
    texts: Iterable[str], tok: Tokenizer, spelling: Spelling, script: Sequence[tuple[int, int]]
) -> tuple[Counter[str], int, int]:
    words: Counter[str] = Counter()
    documents = size = 0
    for text in texts:
        documents += 1
        size += len(text.encode("utf-8"))
        normalized = tok.normalizer.normalize_str(text) if tok.normalizer else text
        pieces = tok.pre_tokenizer.pre_tokenize_str(normalized) if tok.pre_tokenizer else [(normalized, None)]
        for piece, _ in pieces:
            words.update(spelling.words(piece))
    kept = Counter({w: n for w, n in words.items() if pins_script(spelling.raw(w), script)})
    return kept, documents, size


def _missing_characters(
    words: Counter[str],
    vocab: Mapping[str, int],
    spelling: Spelling,
    script: Sequence[tuple[int, int]],
    min_frequency: int,
    limit: int,
) -> list[str]:
    """Script characters a SentencePiece-style base can only spell with byte fallback, most frequent first."""
    if spelling.byte_level:
        return []
    chars: Counter[str] = Counter()
    for word, count in words.items():
        for char in word:
            if char not in vocab and pins_script(char.encode("utf-8"), script):
                chars[char] += count
    ranked = sorted((c for c, n in chars.items() if n >= min_frequency), key=lambda c: (-chars[c], c))
    return ranked[:limit]


def _units(
    words: Counter[str], tok: Tokenizer, spelling: Spelling, splitter: MorphemeSplitter
) -> Counter[tuple[str, ...]]:
    """Each word's base tokens, cut where a morpheme boundary falls between two tokens."""
    texts = {word: spelling.text(word) for word in words}
    pieces = splitter.split_many(set(texts.values()))
    units: Counter[tuple[str, ...]] = Counter()
    for word, count in words.items():
        cuts, at = set(), 0
        for piece in pieces[texts[word]][:-1]:
            at += len(piece.encode("utf-8"))
            cuts.add(at)
        unit: list[str] = []
        at = 0
        for token in tok.model.tokenize(word):
            unit.append(token.value)
            at += len(spelling.raw(token.value))
            if at in cuts:
                units[tuple(unit)] += count
                unit = []
        if unit:
            units[tuple(unit)] += count
    return Counter({u: n for u, n in units.items() if len(u) > 1})


def _ranked_by_id(file: Path) -> bool:
    """Whether hcx encodes this base with tiktoken (rank = id): an hcx tokenizer."""
    from hcx.tokenizer import HcxTokenizer, TokenizerFormatError

    try:
        HcxTokenizer(file)
    except TokenizerFormatError:
        return False
    return True


def _tiktoken_merges(spec: dict[str, Any], new: Sequence[str]) -> list[tuple[str, str]]:
    """For each new token of an hcx base, in id order, the pair tiktoken joins last to build it."""
    specials = {t["content"] for t in spec.get("added_tokens") or []}
    ranks = {token_bytes(t): i for t, i in spec["model"]["vocab"].items() if t not in specials}
    merges = []
    for token in new:
        raw = token_bytes(token)
        parts = tiktoken_parts(raw, ranks, ranks[raw])
        if len(parts) == 2:
            merges.append((token_string(parts[0]), token_string(parts[1])))
    return merges


def _first_free_id(spec: dict[str, Any]) -> int:
    taken = [*spec["model"]["vocab"].values(), *(t["id"] for t in spec.get("added_tokens") or [])]
    return max(taken) + 1


def _with_tokens(spec: dict[str, Any], tokens: Sequence[str], merges: Sequence[tuple[str, str]]) -> dict:
    model = spec["model"]
    first = _first_free_id(spec)
    vocab = dict(model["vocab"])
    # ``tokenizers`` numbers added tokens missing from the model's vocabulary after its size when
    # loading, whatever ids the file gives (Polyglot's <|acc|> 30000): pin them in the vocabulary.
    vocab.update({t["content"]: t["id"] for t in spec.get("added_tokens") or [] if t["content"] not in vocab})
    vocab.update({token: first + i for i, token in enumerate(tokens)})
    old = model.get("merges") or []
    as_text = bool(old) and isinstance(old[0], str)
    appended = [f"{a} {b}" if as_text else [a, b] for a, b in merges]
    return {**spec, "model": {**model, "vocab": vocab, "merges": [*old, *appended]}}


def _save(output_dir: Path, spec: dict[str, Any], base_file: Path, extension: Extension) -> None:
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        (staging / TOKENIZER_FILE).write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        loaded = Tokenizer.from_file(str(staging / TOKENIZER_FILE))
        if loaded.get_vocab_size() != extension.vocab_size:
            raise RuntimeError(
                f"extended vocabulary has {loaded.get_vocab_size()} tokens, not {extension.vocab_size}"
            )
        for name in COPIED_FILES:
            if (base_file.parent / name).is_file():
                shutil.copy2(base_file.parent / name, staging / name)
        (staging / EXTENSION_FILE).write_text(
            json.dumps(asdict(extension), indent=2) + "\n", encoding="utf-8"
        )
        replace_dir(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _learn_tokens(
    words: Counter[str],
    spec: dict[str, Any],
    spelling: Spelling,
    script: Sequence[tuple[int, int]],
    new_tokens: int,
    min_frequency: int,
    splitter: MorphemeSplitter,
    laps: dict[str, float],
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """New characters, all new tokens in id order, and their merges in learning order."""
    started = time.perf_counter()
    chars = _missing_characters(words, spec["model"]["vocab"], spelling, script, min_frequency, new_tokens)
    with_chars = _with_tokens(spec, chars, [])
    known = with_chars["model"]["vocab"]

    def allowed(left: str, right: str) -> bool:
        if spelling.is_byte_fallback(left) or spelling.is_byte_fallback(right) or left + right in known:
            return False
        return pins_script(spelling.raw(left) + spelling.raw(right), script)

    units = _units(words, Tokenizer.from_str(json.dumps(with_chars)), spelling, splitter)
    laps["morphemes"] = round(time.perf_counter() - started, 2)
    merges = learn_merges(units, allowed, new_tokens - len(chars), min_frequency)
    laps["bpe"] = round(time.perf_counter() - started - laps["morphemes"], 2)
    return chars, [*chars, *dict.fromkeys(a + b for a, b in merges)], merges


def extend_tokenizer(
    base: str | Path,
    texts: Iterable[str],
    output_dir: str | Path,
    *,
    new_tokens: int,
    language: str = "ko",
    min_frequency: int = 2,
    join_grammatical: bool = False,
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
) -> Extension:
    """Learn up to ``new_tokens`` tokens of ``language`` from ``texts`` and write the base's
    tokenizer with them appended to ``output_dir`` (see the module docstring). Kiwi analyses are
    shared with ``hcx tokenizer train`` through ``cache_dir``."""
    started = time.perf_counter()
    if language not in SCRIPTS:
        raise ValueError(f"language {language!r}: known {sorted(SCRIPTS)}")
    script = SCRIPTS[language]
    base_file = tokenizer_file(base)
    spec = json.loads(base_file.read_text(encoding="utf-8"))
    spelling = spelling_of(spec, str(base_file))
    base_tok = Tokenizer.from_file(str(base_file))
    words, documents, size = _count_words(texts, base_tok, spelling, script)
    if not words:
        raise ValueError(f"no {language} words in the training text")
    laps = {"count_words": round(time.perf_counter() - started, 2)}
    cache, key = StageCache(cache_dir), morphemes_key(join_grammatical)
    splitter = MorphemeSplitter(num_workers, join_grammatical, known=cache.load(key))
    chars, tokens, merges = _learn_tokens(
        words, spec, spelling, script, new_tokens, min_frequency, splitter, laps
    )
    cache.save(key, splitter.known)
    extended = _with_tokens(spec, tokens, merges)
    if _ranked_by_id(base_file):
        extended = _with_tokens(spec, tokens, _tiktoken_merges(extended, tokens))
    first_new_id = _first_free_id(spec)
    extension = Extension(
        base=str(base_file.parent.resolve()),
        base_vocab_size=base_tok.get_vocab_size(),
        first_new_id=first_new_id,
        added=len(tokens),
        vocab_size=first_new_id + len(tokens),
        language=language,
        new_characters=len(chars),
        documents=documents,
        bytes=size,
        seconds=round(time.perf_counter() - started, 2),
        stage_seconds=laps,
    )
    _save(Path(output_dir), extended, base_file, extension)
    return extension


def token_counter(name: str, path: str | Path) -> TokenCounter:
    """Table 1's counter for any ``tokenizer.json`` (no special tokens added)."""
    tok = Tokenizer.from_file(str(tokenizer_file(path)))
    return TokenCounter(
        name,
        tok.get_vocab_size(),
        lambda texts: [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)],
    )


def extend_from_config(config: TokenizerConfig) -> tuple[Extension, Comparison]:
    """Run ``tokenizer.extend`` of a recipe; measure base and extended tokenizers on held-out text."""
    settings = config.extend
    if settings is None:
        raise ValueError(
            "the recipe's tokenizer section has no `extend:` settings (base, inputs, new_tokens)"
        )
    files = expand_inputs(settings.inputs)
    texts = (
        text
        for path in files
        for text in select_documents(
            path,
            held_out=False,
            fraction=config.held_out_fraction,
            field=config.text_field,
            max_docs=settings.max_docs_per_file,
            max_bytes=settings.max_bytes_per_file,
        )
    )
    extension = extend_tokenizer(
        settings.base,
        texts,
        config.output_dir,
        new_tokens=settings.new_tokens,
        language=settings.language,
        min_frequency=config.min_frequency,
        join_grammatical=config.join_grammatical,
        num_workers=config.num_workers,
        cache_dir=config.cache_dir or None,
    )
    documents = held_out_documents(
        config.stats.documents, config.stats.docs_per_language, config.held_out_fraction, config.text_field
    )
    counters = [token_counter("base", settings.base), token_counter("extended", config.output_dir)]
    return extension, compare(counters, documents)


def print_extension(extension: Extension, table: Comparison, console: Console) -> None:
    """Table 1 for the two tokenizers: tokens per held-out document before and after."""
    view = Table(title=f"Tokens per held-out document, base vs extended (+{extension.added:,} tokens)")
    for column in ("language", "docs", "base", "extended", "extended/base", "bytes/token"):
        view.add_column(column, justify="left" if column == "language" else "right")
    for lang in table.languages:
        view.add_row(
            lang,
            f"{table.docs[lang]:,}",
            f"{table.avg_tokens('base', lang):,.1f}",
            f"{table.avg_tokens('extended', lang):,.1f}",
            f"{table.ratio('extended', lang, to='base'):.3f}",
            f"{table.bytes_per_token('base', lang):.2f} → {table.bytes_per_token('extended', lang):.2f}",
        )
    console.print(view)
    console.print(
        f"added {extension.added:,} {extension.language} tokens ({extension.new_characters:,} characters) "
        f"as ids {extension.first_new_id:,}..{extension.vocab_size - 1:,}; vocabulary "
        f"{extension.base_vocab_size:,} → {extension.vocab_size:,}; learned from "
        f"{extension.documents:,} documents ({extension.bytes / 1e6:.1f} MB) in {extension.seconds:.1f} s"
    )
