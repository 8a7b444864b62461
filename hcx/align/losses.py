"""Alignment losses as small pure functions (SPEC §5), each tested against hand-computed values."""

from __future__ import annotations

import torch
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


# --- PPO (SPEC §5.3) ---------------------------------------------------------------------------


def kl_shaped_rewards(
    score: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float
) -> Tensor:
    """Per-token rewards: −β·(log π − log π_ref) at every response token, plus the score at the last one.

    ``score`` (B,), the others (B, T) over response tokens, ``mask`` 1 for real tokens.
    The summed penalty of a sequence is β times its sampled KL estimate to the reference.
    """
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = mask.long().cumsum(-1).argmax(-1)
    rewards[torch.arange(rewards.shape[0]), last] += score
    return rewards


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over (B, T) response tokens; returns (advantages, returns)."""
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        next_advantage = next_advantage * mask[:, t]
    return advantages, advantages + values


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: Tensor, mask: Tensor, group: object | None = None) -> Tensor:
    """(x − mean) / std over the masked entries; with a process ``group``, mean and std over all its ranks."""
    if group is None:
        mean = masked_mean(x, mask)
        var = masked_mean((x - mean) ** 2, mask)
    else:
        import torch.distributed as dist

        sums = torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()]).double()
        dist.all_reduce(sums, group=group)
        mean = sums[0] / sums[2]
        var = (sums[1] / sums[2] - mean**2).float()
        mean = mean.float()
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def ppo_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip: float = 0.2
) -> Tensor:
    """The clipped surrogate objective, negated: mean over tokens of −min(ρA, clip(ρ)A)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip, 1 + clip) * advantages
    return masked_mean(-torch.minimum(unclipped, clipped), mask)


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float = 0.2
) -> Tensor:
    """Clipped value loss: ½·max((V − R)², (clip(V) − R)²), clip around the rollout's values."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def repeated_ngram_mask(tokens: Tensor, mask: Tensor, n: int = 4) -> Tensor:
    """1 where a token completes an n-gram that already occurred earlier in the same sequence."""
    repeated = torch.zeros_like(mask)
    for b, row in enumerate(tokens.tolist()):
        seen: set[tuple[int, ...]] = set()
        length = int(mask[b].sum())
        for t in range(n - 1, length):
            gram = tuple(row[t - n + 1 : t + 1])
            if gram in seen:
                repeated[b, t] = 1
            seen.add(gram)
    return repeated


def unlikelihood_loss(logprobs: Tensor, repeated: Tensor) -> Tensor:
    """Sequence-level unlikelihood: mean of −log(1 − p) over the tokens that repeat an n-gram (SPEC §5.3)."""
    p = logprobs.exp().clamp(max=1 - 1e-6)
    return masked_mean(-torch.log1p(-p), repeated) if repeated.any() else logprobs.sum() * 0


def repeat_rate(tokens: Tensor, mask: Tensor, n: int = 4) -> float:
    """Share of response tokens that complete an already-seen n-gram (the repetition PPO fights)."""
    return float(repeated_ngram_mask(tokens, mask, n).sum() / mask.sum().clamp(min=1))
