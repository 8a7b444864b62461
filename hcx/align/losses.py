"""Alignment losses as small pure functions (SPEC §5), each tested against hand-computed values."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(chosen: Tensor, rejected: Tensor) -> Tensor:
    """Reward-model ranking loss, mean of −log σ(r_chosen − r_rejected) over the pairs (SPEC §5.2)."""
    return -F.logsigmoid(chosen.float() - rejected.float()).mean()


def ranking_pairs(scores: list[float]) -> list[tuple[int, int]]:
    """All (better, worse) index pairs of one prompt's ranked responses; ties give no pair."""
    return [(i, j) for i, si in enumerate(scores) for j, sj in enumerate(scores) if si > sj]


def pairwise_accuracy(chosen: Tensor, rejected: Tensor) -> float:
    return (chosen > rejected).float().mean().item()
