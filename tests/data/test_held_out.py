"""The held-out documents: one hash rule, evenly spread, never in the corpus."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hcx.data.held_out import HeldOutTextError, held_out_texts, is_held_out, language_texts


def test_language_texts_are_held_out_spread_and_capped(data_dir: Path):
    texts = language_texts("ko", 20_000, data_dir)
    assert all(is_held_out(t) for t in texts)
    size = sum(len(t.encode("utf-8")) for t in texts)
    last = len(texts[-1].encode("utf-8"))
    assert 20_000 <= size < 20_000 + last
    sources = set()
    with gzip.open(data_dir / "pretrain" / "ko.jsonl.gz", "rt", encoding="utf-8") as f:
        by_text = {r["text"]: r["source"] for r in map(json.loads, f)}
    sources = {by_text[t] for t in texts}
    assert len(sources) >= 3, sources  # not just the file's first source


def test_bad_input_names_the_file_and_line(tmp_path: Path):
    path = tmp_path / "docs.jsonl"
    held = next(f"document {i}" for i in range(10_000) if is_held_out(f"document {i}"))
    path.write_text(json.dumps({"text": held}) + "\n" + "{not json\n", encoding="utf-8")
    with pytest.raises(HeldOutTextError, match=rf"{path}:2"):
        held_out_texts(str(path), 1000)
    with pytest.raises(HeldOutTextError, match="known: ko, en"):
        language_texts("xx", 1000, tmp_path)
