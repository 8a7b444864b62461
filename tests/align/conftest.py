from __future__ import annotations

from pathlib import Path

import pytest

from hcx.model import ModelConfig, Transformer
from hcx.model.hf import export_hf


@pytest.fixture(scope="session")
def base_model_dir(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny decoder in the Hugging Face format with the test tokenizer, as `hcx pretrain` exports it."""
    from hcx.tokenizer import load

    cfg = ModelConfig(preset="tiny", vocab_size=load(tokenizer_dir).vocab_size, n_layers=2, max_seq_len=512)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    return export_hf(model, tmp_path_factory.mktemp("base") / "hf", tokenizer_dir)
