"""Token shards: the corpus builder's jsonl.gz files tokenized once into memory-mapped arrays.

One shard per input file: ``NNNNN.tokens.bin`` (uint32 token ids, documents back to back)
and ``NNNNN.index.npy`` (int64 offsets, one more than there are documents). A
``manifest.json`` written last lists every shard with its token and document counts, so a
missing or truncated file is found by size before training starts, and a rerun only redoes
shards that are not complete (SPEC §4; the brief's resumable long work).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hcx.records import BadRecordError, Rejected, read_json_file, read_records
from hcx.tokenizer import Tokenizer, load

MANIFEST = "manifest.json"
TOKEN_DTYPE = np.uint32


class ShardError(RuntimeError):
    """Token shards that cannot be used; the message names the file."""


def load_tokenizer(tokenizer_dir: str | Path) -> Tokenizer:
    """The tokenizer in ``tokenizer_dir``: the tokenizer stage's output, or a model's own.

    Its ``encode_batch`` treats special-token strings inside documents as ordinary text
    (SPEC §2): only the loader's FIM and document-boundary code emits special ids.
    """
    return load(tokenizer_dir)


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str:
    return hashlib.sha256((Path(tokenizer_dir) / "tokenizer.json").read_bytes()).hexdigest()[:16]


def _read_texts(path: Path) -> list[str]:
    def text_of(record: Mapping[str, Any]) -> str:
        if not isinstance(record.get("text"), str):
            raise Rejected("record has no string 'text' field")
        return record["text"]

    try:
        return read_records(path, text_of, policy="fail", what="corpus")
    except (BadRecordError, FileNotFoundError) as exc:
        raise ShardError(str(exc)) from None


def tokenize_corpus(
    pattern: str,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    max_documents: int | None = None,
    batch_size: int = 1024,
) -> Path:
    """Tokenize every file matching ``pattern`` into shards under ``out_dir``; return ``out_dir``."""
    files = sorted(Path(p) for p in glob.glob(pattern))
    if not files:
        raise ShardError(f"no corpus files match {pattern!r} (build the corpus first)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_dir)
    fingerprint = tokenizer_fingerprint(tokenizer_dir)
    entries, budget = [], max_documents
    for i, file in enumerate(tqdm(files, desc="tokenize", unit="file", disable=None)):
        stem = out / f"{i:05d}"
        texts = _read_texts(file)
        if budget is not None:
            texts, budget = texts[:budget], max(0, budget - len(texts))
        if not texts:
            continue
        lengths, bin_tmp = [], Path(f"{stem}.tokens.bin.tmp")
        with open(bin_tmp, "wb") as f:
            for start in range(0, len(texts), batch_size):
                for ids in tokenizer.encode_batch(texts[start : start + batch_size]):
                    np.asarray(ids, dtype=TOKEN_DTYPE).tofile(f)
                    lengths.append(len(ids))
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        np.save(f"{stem}.index.npy", offsets)
        os.replace(bin_tmp, f"{stem}.tokens.bin")
        entries.append(
            {"shard": stem.name, "source": str(file), "documents": len(texts), "tokens": int(offsets[-1])}
        )
    manifest = {
        "tokenizer": fingerprint,
        "pattern": pattern,
        "max_documents": max_documents,
        "sources": _source_stamps(files),
        "shards": entries,
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    os.replace(tmp, out / MANIFEST)
    return out


def _source_stamps(files: list[Path]) -> list[list]:
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def shards_are_current(
    out_dir: str | Path, pattern: str, tokenizer_dir: str | Path, max_documents: int | None
) -> bool:
    """Whether ``out_dir`` holds shards of exactly these corpus files (size, mtime) and tokenizer."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return False
    try:
        manifest = read_manifest(Path(out_dir))
    except ShardError:
        return False  # unreadable: tokenize again
    return (
        manifest.get("pattern") == pattern
        and manifest.get("sources") == _source_stamps(sorted(Path(p) for p in glob.glob(pattern)))
        and manifest.get("tokenizer") == tokenizer_fingerprint(tokenizer_dir)
        and manifest.get("max_documents") == max_documents
    )


