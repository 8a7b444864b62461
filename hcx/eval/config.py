"""The ``eval:`` recipe section: which checkpoints to score on which suite (SPEC §6)."""

from __future__ import annotations

from pydantic import Field

from hcx.config import Section
from hcx.eval.answers import AnswersConfig


class EvalConfig(Section):
    """Checkpoints (name -> HF-format directory) evaluated on one suite, compared on one radar."""

    checkpoints: dict[str, str] = Field(min_length=1, description="name -> HF-format checkpoint directory")
    suite: str = "quick"
    data_dir: str | None = Field(default="${data_dir}", description="offline items; null reads the hub")
    limit: int | None = Field(default=None, ge=1, description="at most this many items per task")
    output_dir: str = "runs/eval"
    batch_size: int = Field(default=64, ge=1)
    hf: bool = Field(default=False, description="score through lm-eval's hf backend instead of the engine")
    strict: bool = Field(
        default=False, description="fail on a benchmark missing from data_dir (else skip it)"
    )
    log_mlflow: bool = False
    answers: AnswersConfig | None = Field(
        default=None, description="also answer the SFT's held-out prompts with every checkpoint (answers.md)"
    )
