"""Automatic prefix caching: requests reuse the cached blocks of identical prefixes (a shared
system prompt, earlier chat turns, their own blocks after a preemption) and generate exactly what
they generate without the cache, under memory pressure and while blocks are shared and freed."""

from __future__ import annotations

import copy

import torch

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams
from hcx.infer.scoring import score_continuations

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=8, stop_token_ids=[])


def chat(tok, system: str, user: str) -> list[int]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return tok.encode_chat({"messages": messages}, add_generation_prompt=True).ids


def uncached(model, tok, prompts) -> list[list[int]]:
    engine = Engine(model, tok, EngineConfig(prefix_caching=False))
    return [c.token_ids for c in engine.generate(prompts, GREEDY)]


def test_a_shared_system_prompt_is_computed_once(model, tok, korean_turns):
    system = " ".join(korean_turns[:3])
    prompts = [chat(tok, system, turn) for turn in korean_turns[3:9]]
    engine = Engine(model, tok, EngineConfig(block_size=8, num_blocks=256))
    first = engine.generate(prompts[:1], GREEDY)
    rest = engine.generate(prompts[1:], GREEDY)
    assert [c.token_ids for c in first + rest] == uncached(model, tok, prompts)
    shared = len(chat(tok, system, "")) - 2  # the system turn and the user header
    assert engine.scheduler.num_prefix_hits >= 5 * (shared // 8 * 8)
    computed_without = sum(len(p) + 7 for p in prompts)
    assert engine.num_computed_tokens <= computed_without - engine.scheduler.num_prefix_hits
    assert 0 < engine.prefix_cache_hit_rate < 1
    assert engine.pool.num_free == engine.pool.num_blocks and engine.pool.num_cached > 0


def test_the_next_chat_turn_reuses_the_previous_one(model, tok, korean_turns):
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=256))
    messages = [{"role": "user", "content": korean_turns[0]}]
    first = tok.encode_chat({"messages": messages}, add_generation_prompt=True).ids
    [answer] = engine.generate([first], GREEDY)
    messages += [
        {"role": "assistant", "content": answer.text},
        {"role": "user", "content": korean_turns[1]},
    ]
    second = tok.encode_chat({"messages": messages}, add_generation_prompt=True).ids
    hits = engine.scheduler.num_prefix_hits
    [reply] = engine.generate([second], GREEDY)
    common = next(i for i, (a, b) in enumerate(zip(first + answer.token_ids, second, strict=False)) if a != b)
    assert engine.scheduler.num_prefix_hits - hits == min(common, len(second) - 1) // 4 * 4 > 0
    assert reply.token_ids == uncached(model, tok, [second])[0]


def test_eviction_under_memory_pressure_keeps_outputs_exact(model, tok, korean_prompts):
    prompts = korean_prompts[:12]
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=40, max_running=3, max_step_tokens=24))
    twice = engine.generate(prompts + prompts[:4], GREEDY)
    assert engine.pool.num_evicted > 0
    assert [c.token_ids for c in twice] == uncached(model, tok, prompts + prompts[:4])
    assert engine.pool.num_free == engine.pool.num_blocks


def test_a_shared_block_outlives_the_request_that_computed_it(model, tok, korean_turns):
    system = " ".join(korean_turns[:2])
    a, b = chat(tok, system, korean_turns[2]), chat(tok, system, korean_turns[3])
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=256))
    engine.add_request(a, SamplingParams(temperature=0.0, max_new_tokens=30, stop_token_ids=[]), "a")
    for _ in range(3):
        engine.step()
    engine.add_request(b, GREEDY, "b")
    outputs = [t for delta in engine.step() if delta.request_id == "b" for t in delta.token_ids]
    assert engine.scheduler.num_prefix_hits > 0
    engine.abort("a")
    while engine.has_unfinished():
        outputs += [t for delta in engine.step() for t in delta.token_ids]
    assert outputs == uncached(model, tok, [b])[0]
    assert engine.pool.num_free == engine.pool.num_blocks


def test_changed_weights_forget_the_cache(tok, model, korean_prompts):
    mine = copy.deepcopy(model)
    engine = Engine(mine, tok, EngineConfig(block_size=4))
    engine.generate(korean_prompts[:2], GREEDY)
    with torch.no_grad():
        for parameter in mine.parameters():
            parameter.mul_(1.5)
    engine.forget_cached_prefixes()
    hits = engine.scheduler.num_prefix_hits
    again = engine.generate(korean_prompts[:2], GREEDY)
    assert engine.scheduler.num_prefix_hits == hits
    assert [c.token_ids for c in again] == uncached(mine, tok, korean_prompts[:2])


def few_shot_pairs(tok, turns: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """Three questions after the same shots, four choices each (one- and several-token choices)."""
    shots = tok.encode("\n".join(turns[:4]))[:90]
    contexts, continuations = [], []
    for question in turns[4:7]:
        context = shots + tok.encode(question)[:20]
        for choice in turns[7:11]:
            contexts.append(context)
            continuations.append(tok.encode(choice)[: 1 + len(continuations) % 4])
    return contexts, continuations


def test_few_shot_scores_share_the_shots_and_equal_the_plain_forward(model, tok, korean_turns):
    """Choices share their question, questions share the shots, and the scores are those of the
    plain forward (score_continuations) and of the engine without the cache; a pool that must
    evict cached blocks gives them too."""
    contexts, continuations = few_shot_pairs(tok, korean_turns)
    plain = score_continuations(model, contexts, continuations)
    cached = Engine(model, tok, EngineConfig(block_size=4, num_blocks=256, max_step_tokens=256))
    uncached_engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=256, prefix_caching=False))
    tight = Engine(model, tok, EngineConfig(block_size=4, num_blocks=24, max_step_tokens=64))
    for engine in (cached, uncached_engine, tight):
        scores = engine.score(contexts, continuations)
        for got, want in zip(scores, plain, strict=True):
            torch.testing.assert_close(got.logprobs, want.logprobs, rtol=1e-9, atol=0)
            assert got.greedy == want.greedy
        assert engine.pool.num_free == engine.pool.num_blocks
    assert uncached_engine.num_computed_tokens == sum(
        len(c) + len(x) - 1 for c, x in zip(contexts, continuations, strict=True)
    )
    shots = len(tok.encode("\n".join(korean_turns[:4]))[:90])
    questions = contexts[::4]
    shared = sum(3 * ((len(c) - 1) // 4 * 4) for c in questions) + 2 * (shots // 4 * 4)
    assert cached.scheduler.num_prefix_hits >= shared
    assert cached.num_computed_tokens <= uncached_engine.num_computed_tokens - shared
    assert tight.pool.num_evicted > 0
