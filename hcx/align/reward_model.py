"""The reward model (SPEC §5.2): the post-SFT decoder with a randomly initialised linear head.

The head reads the hidden state of each sequence's last token (the response's
``<|endofturn|>``) and outputs one scalar. It has no bias, as Hugging Face's
``LlamaForSequenceClassification`` ``score`` layer, so the model exports to that class.
After training, the mean and standard deviation of the rewards over the training responses
are stored; PPO normalises rewards with them and clips the result (:class:`RewardStats`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from hcx.model import Transformer

STATS_FILE = "reward_stats.json"


class RewardModel(nn.Module):
    def __init__(self, backbone: Transformer, seed: int | None = None) -> None:
        super().__init__()
        backbone.output = None  # the backbone now returns final hidden states
        self.backbone = backbone
        self.head = nn.Linear(backbone.cfg.dim, 1, bias=False)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            std = 1.0 / (backbone.cfg.dim + 1) ** 0.5
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator) * std)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Rewards (B,) of right-padded sequences ``tokens`` (B, T) whose real lengths are ``lengths``."""
        hidden = self.backbone(tokens)
        last = hidden[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]
        return self.head(last).squeeze(-1).float()


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
