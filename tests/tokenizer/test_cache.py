"""Re-runs reuse the cached word counts and Kiwi analyses and give the same tokenizer."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from hcx.tokenizer import train_tokenizer
from hcx.tokenizer.corpus import read_documents


def _write_slice(source: Path, target: Path, docs: int) -> None:
    texts = [t for _, t in zip(range(docs), read_documents(source), strict=False)]
    with gzip.open(target, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)


def test_rerun_reuses_cache_and_changed_input_invalidates_it(tmp_path: Path, data_dir: Path):
    corpus = tmp_path / "ko.jsonl.gz"
    _write_slice(data_dir / "pretrain" / "ko.jsonl.gz", corpus, 400)
    cache = tmp_path / "cache"

    def train(out: str) -> bytes:
        path = train_tokenizer(files=[corpus], vocab_size=800, output_dir=tmp_path / out, cache_dir=cache)
        return (path / "tokenizer.json").read_bytes()

    first = train("a")
    entries = sorted(p.name for p in cache.iterdir())
    assert any(n.startswith("counts-ko.jsonl.gz") for n in entries)
    assert any(n.startswith("kiwi-") for n in entries)
    assert train("b") == first
    assert sorted(p.name for p in cache.iterdir()) == entries

    _write_slice(data_dir / "pretrain" / "ko.jsonl.gz", corpus, 300)
    os.utime(corpus, ns=(1, 1))
    assert train("c") != first
    assert len([n for n in os.listdir(cache) if n.startswith("counts-")]) == 2
