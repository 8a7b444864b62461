"""The ``sft:`` and ``rm:`` sections of a recipe (SPEC §5.1–§5.2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from hcx.align.batching import Strategy
from hcx.config import Section, expand_variables
from hcx.records import Policy
from hcx.tokenizer.config import ChatTokens
from hcx.train.config import LoopConfig, OptimConfig


class DataSource(Section):
    """One jsonl(.gz) file and its language (``ko`` counts as Korean for the mixing ratio)."""

    path: str
    language: str

    @field_validator("path")
    @classmethod
    def _expand(cls, path: str) -> str:
        return expand_variables(path)


def _sft_sources() -> list[DataSource]:
    return [
        DataSource(path="${data_dir}/sft/ko.jsonl.gz", language="ko"),
        DataSource(path="${data_dir}/sft/en.jsonl.gz", language="en"),
    ]


def _preference_sources() -> list[DataSource]:
    return [
        DataSource(path="${data_dir}/preference/ko.jsonl", language="ko"),
        DataSource(path="${data_dir}/preference/en.jsonl.gz", language="en"),
    ]


class SftConfig(LoopConfig):
    """Supervised fine-tuning from a pretrained Hugging Face-format model directory."""

    init: str = Field(default="runs/pretrain/hf", description="model to start from (a `hcx pretrain` export)")
    tokenizer: str | None = Field(
        default=None, description="tokenizer directory; default: the init directory"
    )
    chat: ChatTokens | None = Field(
        default=None, description="chat template and tokens of a Hugging Face tokenizer lacking them"
    )
    output_dir: str = "runs/sft"
    export_hf: str | None = Field(
        default=None, description="where the final model goes; default OUTPUT_DIR/hf"
    )
    sources: list[DataSource] = Field(default_factory=_sft_sources)
    korean_ratio: float = Field(default=0.5, ge=0, le=1, description="share of Korean samples in the mix")
    max_samples: int | None = None
    held_out: int = Field(
        default=200, ge=0, description="samples per language kept out for the held-out loss"
    )
    max_len: int | None = Field(
        default=None, description="longest sample in tokens; default: the model context"
    )
    batching: Strategy = "grouped"
    max_tokens: int = Field(default=16_384, gt=0, description="token budget of one grouped or packed batch")
    seq_len: int = Field(default=2048, gt=0, description="row length when packing")
    batch_size: int = Field(default=8, gt=0, description="samples per batch when padding naively")
    epochs: int = Field(default=3, gt=0)
    bad_records: Policy = "skip"
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(lr=2e-5, warmup_steps=50, weight_decay=0.0)
    )


class RmConfig(LoopConfig):
    """Reward model: the SFT model plus a linear head, Bradley-Terry loss, one epoch (SPEC §5.2)."""

    init: str = Field(default="runs/sft/hf", description="the post-SFT model directory")
    tokenizer: str | None = None
    chat: ChatTokens | None = Field(
        default=None, description="chat template and tokens of a Hugging Face tokenizer lacking them"
    )
    output_dir: str = "runs/rm"
    export_dir: str | None = Field(default=None, description="final reward model; default OUTPUT_DIR/final")
    sources: list[DataSource] = Field(default_factory=_preference_sources)
    held_out: int = Field(default=50, ge=0, description="prompts per source kept out for accuracy")
    max_samples: int | None = None
    max_len: int | None = None
    prompts_per_step: int = Field(default=16, gt=0, description="prompts per step; all their pairs go in it")
    epochs: int = Field(default=1, gt=0, description="one epoch: the report saw overfitting after that")
    reward_clip: float = Field(default=5.0, gt=0, description="normalised rewards are clipped to ±this")
    bad_records: Policy = "skip"
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(lr=1e-5, warmup_steps=10, weight_decay=0.0)
    )

    @model_validator(mode="after")
    def _check(self) -> RmConfig:
        if self.parallel.tp != 1:
            raise ValueError("rm.parallel.tp must be 1 (the reward head is not tensor-parallel)")
        return self


class EarlyStopConfig(Section):
    """When PPO stops before its last iteration (SPEC §5.3: do not overfit length and format)."""

    max_kl: float | None = Field(default=20.0, description="mean per-sequence KL to the reference, in nats")
    max_length_drift: float | None = Field(
        default=1.0, description="relative change of the mean response length from the first iteration"
    )
    patience: int | None = Field(
        default=3, description="validation evaluations without a new best reward before stopping"
    )
    min_delta: float = Field(
        default=0.0, description="improvement that counts as a new best validation reward"
    )


class RayRolloutConfig(Section):
    """Where ``rollouts: ray`` runs its rollout actors (SPEC §5.3: asynchronous processing across nodes).

    Actors need only the ``hcx`` package on their node: weights, tokenizer and prompts reach
    them through Ray's object store, never through a shared file system.
    """

    address: str | None = Field(
        default=None, description="an existing cluster ('auto', 'ray://head:10001'); None starts a local Ray"
    )
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs of a local Ray (None: all)")
    worker_cpus: float = Field(default=1.0, gt=0, description="CPUs reserved by each rollout actor")
    worker_gpus: float = Field(default=0.0, ge=0, description="GPUs reserved by each rollout actor")


class PpoConfig(LoopConfig):
    """PPO with four networks (SPEC §5.3): policy and frozen reference from SFT, reward model, value."""

    policy: str = Field(default="runs/sft/hf", description="the post-SFT model (policy and reference)")
    reward_model: str = Field(default="runs/rm/final", description="`hcx rm` export, with its statistics")
    chat: ChatTokens | None = Field(
        default=None, description="chat template and tokens of a Hugging Face tokenizer lacking them"
    )
    reward: Literal["model", "hangul", "brevity"] = Field(
        default="model", description="the reward model, or a rule-based reward for experiments and tests"
    )
    value_init: Literal["reward_model", "policy"] = "reward_model"
    output_dir: str = "runs/ppo"
    export_hf: str | None = None
    prompts: list[DataSource] = Field(default_factory=_sft_sources)
    held_out: int = Field(default=32, ge=0, description="validation prompts for early stopping")
    max_prompt_len: int = 256
    bad_records: Policy = "skip"
    steps: int | None = Field(default=100, description="PPO iterations")
    rollouts_per_iteration: int = Field(default=64, gt=0)
    minibatch_size: int = Field(default=16, gt=0)
    ppo_epochs: int = Field(default=2, gt=0)
    experience_batch: int = Field(
        default=16,
        gt=0,
        description="finished rollouts scored together as they arrive (asynchronous PPO; "
        "synchronous PPO scores the whole batch at once)",
    )
    forward_tokens: int = Field(
        default=2048,
        gt=0,
        description="rows × longest sequence of one forward, scoring or learning: sequences of similar "
        "length go together, and a minibatch over the budget accumulates gradients over several",
    )
    max_new_tokens: int = Field(default=128)
    temperature: float = Field(
        default=1.0,
        gt=0,
        description="rollouts sample softmax(logits / temperature); the learner's ratio, the reference's "
        "log-probs and the KL penalty use that same tempered distribution",
    )
    kl_coef: float = Field(default=0.04, ge=0, description="KL penalty coefficient (the report's 0.04)")
    adaptive_kl: bool = False
    target_kl: float = Field(default=6.0, description="adaptive controller's target per-sequence KL")
    kl_horizon: int = 10_000
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_clip: float = 0.2
    value_coef: float = 0.1
    entropy_coef: float = 0.0
    unlikelihood_weight: float = Field(default=0.1, ge=0, description="weight of sequence-level unlikelihood")
    unlikelihood_ngram: int = Field(default=4, ge=1)
    length_penalty: float = Field(
        default=0.0, ge=0, description="subtracted from the score per response token"
    )
    asynchronous: bool = Field(default=True, description="generate the next rollouts while learning")
    max_staleness: int = Field(default=1, ge=0, description="policy versions a rollout may lag behind")
    rollouts: Literal["thread", "ray"] = Field(
        default="thread", description="rollout generation: a thread in this process, or Ray actors"
    )
    rollout_workers: int = Field(default=1, ge=1, description="Ray rollout actors (rollouts: ray)")
    rollout_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch CPU threads of the asynchronous rollout thread; the learner keeps the rest "
        "(default: half the process's threads). Synchronous PPO generates in the learner's thread",
    )
    ray: RayRolloutConfig = Field(default_factory=RayRolloutConfig)
    eval_every: int = Field(default=5, gt=0, description="iterations between validation rewards")
    early_stop: EarlyStopConfig = Field(default_factory=EarlyStopConfig)
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(lr=1e-6, warmup_steps=10, weight_decay=0.0)
    )

    @model_validator(mode="after")
    def _check_parallel(self) -> PpoConfig:
        if self.parallel.tp != 1 or self.parallel.pp != 1:
            raise ValueError(
                "ppo.parallel: PPO shards its networks over data-parallel ranks only (tp and pp must be 1)"
            )
        if self.rollouts == "thread" and self.rollout_workers != 1:
            raise ValueError(
                "ppo.rollout_workers > 1 needs ppo.rollouts: ray (the thread backend has one worker)"
            )
        return self
