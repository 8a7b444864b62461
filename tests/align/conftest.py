from __future__ import annotations

from pathlib import Path

import pytest

from hcx.train.config import PretrainConfig
from hcx.train.trainer import Pretrainer
from tests.train.conftest import corpus_glob

__all__ = ["corpus_glob"]


@pytest.fixture(scope="session")
def base_model_dir(tokenizer_dir: Path, corpus_glob: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny decoder briefly pretrained on real shared text by `hcx pretrain` and exported to HF."""
    out = tmp_path_factory.mktemp("base")
    cfg = PretrainConfig.model_validate(
        {
            "corpus": corpus_glob,
            "tokenizer": str(tokenizer_dir),
            "output_dir": str(out / "run"),
            "model": {"preset": "tiny", "vocab_size": None, "n_layers": 2, "max_seq_len": 512},
            "steps": 40,
            "stages": [{"fraction": 1.0, "seq_len": 256, "batch_size": 8, "rope_base": 10_000}],
            "optim": {"lr": 3e-3, "warmup_steps": 5},
            "checkpoint": {"every": 1000},
            "dtype": "float32",
            "export_hf": str(out / "hf"),
        }
    )
    result = Pretrainer(cfg).train()
    assert result.hf_dir is not None and result.losses[-1] < result.losses[0]
    return result.hf_dir
