"""A small real corpus in the corpus builder's format and a tiny pretraining config around it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hcx.train.config import PretrainConfig
from tests.model.conftest import korean_texts, one_torch_thread, read_texts, tokenizer

__all__ = ["korean_texts", "one_torch_thread", "tokenizer"]


@pytest.fixture(scope="session")
def corpus_glob(tmp_path_factory, data_dir: Path) -> str:
    """Two jsonl.gz files (Korean, English) with the corpus builder's fields, from the shared data."""
    out = tmp_path_factory.mktemp("corpus")
    for language, limit in (("ko", 1500), ("en", 200)):
        texts = read_texts(data_dir / "pretrain" / f"{language}.jsonl.gz", limit, skip=3000)
        with gzip.open(out / f"{language}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i, text in enumerate(texts):
                record = {"text": text, "id": f"{language}-{i}", "segment": language, "language": language}
                f.write(json.dumps({**record, "source": "shared"}, ensure_ascii=False) + "\n")
    return str(out / "*.jsonl.gz")


@pytest.fixture
def make_config(tmp_path, corpus_glob, tokenizer_dir):
    """A tiny float32 config; keyword arguments override fields (nested ones as dicts)."""

    def make(**overrides) -> PretrainConfig:
        base = {
            "corpus": corpus_glob,
            "tokenizer": str(tokenizer_dir),
            "output_dir": str(tmp_path / "run"),
            "model": {"preset": "tiny", "vocab_size": 4096, "n_layers": 2, "max_seq_len": 256},
            "steps": 6,
            "stages": [
                {"fraction": 0.5, "seq_len": 64, "batch_size": 4, "rope_base": 10_000},
                {"fraction": 0.5, "seq_len": 128, "batch_size": 2, "rope_base": 100_000},
            ],
            "optim": {"lr": 3e-3, "warmup_steps": 2},
            "checkpoint": {"every": 3},
            "dtype": "float32",
            "log_every": 1,
        }
        for key, value in overrides.items():
            base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
        return PretrainConfig.model_validate(base)

    return make
