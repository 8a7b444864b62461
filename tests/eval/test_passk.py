from __future__ import annotations

import math
import random

import pytest

from hcx.eval.passk import mean_pass_at_k, pass_at_k


def exact(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_matches_the_binomial_formula():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 60)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        assert pass_at_k(n, c, k) == pytest.approx(exact(n, c, k), abs=1e-12)


def test_pass_at_k_hand_values():
    assert pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # fewer failures than k: every draw of k contains a pass
    assert pass_at_k(5, 4, 2) == 1.0


def test_pass_at_k_is_stable_for_large_n():
    value = pass_at_k(2000, 3, 100)
    assert value == pytest.approx(exact(2000, 3, 100), rel=1e-9)
    assert 0.0 < value < 1.0


def test_pass_at_1_is_the_fraction_correct_and_mean_over_problems():
    assert mean_pass_at_k([[True, False, False, False], [True, True, False, False]], 1) == pytest.approx(
        0.375
    )


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int):
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)
