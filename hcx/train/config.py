"""The ``pretrain:`` section of a recipe. Defaults are the SPEC's numbers (§3–§4)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hcx.config import Section
from hcx.model.config import ModelConfig


class ContextStage(Section):
    """One stage of the context schedule: a share of the steps at one row length and RoPE base."""

    fraction: float = Field(gt=0, le=1)
    seq_len: int = Field(gt=0)
    batch_size: int = Field(gt=0, description="global rows per optimizer step (before accumulation split)")
    rope_base: float = Field(gt=0)


def _spec_stages() -> list[ContextStage]:
    # SPEC §4: 90 % of steps at 4,096, the last 10 % at 32,768, the same tokens per step. The long
    # stage raises the RoPE base 10k -> 1M ("adjusted base frequency", as Code Llama did for 16k+).
    return [
        ContextStage(fraction=0.9, seq_len=4096, batch_size=256, rope_base=10_000.0),
        ContextStage(fraction=0.1, seq_len=32768, batch_size=32, rope_base=1_000_000.0),
    ]


class FimConfig(Section):
    """Fill-in-the-middle (SPEC §4): share of documents, SPM share among them, cut points."""

    rate: float = Field(default=0.5, ge=0, le=1)
    spm_rate: float = Field(default=0.5, ge=0, le=1)
    split: Literal["thirds", "random"] = "thirds"


class OptimConfig(Section):
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 2000
    schedule: Literal["cosine", "wsd"] = "cosine"
    decay_fraction: float = Field(default=0.2, gt=0, le=1, description="WSD: share of steps spent decaying")
    grad_clip: float = 1.0


class ParallelConfig(Section):
    """Device mesh (pp, dp, tp). ``dp=-1`` takes the ranks left over by tp and pp."""

    dp: int = -1
    tp: int = 1
    pp: int = 1
    pp_microbatches: int = 4
    pp_schedule: Literal["gpipe", "1f1b"] = "1f1b"


class CheckpointConfig(Section):
    every: int = 1000
    keep: int = 2
    async_save: bool = False


class LoopConfig(Section):
    """What every training stage shares (the :class:`hcx.train.trainer.Trainer`'s knobs).

    Each stage's config (pretraining, SFT, RM, PPO) is a LoopConfig with its own fields added,
    so a recipe section sets these at its top level.
    """

    output_dir: str = "runs/stage"
    steps: int | None = Field(default=None, description="optimizer steps; None = the stage's epochs")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    device: str = Field(
        default="auto", description="auto: this rank's GPU under torchrun when there is one, else the CPU"
    )
    dtype: Literal["bfloat16", "float32"] = Field(
        default="bfloat16",
        description="compute dtype: bfloat16 autocast (or FSDP bf16 parameters) over float32 master weights; "
        "frozen networks (PPO's reference and reward model) are held in it",
    )
    grad_accum: int = Field(default=1, ge=1, description="micro-batches per optimizer step")
    activation_checkpointing: bool = False
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    peak_tflops: float | None = Field(default=None, description="per device, for MFU; guessed for known GPUs")
    resume: bool = True


class PretrainConfig(LoopConfig):
    corpus: str = "runs/corpus/*.jsonl.gz"
    tokenizer: str = "runs/tokenizer"
    output_dir: str = "runs/pretrain"
    max_documents: int | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    steps: int = 100_000
    stages: list[ContextStage] = Field(default_factory=_spec_stages)
    doc_mask: bool = True
    fim: FimConfig = Field(default_factory=FimConfig)
    export_hf: str | None = None

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        total = sum(s.fraction for s in self.stages)
        if not self.stages or abs(total - 1.0) > 1e-6:
            raise ValueError(f"stages: fractions must sum to 1, got {total}")
        for i, stage in enumerate(self.stages):
            if stage.seq_len > self.model.max_seq_len:
                raise ValueError(
                    f"stages[{i}].seq_len {stage.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}"
                )
        return self

    def stage_starts(self) -> list[int]:
        """First optimizer step of each stage (the context switch happens at these steps)."""
        starts, acc = [], 0.0
        for stage in self.stages:
            starts.append(round(acc * self.steps))
            acc += stage.fraction
        return starts

    def stage_at(self, step: int) -> tuple[int, ContextStage]:
        index = max(i for i, start in enumerate(self.stage_starts()) if start <= step)
        return index, self.stages[index]
