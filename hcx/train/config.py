"""The ``pretrain:`` section of a recipe. Defaults are the SPEC's numbers (§3–§4)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from hcx.config import Section
from hcx.data.held_out import BPB_BYTES
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


LORA_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "output")


class LoraConfig(Section):
    """Low-rank adapters (LoRA, Hu et al. 2021) instead of training every weight (:mod:`hcx.train.lora`).

    Each targeted linear layer computes ``W x + (alpha / rank) · B A x``: the base ``W`` is
    frozen, ``A`` (rank × in, random) and ``B`` (out × rank, zero, so training starts from the
    base model) train. Exports hold the merged ``W + (alpha / rank) · B A``.
    """

    rank: int = Field(default=16, gt=0)
    alpha: float = Field(default=32.0, gt=0, description="the update is scaled by alpha / rank")
    dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="on the adapters' input while training; 0 keeps PPO's learner the function that sampled",
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
        min_length=1,
        description="linear layers to adapt, by name: attention wq wk wv wo, SwiGLU w1 w2 w3, the LM head output",
    )

    @field_validator("target_modules")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(LORA_TARGETS))
        if unknown:
            raise ValueError(f"unknown target module(s) {unknown}: choose from {list(LORA_TARGETS)}")
        return names

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class BpbConfig(Section):
    """Bits per byte on held-out text (:mod:`hcx.data.held_out`), logged as ``bpb/<language>``
    at each evaluation (``eval_every``) by every stage whose network predicts tokens."""

    languages: list[str] = Field(
        default_factory=lambda: ["ko", "en", "code"],
        description="held-out text of these languages (ko en code ja zh de fr); [] turns it off",
    )
    max_bytes: int = Field(default=BPB_BYTES, gt=0, description="UTF-8 bytes of each language's text")
    data_dir: str | None = Field(
        default=None,
        description="the shared data directory; null: $HCX_DATA_DIR or ../shared/data, and without "
        "either bits per byte is not logged (a start event says so)",
    )


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
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        default="auto",
        description="compute dtype: bfloat16 autocast (or FSDP bf16 parameters) over float32 master weights; "
        "frozen networks (PPO's reference and reward model) are held in it. auto: bfloat16 where the "
        "device computes it natively (GPUs, CPUs with AMX or AVX512-BF16), float32 elsewhere",
    )
    grad_accum: int = Field(default=1, ge=1, description="micro-batches per optimizer step")
    activation_checkpointing: bool = False
    compile: bool = Field(default=False, description="torch.compile each block (and the pretraining loss)")
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] = Field(
        default="default",
        description="torch.compile mode; max-autotune-no-cudagraphs benchmarks GEMM kernels for each shape "
        "while compiling (slower to start; on CPUs with AMX, Inductor's own bfloat16 GEMMs can beat oneDNN's)",
    )
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = Field(
        default=None,
        description="steps between held-out evaluations (bits per byte, the stage's own); null: at each checkpoint",
    )
    bpb: BpbConfig = Field(default_factory=BpbConfig)
    peak_tflops: float | None = Field(default=None, description="per device, for MFU; guessed for known GPUs")
    resume: bool = True
    lora: LoraConfig | None = Field(
        default=None,
        description="train LoRA adapters instead of every weight (SFT, RM, PPO); null: full fine-tuning",
    )

    @model_validator(mode="after")
    def _check_lora(self) -> LoopConfig:
        if self.lora is not None and (self.parallel.tp != 1 or self.parallel.pp != 1):
            raise ValueError(
                "lora: adapters shard over data-parallel ranks only (FSDP2); parallel.tp and parallel.pp must be 1"
            )
        return self


class TrainPhase(Section):
    """A share of the steps that trains only some parameters (staged continued pretraining).

    ``train`` holds glob patterns over parameter names (``layers.*.attention.*``) and two
    names: ``embeddings`` (input and output embeddings) and ``new_embeddings`` (only their rows
    of tokens that the base model did not have, e.g. after ``hcx tokenizer extend``).
    """

    fraction: float = Field(gt=0, le=1)
    train: list[str] = Field(default_factory=lambda: ["*"], min_length=1)


class PretrainConfig(LoopConfig):
    corpus: str = "runs/corpus/*.jsonl.gz"
    tokenizer: str = "runs/tokenizer"
    output_dir: str = "runs/pretrain"
    max_documents: int | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    init_from: str | None = Field(
        default=None,
        description="continue pretraining from this model (a Hugging Face directory or hub name, or an "
        "hcx checkpoint); its shape replaces `model:`",
    )
    new_token_init: Literal["mean", "random"] = Field(
        default="mean",
        description="init_from with a larger tokenizer: each new token's embeddings are the mean of "
        "the base model's rows of the sub-tokens that spelled it, or random (a control)",
    )
    phases: list[TrainPhase] = Field(
        default_factory=list, description="which parameters train in which share of the steps; [] = all"
    )
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
        phases = sum(p.fraction for p in self.phases)
        if self.phases and abs(phases - 1.0) > 1e-6:
            raise ValueError(f"phases: fractions must sum to 1, got {phases}")
        if self.init_from is not None and self.model != ModelConfig():
            raise ValueError("model: comes from init_from when continuing pretraining; remove one of them")
        for i, stage in enumerate(self.stages):
            if self.init_from is None and stage.seq_len > self.model.max_seq_len:
                raise ValueError(
                    f"stages[{i}].seq_len {stage.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}"
                )
        return self

    def stage_starts(self) -> list[int]:
        """First optimizer step of each stage (the context switch happens at these steps)."""
        return _starts([s.fraction for s in self.stages], self.steps)

    def stage_at(self, step: int) -> tuple[int, ContextStage]:
        index = max(i for i, start in enumerate(self.stage_starts()) if start <= step)
        return index, self.stages[index]

    def phase_at(self, step: int) -> tuple[int, TrainPhase]:
        if not self.phases:
            return 0, TrainPhase(fraction=1.0)
        index = max(
            i
            for i, start in enumerate(_starts([p.fraction for p in self.phases], self.steps))
            if start <= step
        )
        return index, self.phases[index]


def _starts(fractions: list[float], steps: int) -> list[int]:
    starts, acc = [], 0.0
    for fraction in fractions:
        starts.append(round(acc * steps))
        acc += fraction
    return starts
