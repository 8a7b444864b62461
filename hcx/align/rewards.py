"""What PPO maximises: the reward model's normalised, clipped score, or a rule-based reward.

Rule-based rewards are for experiments and tests on a CPU (SPEC §5.3 tests): they have a
known optimum, so "reward rises while KL stays bounded" is checkable without a trained RM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from hcx.align.batching import right_pad
from hcx.align.reward_model import RewardModel, RewardStats


class Reward(Protocol):
    def __call__(self, sequences: Sequence[Sequence[int]], responses: Sequence[str]) -> Tensor:
        """One score per rollout; ``sequences`` are prompt + response ids, ``responses`` the texts."""
        ...


def hangul_share(text: str) -> float:
    """Share of the non-space characters that are Hangul syllables or jamo."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    hangul = sum(
        "\uac00" <= c <= "\ud7a3" or "\u1100" <= c <= "\u11ff" or "\u3130" <= c <= "\u318f" for c in chars
    )
    return hangul / len(chars)


class HangulReward:
    def __call__(self, sequences: Sequence[Sequence[int]], responses: Sequence[str]) -> Tensor:
        return torch.tensor([hangul_share(r) for r in responses])


class BrevityReward:
    """1 for an empty answer down to 0 at ``max_chars`` characters: its optimum is short answers."""

    def __init__(self, max_chars: int = 200):
        self.max_chars = max_chars

    def __call__(self, sequences: Sequence[Sequence[int]], responses: Sequence[str]) -> Tensor:
        return torch.tensor([1.0 - min(len(r), self.max_chars) / self.max_chars for r in responses])


class ModelReward:
    """The reward model's score at the last token, normalised by its training statistics and clipped."""

    def __init__(self, model: RewardModel, stats: RewardStats, pad_id: int):
        self.model, self.stats, self.pad_id = model.eval(), stats, pad_id

    @torch.no_grad()
    def __call__(self, sequences: Sequence[Sequence[int]], responses: Sequence[str]) -> Tensor:
        device = self.model.head.weight.device
        lengths = torch.tensor([len(s) for s in sequences], device=device)
        rewards = self.model(right_pad(sequences, self.pad_id).to(device), lengths)
        return self.stats.normalize(rewards.float().cpu())
