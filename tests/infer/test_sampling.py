"""Top-k/top-p filtering and per-request sampling (SPEC §5.3 engine)."""

from __future__ import annotations

import math

import torch

from hcx.infer.sampling import SamplingParams, filter_top_k_top_p, inverse_transform, sample_tokens


def test_top_k_and_top_p_keep_the_right_tokens():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]] * 3)
    logits = probs.log()
    kept = filter_top_k_top_p(logits, torch.tensor([2, 0, 4]), torch.tensor([1.0, 0.8, 0.6]))
    assert torch.isfinite(kept).tolist() == [
        [True, True, False, False, False],  # top-2
        [True, True, True, False, False],  # 0.5 + 0.2 < 0.8, the third crosses it
        [True, True, False, False, False],  # top-4 then nucleus 0.6
    ]
    torch.testing.assert_close(kept[1, :3], logits[1, :3])


def test_filters_work_on_shuffled_vocabularies():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    kept = filter_top_k_top_p(logits, torch.tensor([2]), torch.tensor([1.0]))
    assert torch.isfinite(kept).tolist() == [[False, True, False, True]]


def test_a_vanishing_top_p_still_keeps_the_most_likely_token():
    """A top_p that rounds to 0 in float32 (the fuzzer's 5e-324) must not mask every token."""
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    kept = filter_top_k_top_p(logits, torch.tensor([0]), torch.tensor([5e-324]))
    assert torch.isfinite(kept).tolist() == [[False, True, False, False]]


def test_greedy_rows_take_the_argmax_and_logprobs_are_unfiltered():
    logits = torch.tensor([[1.0, 4.0, 2.0], [3.0, 0.0, 1.0]])
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.5, top_k=1)]
    generators = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    tokens, logprobs = sample_tokens(logits, params, generators)
    assert tokens.tolist() == [1, 0]
    expected = logits.log_softmax(-1)[[0, 1], [1, 0]]
    torch.testing.assert_close(logprobs, expected)


def test_tempered_logprobs_are_of_the_distribution_sampled_from():
    logits = torch.tensor([[1.0, 4.0, 2.0], [3.0, 0.0, 1.0], [0.5, 0.0, 2.0]])
    params = [
        SamplingParams(temperature=0.5, tempered_logprobs=True),
        SamplingParams(temperature=0.5),
        SamplingParams(temperature=0.0, tempered_logprobs=True),
    ]
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    tokens, logprobs = sample_tokens(logits, params, generators)
    rows = torch.arange(3)
    expected = torch.stack(
        [(logits[0] / 0.5).log_softmax(-1), logits[1].log_softmax(-1), logits[2].log_softmax(-1)]
    )[rows, tokens]
    torch.testing.assert_close(logprobs, expected)
    assert tokens[2] == 2


def test_sampling_follows_the_tempered_distribution():
    logits = torch.tensor([math.log(0.7), math.log(0.2), math.log(0.1)])
    params = [SamplingParams(temperature=1.0)]
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(3)
    for _ in range(4000):
        token, _ = sample_tokens(logits[None], params, [generator])
        counts[token] += 1
    torch.testing.assert_close(counts / 4000, torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)


def test_a_request_draw_depends_on_its_own_generator_only():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    params = [SamplingParams(temperature=1.0, seed=i) for i in range(4)]

    def draw(rows):
        gens = [torch.Generator().manual_seed(10 + r) for r in rows]
        return sample_tokens(logits[rows], [params[r] for r in rows], gens)[0].tolist()

    alone = [draw([r])[0] for r in range(4)]
    assert draw([0, 1, 2, 3]) == alone
    assert draw([3, 1]) == [alone[3], alone[1]]


def test_padding_ids_past_the_tokenizer_are_never_drawn_but_count_in_logprobs():
    """A model's vocabulary is rounded up past the tokenizer's; those ids decode to nothing."""
    logits = torch.tensor([[1.0, 2.0, 0.5, 9.0], [0.0, 1.0, 3.0, 8.0]])
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, top_k=2)]
    generators = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)]
    tokens, logprobs = sample_tokens(logits, params, generators, num_tokens=3)
    assert tokens[0] == 1 and tokens[1] in (1, 2)
    torch.testing.assert_close(logprobs, logits.log_softmax(-1).gather(-1, tokens[:, None])[:, 0])


def test_inverse_transform_never_draws_a_token_of_probability_zero():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    # 0 and the largest float32 below 1, which rounds the scaled draw up to the total.
    for draw in (0.0, 0.25, 0.5, 0.75, float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))):
        tokens = inverse_transform(probs, torch.tensor([draw, draw]))
        assert tokens[1] == 2 and tokens[0] in (1, 3)
        assert tokens[0] == (1 if draw < 0.5 else 3)


def test_inverse_transform_intervals_are_the_probabilities():
    """Evenly spaced draws land on each token in proportion to its probability."""
    probs = torch.softmax(torch.randn(1, 200, generator=torch.Generator().manual_seed(0)) * 2, -1)
    n = 50_000
    tokens = inverse_transform(probs.expand(n, -1), (torch.arange(n) + 0.5) / n)
    counts = torch.bincount(tokens, minlength=200).float() / n
    torch.testing.assert_close(counts, probs[0], atol=1.5 / n, rtol=0)  # each count within one draw
