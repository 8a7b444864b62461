"""Training the morphology-aware byte-level BPE (SPEC §2).

1. Documents are cut by the pre-tokenization regex into words, which are counted.
2. With ``morpheme_aware`` each distinct Korean word is cut again at Kiwi morpheme
   boundaries (:mod:`hcx.tokenizer.morphemes`); the pieces inherit the word's count.
   BPE learns merges only inside pieces, so no Korean token spans a morpheme boundary
   of the training text, while the saved tokenizer still needs only the regex.
3. The Rust ``tokenizers`` BPE trainer learns the merges from the counted pieces.
4. The vocabulary is saved as a plain byte-level BPE with tiktoken-compatible merges
   (:func:`hcx.tokenizer.bytelevel.canonical_merges`), written to a temporary
   directory and renamed into place, so a failed run leaves no partial output.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from hcx.data.held_out import is_held_out
from hcx.tokenizer.bytelevel import canonical_merges, token_bytes, token_string
from hcx.tokenizer.cache import StageCache, counts_key, morphemes_key
from hcx.tokenizer.config import TokenizerConfig
from hcx.tokenizer.corpus import TokenizerInputError, expand_inputs, select_documents
from hcx.tokenizer.hf_files import write_hf_files
from hcx.tokenizer.morphemes import MorphemeSplitter
from hcx.tokenizer.pretokenize import byte_level_pre_tokenizer, split_words
from hcx.tokenizer.specials import SPECIAL_TOKENS

MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
INFO_FILE = "training_info.json"

# A Unicode noncharacter: separates counted pieces in the text fed to the Rust trainer.
_SEPARATOR = "\ufdd0"


def count_words(documents: Iterable[str]) -> tuple[Counter[str], int]:
    """Pre-tokenized word counts of ``documents`` and the number of documents."""
    counts: Counter[str] = Counter()
    docs = 0
    for text in documents:
        counts.update(split_words(text))
        docs += 1
    return counts, docs


def morpheme_pieces(words: Counter[str], splitter: MorphemeSplitter) -> Counter[str]:
    """Word counts → piece counts, Korean words cut at morpheme boundaries."""
    pieces: Counter[str] = Counter()
    for word, parts in splitter.split_many(words).items():
        count = words[word]
        for part in parts:
            pieces[part] += count
    return pieces


def _training_texts(texts: Iterable[str], held_out_fraction: float) -> Iterator[str]:
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TokenizerInputError(f"texts[{index}] is {type(text).__name__}, not str")
        if not is_held_out(text, held_out_fraction):
            yield text


def _training_text(pieces: Counter[str], chunk_chars: int = 1 << 20) -> Iterator[str]:
    buffer: list[str] = []
    size = 0
    for piece, count in pieces.items():
        piece = piece.replace(_SEPARATOR, "")
        if not piece:
            continue
        buffer.append((piece + _SEPARATOR) * count)
        size += (len(piece) + 1) * count
        if size >= chunk_chars:
            yield "".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer)


def learn_bpe(pieces: Counter[str], vocab_size: int, min_frequency: int, progress: bool) -> Tokenizer:
    """Run the Rust BPE trainer on counted pieces; specials get ids 0..N-1, then the 256 bytes."""
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(_SEPARATOR, behavior="removed"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    learner.train_from_iterator(_training_text(pieces), trainer=trainer)
    return learner


def build_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    """The saved tokenizer: regex + byte-level BPE over ``vocab`` (specials first), no Kiwi."""
    ranks = {token_bytes(t): i for t, i in vocab.items() if t not in SPECIAL_TOKENS}
    merges = [(token_string(a), token_string(b)) for a, b in canonical_merges(ranks)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tokenizer.pre_tokenizer = byte_level_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size {vocab_size} is smaller than the 256 byte tokens plus "
            f"{len(SPECIAL_TOKENS)} special tokens ({MIN_VOCAB_SIZE})"
        )


def replace_dir(staging: Path, output_dir: Path) -> None:
    old = None
    if output_dir.exists():
        old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        output_dir.rename(old)
    staging.rename(output_dir)
    if old is not None:
        shutil.rmtree(old)


def _count_files(
    paths: Sequence[Path],
    selection: dict,
    weights: dict[str, float],
    cache: StageCache,
    bar: Progress,
) -> tuple[Counter[str], int]:
    words: Counter[str] = Counter()
    documents = 0
    task = bar.add_task("counting words", total=len(paths))
    for path in paths:
        key = counts_key(path, **selection)
        cached = cache.load(key)
        if cached is None:
            cached = count_words(select_documents(path, held_out=False, **selection))
            cache.save(key, cached)
        counts, docs = cached
        weight = weights.get(path.name, 1.0)
        if weight != 1.0:
            counts = Counter({w: max(1, round(n * weight)) for w, n in counts.items()})
        words += counts
        documents += docs
        bar.advance(task)
    return words, documents


def _save(output_dir: Path, tokenizer: Tokenizer, info: dict, model_max_length: int) -> None:
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        write_hf_files(staging, tokenizer, model_max_length)
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        replace_dir(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def train_tokenizer(
    texts: Iterable[str] | None = None,
    *,
    files: Sequence[str | Path] | None = None,
    vocab_size: int = 100_000,
    output_dir: str | Path,
    morpheme_aware: bool = True,
    join_grammatical: bool = False,
    min_frequency: int = 2,
    text_field: str = "text",
    held_out_fraction: float = 0.0,
    max_docs_per_file: int | None = None,
    max_bytes_per_file: int | None = None,
    file_weights: dict[str, float] | None = None,
    model_max_length: int = 32_768,
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> Path:
    """Train on in-memory ``texts`` and/or JSON Lines ``files`` and save to ``output_dir``.

    Documents whose hash falls in ``held_out_fraction`` are skipped (they are the
    measurement set). ``file_weights`` multiplies the word counts of a file by its name.
    With ``cache_dir``, per-file word counts and Kiwi analyses are kept there and reused by
    the next run. Returns ``output_dir``, which holds ``tokenizer.json``,
    ``tokenizer_config.json``, ``special_tokens_map.json`` and ``training_info.json``.
    """
    check_vocab_size(vocab_size)
    output_dir = Path(output_dir)
    paths = expand_inputs(files) if files else []
    if texts is None and not paths:
        raise TokenizerInputError("no training input: give texts or files")
    cache = StageCache(cache_dir)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        selection = {
            "fraction": held_out_fraction,
            "field": text_field,
            "max_docs": max_docs_per_file,
            "max_bytes": max_bytes_per_file,
        }
        words, documents = _count_files(paths, selection, file_weights or {}, cache, bar)
        if texts is not None:
            counts, docs = count_words(_training_texts(texts, held_out_fraction))
            words += counts
            documents += docs
        if not words:
            where = ", ".join(str(p) for p in paths) or "the given texts"
            raise TokenizerInputError(f"no training text in {where} (empty, or every document held out)")
        seconds["count_words"] = time.perf_counter() - started
        pieces = words
        if morpheme_aware:
            bar.add_task("Korean morpheme boundaries (Kiwi)", total=None)
            key = morphemes_key(join_grammatical)
            splitter = MorphemeSplitter(num_workers, join_grammatical, known=cache.load(key))
            pieces = morpheme_pieces(words, splitter)
            cache.save(key, splitter.known)
        seconds["morphemes"] = time.perf_counter() - started - sum(seconds.values())
    learner = learn_bpe(pieces, vocab_size, min_frequency, progress)
    seconds["bpe"] = time.perf_counter() - started - sum(seconds.values())
    tokenizer = build_tokenizer(learner.get_vocab())
    seconds["build"] = time.perf_counter() - started - sum(seconds.values())
    info = {
        "vocab_size": tokenizer.get_vocab_size(),
        "requested_vocab_size": vocab_size,
        "morpheme_aware": morpheme_aware,
        "join_grammatical": join_grammatical,
        "min_frequency": min_frequency,
        "held_out_fraction": held_out_fraction,
        "files": [str(p) for p in paths],
        "file_weights": file_weights or {},
        "documents": documents,
        "distinct_words": len(words),
        "distinct_pieces": len(pieces),
        "seconds": round(time.perf_counter() - started, 2),
        "stage_seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    _save(output_dir, tokenizer, info, model_max_length)
    return output_dir


def train_from_config(config: TokenizerConfig, progress: bool = True) -> Path:
    return train_tokenizer(
        files=config.inputs,
        vocab_size=config.vocab_size,
        output_dir=config.output_dir,
        morpheme_aware=config.morpheme_aware,
        join_grammatical=config.join_grammatical,
        min_frequency=config.min_frequency,
        text_field=config.text_field,
        held_out_fraction=config.held_out_fraction,
        max_docs_per_file=config.max_docs_per_file,
        max_bytes_per_file=config.max_bytes_per_file,
        file_weights=config.file_weights,
        model_max_length=config.model_max_length,
        num_workers=config.num_workers,
        cache_dir=config.cache_dir or None,
        progress=progress,
    )
