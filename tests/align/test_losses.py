from __future__ import annotations

import math

import pytest
import torch

from hcx.align.losses import bradley_terry_loss, pairwise_accuracy, ranking_pairs


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
