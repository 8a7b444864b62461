"""Several samples of one prompt (``n > 1``): the prompt is computed once and its cache blocks are
shared, and every sample is what it would be alone with its seed."""

from __future__ import annotations

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams


def test_samples_compute_the_prompt_once_and_equal_separate_requests(model, tok, korean_prompts):
    prompt = max(korean_prompts, key=len)
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=7, stop_token_ids=[])
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=256, max_step_tokens=64))
    samples = engine.sample(prompt, params, n=4)
    # the first sample computes the prompt; each other one only the prompt's last token, then its answer
    assert engine.num_computed_tokens == len(prompt) + 5 + 3 * (1 + 5)
    assert engine.pool.num_free == engine.pool.num_blocks
    separately = [
        Engine(model, tok).generate([prompt], params.model_copy(update={"seed": 7 + i}))[0].token_ids
        for i in range(4)
    ]
    assert [s.token_ids for s in samples] == separately
    assert len({tuple(s.token_ids) for s in samples}) > 1
    assert [s.request_id.rsplit("-", 1)[1] for s in samples] == ["0", "1", "2", "3"]


def test_same_seed_gives_the_same_samples(model, tok, korean_prompts):
    params = SamplingParams(temperature=0.9, top_p=0.95, max_new_tokens=8, seed=123, stop_token_ids=[])
    first = Engine(model, tok).sample(korean_prompts[0], params, n=3)
    again = Engine(model, tok).sample(korean_prompts[0], params, n=3)
    assert [s.token_ids for s in first] == [s.token_ids for s in again]


def test_shared_blocks_survive_the_parent_finishing_and_preemption(model, tok, korean_prompts):
    """The first sample stops early and frees its hold on the shared prompt blocks while the others
    still read them; a pool too small for all of them preempts and recomputes some."""
    prompt = korean_prompts[1]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=[])
    reference = Engine(model, tok).generate([prompt], greedy)[0].token_ids
    blocks = -(-(len(prompt) + 12) // 4)
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=blocks + 1, max_step_tokens=32))
    requests = engine.make_samples(prompt, greedy, 4, "x")
    requests[0].params = greedy.model_copy(update={"max_new_tokens": 2})
    for request in requests:
        engine.add(request)
    outputs = {c.request_id: c.token_ids for c in engine._drain(requests, progress=False)}
    assert outputs["x-0"] == reference[:2]
    assert [outputs[f"x-{i}"] for i in (1, 2, 3)] == [reference] * 3
    assert engine.scheduler.num_preemptions > 0
    assert engine.pool.num_free == engine.pool.num_blocks
