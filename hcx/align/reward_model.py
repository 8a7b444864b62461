"""The reward model (SPEC §5.2): the post-SFT decoder with a randomly initialised linear head.

The head reads the hidden state of each sequence's last token (the response's
``<|endofturn|>``) and outputs one scalar. It has no bias, as Hugging Face's
``*ForSequenceClassification`` ``score`` layer (Llama, Mistral or Qwen2), so the model exports to that class.
After training, the mean and standard deviation of the rewards over the training responses
are stored; PPO normalises rewards with them and clips the result (:class:`RewardStats`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from hcx.model import ModelConfig, Transformer
from hcx.model.hf import export_hf
from hcx.model.linear import Linear
from hcx.model.load import load_model

if TYPE_CHECKING:
    from hcx.train.trainer import Trainer

STATS_FILE = "reward_stats.json"


class RewardModel(nn.Module):
    def __init__(self, backbone: Transformer, seed: int | None = None) -> None:
        super().__init__()
        backbone.output = None  # the backbone now returns final hidden states
        self.backbone = backbone
        self.head = Linear(backbone.cfg.dim, 1, bias=False)  # row-bucketed like the backbone's
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            std = 1.0 / (backbone.cfg.dim + 1) ** 0.5
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator) * std)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Rewards (B,) of right-padded sequences ``tokens`` (B, T) whose real lengths are ``lengths``."""
        hidden = self.backbone(tokens)
        last = hidden[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]
        return self.head(last).squeeze(-1).float()

    def token_values(self, tokens: Tensor) -> Tensor:
        """The head at every position (B, T): PPO's value network is this model, initialised from the RM."""
        return self.head(self.backbone(tokens)).squeeze(-1).float()


@dataclass(frozen=True)
class RewardStats:
    """Reward normalisation measured over the training responses, and the clip range used by PPO."""

    mean: float
    std: float
    clip: float = 5.0

    def normalize(self, rewards: Tensor) -> Tensor:
        return ((rewards - self.mean) / max(self.std, 1e-6)).clamp(-self.clip, self.clip)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / STATS_FILE
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> RewardStats:
        path = Path(directory) / STATS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: the reward model has no normalisation statistics; train it with `hcx rm` to completion"
            )
        return cls(**json.loads(path.read_text()))

    @classmethod
    def measure(cls, rewards: Tensor, clip: float = 5.0) -> RewardStats:
        return cls(float(rewards.mean()), float(rewards.std(unbiased=False)), clip)


def shard_reward_model(model: RewardModel, trainer: Trainer) -> RewardModel:
    """Put a trained reward (or value) model on the trainer's device and mesh: the backbone as any
    trained decoder, the head as its own FSDP unit (PPO's values run it outside ``forward``)."""
    model.backbone = trainer.shard(model.backbone)
    model.head.to(trainer.device)
    if trainer.mesh.dp > 1:
        from torch.distributed.fsdp import fully_shard

        fully_shard(model.head, mesh=trainer.mesh.mesh["dp"])
        fully_shard(model, mesh=trainer.mesh.mesh["dp"])
    return model


def export_reward_model(
    state: dict[str, Tensor],
    cfg: ModelConfig,
    out: str | Path,
    tokenizer_dir: str | Path,
    stats: RewardStats,
) -> Path:
    """Write the reward model as a Hugging Face ``<Family>ForSequenceClassification`` directory.

    ``state`` is the full (gathered) state dict of a :class:`RewardModel`. The directory also
    holds the tokenizer and ``reward_stats.json``; ``transformers`` scores the last non-padding
    token, which is where our head reads (sequences are right-padded with the pad token).
    """
    backbone = Transformer(cfg)
    backbone.output = None
    backbone.load_state_dict(
        {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    )
    out = export_hf(backbone, out, tokenizer_dir)
    weights = load_file(out / "model.safetensors")
    weights["score.weight"] = state["head.weight"].detach().float().contiguous().cpu()
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    family = config["architectures"][0].removesuffix("ForCausalLM")  # Llama, Mistral or Qwen2
    config.update(
        architectures=[f"{family}ForSequenceClassification"], id2label={"0": "reward"}, label2id={"reward": 0}
    )
    config_path.write_text(json.dumps(config, indent=2))
    stats.save(out)
    return out


def load_reward_model(directory: str | Path) -> tuple[RewardModel, RewardStats]:
    """A reward model exported by :func:`export_reward_model`, with its normalisation statistics."""
    directory = Path(directory)
    stats = RewardStats.load(directory)
    loaded = load_model(directory, trainable=True, keep_extra=True)
    backbone, extra = loaded.model, loaded.extra
    if "score.weight" not in extra or backbone.output is not None:
        raise ValueError(f"{directory}: not a reward model export (expected a 'score' head and no lm_head)")
    model = RewardModel(backbone)
    with torch.no_grad():
        model.head.weight.copy_(extra["score.weight"])
    return model, stats
