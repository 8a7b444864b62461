from __future__ import annotations

import math

import pytest
import torch

from hcx.align.losses import (
    bradley_terry_loss,
    gae,
    kl_shaped_rewards,
    masked_mean,
    pairwise_accuracy,
    ppo_policy_loss,
    ranking_pairs,
    repeat_rate,
    repeated_ngram_mask,
    unlikelihood_loss,
    value_loss,
    whiten,
)


def test_bradley_terry_by_hand() -> None:
    chosen = torch.tensor([2.0, 0.0, -1.0])
    rejected = torch.tensor([0.0, 0.0, 1.0])
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0) + math.log1p(math.exp(2.0))) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest_approx(expected)


def pytest_approx(value: float):
    return pytest.approx(value, rel=1e-6)


def test_bradley_terry_gradient_pushes_chosen_up() -> None:
    chosen = torch.tensor([0.5], requires_grad=True)
    rejected = torch.tensor([0.5], requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    assert chosen.grad.item() == pytest_approx(-0.5)
    assert rejected.grad.item() == pytest_approx(0.5)


def test_ranking_pairs_and_accuracy() -> None:
    assert ranking_pairs([3.0, 1.0, 2.0]) == [(0, 1), (0, 2), (2, 1)]
    assert ranking_pairs([1.0, 1.0]) == []
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 3.0]), torch.tensor([0.0, 1.0, 2.0])) == pytest_approx(
        2 / 3
    )


def test_gae_by_hand() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.4, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d2 = 1.0 - 0.4  # last real token: no next value
    d1 = 0.0 + 0.9 * 0.4 - 0.2
    d0 = 0.0 + 0.9 * 0.2 - 0.5
    a2, a1 = d2, d1 + 0.45 * d2
    a0 = d0 + 0.45 * a1
    assert advantages[0].tolist() == pytest.approx([a0, a1, a2, 0.0])
    assert returns[0, :3].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4])


def test_kl_shaped_rewards_sum_to_score_minus_beta_kl() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    rewards = kl_shaped_rewards(torch.tensor([2.0]), logprobs, ref, mask, kl_coef=0.04)
    assert rewards[0].tolist() == pytest.approx([-0.04 * 0.5, -0.04 * -1.0, 2.0, 0.0])
    kl = ((logprobs - ref) * mask).sum()
    assert rewards.sum().item() == pytest_approx(2.0 - 0.04 * kl.item())


def test_ppo_policy_loss_clips() -> None:
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
    advantages = torch.tensor([[1.0, -1.0, 2.0]])
    mask = torch.ones(1, 3)
    # ratio 1.5 with A=1 clips at 1.2; ratio 0.5 with A=-1: min(-0.5, -0.8) = -0.8; ratio 1 with A=2 gives 2
    expected = -(1.2 - 0.8 + 2.0) / 3
    assert ppo_policy_loss(new, old, advantages, mask, clip=0.2).item() == pytest_approx(expected)


def test_value_loss_clips_around_old_values() -> None:
    values, old, returns = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # clipped value 0.2 is further from the return: max(0, 0.64) / 2
    assert value_loss(values, old, returns, torch.ones(1, 1), clip=0.2).item() == pytest_approx(0.32)


def test_repeated_ngrams_and_unlikelihood() -> None:
    tokens = torch.tensor([[1, 2, 3, 4, 1, 2, 3, 4, 5, 0]])
    mask = torch.tensor([[1] * 9 + [0]])
    repeated = repeated_ngram_mask(tokens, mask, n=4)
    assert repeated[0].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert repeat_rate(tokens, mask, n=4) == pytest_approx(1 / 9)
    assert repeat_rate(tokens, mask, n=2) == pytest_approx(3 / 9)
    logprobs = torch.log(torch.full((1, 10), 0.5))
    assert unlikelihood_loss(logprobs, repeated.float()).item() == pytest_approx(math.log(2))
    assert unlikelihood_loss(logprobs, torch.zeros(1, 10)).item() == 0.0


def test_whiten_is_zero_mean_unit_variance_on_mask() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    white = whiten(x, mask)
    assert masked_mean(white, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_mean(white**2, mask).item() == pytest.approx(1.0, abs=1e-4)
    assert white[0, 3] == 0
