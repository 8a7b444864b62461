"""A small real corpus in the corpus builder's format and a tiny pretraining config around it."""

from __future__ import annotations

import pytest

from hcx.train.config import PretrainConfig
from tests.model.conftest import korean_texts, one_torch_thread, tokenizer

__all__ = ["korean_texts", "one_torch_thread", "tokenizer"]


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
