from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hcx.train.shards import ShardError, open_shards, shards_are_current, tokenize_corpus


@pytest.fixture
def shard_dir(tmp_path, corpus_glob, tokenizer_dir) -> Path:
    return tokenize_corpus(corpus_glob, tokenizer_dir, tmp_path / "tokens")


def test_shards_hold_every_document_token_for_token(shard_dir, corpus_glob, tokenizer, tokenizer_dir):
    shards = open_shards(shard_dir)
    files = sorted(Path(corpus_glob).parent.glob("*.jsonl.gz"))
    lines = 0
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines += sum(1 for _ in f)
    assert shards.num_documents == lines > 1500  # the fixture's documents less the held-out ones
    first_file = files[0]  # en sorts before ko
    with gzip.open(first_file, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    for i in (0, 1, len(texts) - 1):
        assert shards.document(i).tolist() == tokenizer.encode(texts[i])
    assert tokenizer.decode(shards.document(250).tolist()).strip()
    assert shards_are_current(shard_dir, corpus_glob, tokenizer_dir, None)
    assert not shards_are_current(shard_dir, corpus_glob, tokenizer_dir, 10)


def test_truncated_shard_is_named(shard_dir):
    path = shard_dir / "00001.tokens.bin"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 8])
    with pytest.raises(ShardError, match=r"00001\.tokens\.bin: truncated"):
        open_shards(shard_dir)


def test_missing_shard_is_named(shard_dir):
    (shard_dir / "00000.index.npy").unlink()
    with pytest.raises(ShardError, match=r"00000\.index\.npy: token shard listed .* is missing"):
        open_shards(shard_dir)


def test_unfinished_tokenization_is_reported(tmp_path):
    with pytest.raises(ShardError, match="no shard manifest"):
        open_shards(tmp_path)


def test_bad_corpus_line_names_file_and_line(tmp_path, corpus_glob, tokenizer_dir):
    source = sorted(Path(corpus_glob).parent.glob("*.jsonl.gz"))[0]
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(source, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()[:3]
    lines.insert(2, json.dumps({"id": "x", "content": "no text field"}))
    with gzip.open(bad, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(ShardError, match=r"bad\.jsonl\.gz:3: record has no string 'text' field"):
        tokenize_corpus(str(bad), tokenizer_dir, tmp_path / "tokens")
    with pytest.raises(ShardError, match="no corpus files match"):
        tokenize_corpus(str(tmp_path / "nothing" / "*.jsonl.gz"), tokenizer_dir, tmp_path / "tokens")


def test_max_documents_limits_the_corpus(tmp_path, corpus_glob, tokenizer_dir):
    shards = open_shards(tokenize_corpus(corpus_glob, tokenizer_dir, tmp_path / "t", max_documents=250))
    assert shards.num_documents == 250
    assert shards.num_tokens == sum(len(shards.document(i)) for i in range(250))
