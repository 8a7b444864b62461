"""The token-share mix: rates per segment, knowledge repeats, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from hcx.data.mix import copies, doc_uniform, plan_mix, solve_rate


def segment(n: int, seed: int, mean_tokens: float, knowledge_fraction: float = 0.0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, int(2 * mean_tokens), size=n).astype(float)
    weights = np.where(rng.random(n) < knowledge_fraction, 3.0, 1.0)
    u = np.array([doc_uniform(f"{seed}/{i}", 0) for i in range(n)])
    return tokens, weights, u


def achieved(rate, tokens, weights, u):
    return sum(t * copies(rate * w, x) for t, w, x in zip(tokens, weights, u, strict=True))


@pytest.mark.parametrize("shares", [(1, 1, 1), (2, 1, 1), (1, 3, 0.5)])
def test_plan_meets_token_shares_within_two_percent(shares):
    index = {
        "korean": segment(3000, 1, 40, knowledge_fraction=0.1),
        "multilingual": segment(8000, 2, 60),
        "code": segment(300, 3, 2500),
    }
    share = dict(zip(("korean", "multilingual", "code"), np.array(shares) / sum(shares), strict=True))
    plan = plan_mix(index, share, total_tokens=None, seed=0)
    out = {s: achieved(plan.rates[s], *index[s]) for s in index}
    total = sum(out.values())
    for s in index:
        assert abs(out[s] / total - share[s]) < 0.02
        assert out[s] == pytest.approx(plan.planned_tokens[s])
    limiting = min(index, key=lambda s: plan.available_tokens[s] / share[s])
    assert plan.rates[limiting] == pytest.approx(1.0, abs=0.05)


def test_total_tokens_upsamples_every_segment():
    index = {s: segment(500, i, 50) for i, s in enumerate(("korean", "multilingual", "code"))}
    total = 6 * max(float((t * w).sum()) for t, w, _ in index.values())
    plan = plan_mix(
        index, {"korean": 1 / 3, "multilingual": 1 / 3, "code": 1 / 3}, total_tokens=int(total), seed=0
    )
    assert all(rate > 1 for rate in plan.rates.values())
    assert sum(plan.planned_tokens.values()) == pytest.approx(total, rel=0.02)


def test_knowledge_weight_repeats_documents():
    assert copies(3.0, 0.99) == 3
    assert copies(0.5, 0.2) == 1 and copies(0.5, 0.7) == 0
    tokens, weights, u = (
        np.ones(1000),
        np.full(1000, 2.5),
        np.array([doc_uniform(str(i), 0) for i in range(1000)]),
    )
    assert achieved(1.0, tokens, weights, u) == pytest.approx(2500, rel=0.05)


def test_a_segment_with_a_share_but_no_documents_is_an_error():
    index = {"korean": segment(10, 1, 10), "multilingual": segment(10, 2, 10)}
    with pytest.raises(ValueError, match="code"):
        plan_mix(index, {"korean": 0.4, "multilingual": 0.3, "code": 0.3}, None, 0)


def test_solve_rate_is_deterministic_and_monotone():
    tokens, weights, u = segment(1000, 5, 30)
    small, large = solve_rate(5_000, tokens, weights, u), solve_rate(20_000, tokens, weights, u)
    assert small < large
    assert solve_rate(5_000, tokens, weights, u) == small
    assert doc_uniform("a", 1) == doc_uniform("a", 1) != doc_uniform("a", 2)
