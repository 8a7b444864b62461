"""The held-out text: documents that no stage of hcx trains on, for measuring language modelling.

A document is held out when a hash of its text falls in the first ``fraction`` of the hash range
(:func:`is_held_out`), whichever file, recipe or process reads it. The corpus builder drops these
documents, the tokenizer does not train on them, and bits per byte (the training logs and the
``hcx_bpb_*`` evaluation tasks) is measured on them, so one rule keeps all three apart.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from hcx.paths import find_data_dir
from hcx.records import Rejected, iter_rows

HELD_OUT_FRACTION = 0.05
#: UTF-8 bytes of each language's held-out text that bits per byte is measured on, in training
#: logs and evaluation tasks alike (about 7,000 Hangul syllables, 20,000 English characters).
BPB_BYTES = 20_000
#: The shared pretraining file of each language whose held-out documents bits per byte is measured on.
LANGUAGE_FILES = {
    "ko": "pretrain/ko.jsonl.gz",
    "en": "pretrain/en.jsonl.gz",
    "code": "pretrain/code.jsonl.gz",
    "ja": "pretrain/ja.jsonl.gz",
    "zh": "pretrain/zh.jsonl.gz",
    "de": "pretrain/de.jsonl.gz",
    "fr": "pretrain/fr.jsonl.gz",
}


class HeldOutTextError(ValueError):
    """Held-out text that cannot be read; the message names the file, line or language."""


def is_held_out(text: str, fraction: float = HELD_OUT_FRACTION) -> bool:
    """True for the ``fraction`` of documents reserved for measurement (stable across runs)."""
    if fraction <= 0:
        return False
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


@functools.lru_cache(maxsize=32)
def held_out_texts(
    path: str | Path, max_bytes: int, fraction: float = HELD_OUT_FRACTION, field: str = "text"
) -> tuple[str, ...]:
    """About ``max_bytes`` of the held-out documents of a JSON Lines file, spread evenly over it
    (files are often grouped by source, so the first documents alone would measure one source)."""
    docs = []
    for line, record in iter_rows(Path(path)):
        if isinstance(record, Rejected):
            raise HeldOutTextError(f"{path}:{line}: {record}")
        text = record.get(field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise HeldOutTextError(f"{path}:{line}: no string field {field!r}")
        if text.strip() and is_held_out(text, fraction):
            docs.append(text)
    if not docs:
        raise HeldOutTextError(f"{path}: no held-out document (fraction {fraction})")
    total = sum(len(text.encode("utf-8")) for text in docs)
    stride = max(1, total // max_bytes)
    chosen, size = [], 0
    for text in docs[::stride]:
        if size >= max_bytes:
            break
        chosen.append(text)
        size += len(text.encode("utf-8"))
    return tuple(chosen)


def language_texts(language: str, max_bytes: int, data_dir: str | Path | None = None) -> tuple[str, ...]:
    """The held-out documents of ``language`` (a key of :data:`LANGUAGE_FILES`) in the shared data."""
    if language not in LANGUAGE_FILES:
        raise HeldOutTextError(
            f"no held-out text for language {language!r}; known: {', '.join(LANGUAGE_FILES)}"
        )
    root = Path(data_dir) if data_dir is not None else find_data_dir()
    path = root / LANGUAGE_FILES[language]
    if not path.is_file():
        raise HeldOutTextError(f"held-out text for {language!r}: {path} does not exist")
    return held_out_texts(str(path), max_bytes)
