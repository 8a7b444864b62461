"""Log-probabilities the engine reports: of the prompt (``prompt_logprobs``, what ``echo`` returns)
and of each generated token with its most likely alternatives."""

from __future__ import annotations

import pytest
import torch

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams


@pytest.mark.parametrize("max_step_tokens", [512, 7])
def test_prompt_logprobs_equal_scoring_the_prompt(model, tok, korean_prompts, max_step_tokens):
    """In one prefill or in chunks of 7 tokens beside other requests, the prompt's token
    log-probabilities are those the scoring path computes."""
    prompts = korean_prompts[:3]
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=256, max_step_tokens=max_step_tokens))
    params = SamplingParams(max_new_tokens=0, prompt_logprobs=3)
    outputs = engine.generate(prompts, params)
    scores = engine.score([p[:1] for p in prompts], [p[1:] for p in prompts])
    for prompt, output, score in zip(prompts, outputs, scores, strict=True):
        assert output.token_ids == [] and output.finish_reason == "length"
        assert [e.token_id for e in output.prompt_logprobs] == prompt[1:]
        got = torch.tensor([e.logprob for e in output.prompt_logprobs], dtype=torch.float64)
        torch.testing.assert_close(got, score.logprobs, rtol=1e-9, atol=1e-9)
        for entry in output.prompt_logprobs:
            values = [lp for _, lp in entry.top]
            assert len(values) == 3 and values == sorted(values, reverse=True)
            assert entry.logprob <= values[0] + 1e-12
    assert engine.pool.num_free == engine.pool.num_blocks


def test_prompt_logprobs_survive_preemption(model, tok, korean_prompts):
    prompts = korean_prompts[:6]
    params = SamplingParams(max_new_tokens=10, prompt_logprobs=0, temperature=0.0, stop_token_ids=[])
    alone = [Engine(model, tok).generate([p], params)[0] for p in prompts]
    tight = Engine(model, tok, EngineConfig(block_size=4, num_blocks=24, max_step_tokens=16))
    together = tight.generate(prompts, params)
    assert tight.scheduler.num_preemptions > 0
    for a, b in zip(alone, together, strict=True):
        assert b.token_ids == a.token_ids
        assert [e.token_id for e in b.prompt_logprobs] == [e.token_id for e in a.prompt_logprobs]
        torch.testing.assert_close(
            torch.tensor([e.logprob for e in b.prompt_logprobs]),
            torch.tensor([e.logprob for e in a.prompt_logprobs]),
            rtol=1e-9,
            atol=1e-9,
        )


def test_top_logprobs_rank_the_alternatives_of_each_generated_token(model, tok, korean_prompts):
    engine = Engine(model, tok)
    greedy, sampled = engine.generate(
        korean_prompts[:2],
        [
            SamplingParams(temperature=0.0, max_new_tokens=8, top_logprobs=5, stop_token_ids=[]),
            SamplingParams(temperature=1.0, max_new_tokens=8, top_logprobs=2, seed=3, stop_token_ids=[]),
        ],
    )
    assert len(greedy.top_logprobs) == 8 and len(sampled.top_logprobs) == 8
    for token, logprob, top in zip(greedy.token_ids, greedy.logprobs, greedy.top_logprobs, strict=True):
        assert len(top) == 5 and top[0][0] == token and top[0][1] == pytest.approx(logprob, rel=1e-12)
        assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    for logprob, top in zip(sampled.logprobs, sampled.top_logprobs, strict=True):
        assert len(top) == 2 and logprob <= top[0][1] + 1e-12
    # the reported log-probabilities are the model's: scoring the answer gives the same numbers
    [score] = engine.score([korean_prompts[1]], [sampled.token_ids])
    torch.testing.assert_close(torch.tensor(sampled.logprobs, dtype=torch.float64), score.logprobs)


def test_max_new_tokens_zero_needs_prompt_logprobs():
    with pytest.raises(ValueError, match="needs prompt_logprobs"):
        SamplingParams(max_new_tokens=0)