@dataclass
class TokenShards:
    """All documents of all shards, addressable by a global document index."""

    tokens: list[np.memmap]
    offsets: list[np.ndarray]
    doc_starts: np.ndarray  # global index of each shard's first document, plus the total

    @property
    def num_documents(self) -> int:
        return int(self.doc_starts[-1])

    @property
    def num_tokens(self) -> int:
        return int(sum(len(t) for t in self.tokens))

    def document(self, index: int) -> np.ndarray:
        shard = int(np.searchsorted(self.doc_starts, index, side="right")) - 1
        local = index - int(self.doc_starts[shard])
        offsets = self.offsets[shard]
        return self.tokens[shard][offsets[local] : offsets[local + 1]]


def read_manifest(out: Path) -> dict[str, Any]:
    """``manifest.json`` of a shard directory, checked to list shards with their counts."""
    path = out / MANIFEST
    if not path.is_file():
        raise ShardError(f"{path}: no shard manifest (tokenization did not finish)")
    manifest = read_json_file(path, ShardError, hint="; delete it to tokenize again")
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list):
        raise ShardError(f"{path}: corrupted, no 'shards' list; delete it to tokenize again")
    for i, entry in enumerate(shards):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("shard"), str)
            and all(isinstance(entry.get(k), int) and entry[k] >= 0 for k in ("tokens", "documents"))
        ):
            raise ShardError(f"{path}: shards[{i}] is not a shard name with token and document counts")
    return manifest


def _check_index(index: np.ndarray, path: Path, entry: dict[str, Any], manifest_path: Path) -> None:
    """A document index must be the offsets of ``entry``'s documents: 0, non-decreasing, ending at its tokens."""
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise ShardError(
            f"{path}: document index of dtype {index.dtype} and shape {index.shape}, not 1-D integers"
        )
    if len(index) != entry["documents"] + 1 or int(index[-1]) != entry["tokens"]:
        raise ShardError(f"{path}: document index does not match {manifest_path}")
    if int(index[0]) != 0:
        raise ShardError(f"{path}: document index starts at {int(index[0])}, not 0")
    bad = np.flatnonzero(np.diff(index) < 0)
    if len(bad):
        raise ShardError(f"{path}: document offsets decrease at document {int(bad[0])} (corrupted index)")


def _open_shard(out: Path, entry: dict[str, Any], manifest_path: Path) -> tuple[np.memmap, np.ndarray]:
    """One shard's tokens (memory-mapped) and document index, each checked against its manifest entry."""
    bin_path, index_path = out / f"{entry['shard']}.tokens.bin", out / f"{entry['shard']}.index.npy"
    for path in (bin_path, index_path):
        if not path.is_file():
            raise ShardError(f"{path}: token shard listed in {manifest_path} is missing")
    expected = entry["tokens"] * np.dtype(TOKEN_DTYPE).itemsize
    size = bin_path.stat().st_size
    if size != expected:
        raise ShardError(
            f"{bin_path}: truncated or corrupt: {size} bytes, manifest says {expected} "
            f"({entry['tokens']} {np.dtype(TOKEN_DTYPE).name} tokens)"
        )
    try:
        index = np.load(index_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ShardError(f"{index_path}: unreadable document index ({exc})") from None
    _check_index(index, index_path, entry, manifest_path)
    tokens = np.memmap(bin_path, dtype=TOKEN_DTYPE, mode="r") if entry["tokens"] else np.empty(0, TOKEN_DTYPE)
    return tokens, index.astype(np.int64, copy=False)


def open_shards(out_dir: str | Path) -> TokenShards:
    """Memory-map the shards listed in the manifest, checking every file against it first."""
    out = Path(out_dir)
    manifest_path = out / MANIFEST
    manifest = read_manifest(out)
    if not manifest["shards"]:
        raise ShardError(f"{manifest_path}: the manifest lists no shards (empty corpus)")
    tokens, offsets, counts = [], [], []
    for entry in manifest["shards"]:
        shard_tokens, index = _open_shard(out, entry, manifest_path)
        tokens.append(shard_tokens)
        offsets.append(index)
        counts.append(entry["documents"])
    return TokenShards(tokens, offsets, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
