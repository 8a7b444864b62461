"""Fixtures shared by the alignment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from hcx.align.config import SftConfig
from hcx.align.sft import sft


@pytest.fixture(scope="session")
def policy_dir(base_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy fine-tuned on the shared Korean chit-chat (real answers, real end-of-turn stops)."""
    out = tmp_path_factory.mktemp("policy")
    cfg = SftConfig.model_validate(
        {
            "init": str(base_model_dir),
            "output_dir": str(out / "sft"),
            "sources": [{"path": str(data_dir / "sft" / "ko.jsonl.gz"), "language": "ko"}],
            "korean_ratio": 1.0,
            "held_out": 0,
            "max_len": 128,
            "max_samples": 3000,
            "batching": "packed",
            "seq_len": 256,
            "max_tokens": 4096,
            "steps": 60,
            "dtype": "float32",
            "optim": {"lr": 3e-3, "warmup_steps": 5, "weight_decay": 0.0},
            "checkpoint": {"every": 1000},
        }
    )
    return Path(sft(cfg).metrics["hf_dir"])
