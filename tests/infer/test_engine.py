"""Generation with continuous batching: equal to uncached greedy decoding, and to each
request alone, whatever joins, leaves, waits or is preempted (SPEC §5.3 engine)."""

from __future__ import annotations

import pytest
import torch

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams
from hcx.model import Transformer


def greedy_without_cache(model: Transformer, prompt: list[int], max_new_tokens: int) -> list[int]:
    """The reference: recompute the whole sequence for every new token, no cache at all."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt) :]


def greedy(max_new_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, stop_token_ids=[])


def alone(model, tok, prompts, params) -> list[list[int]]:
    """Each request through its own engine, one at a time."""
    return [Engine(model, tok).generate([p], sp)[0].token_ids for p, sp in zip(prompts, params, strict=True)]


def test_engine_greedy_equals_recomputation_without_cache(model, tok, korean_prompts):
    prompts = korean_prompts[:4]
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=64))
    outputs = engine.generate(prompts, greedy(12))
    for prompt, output in zip(prompts, outputs, strict=True):
        assert output.token_ids == greedy_without_cache(model, prompt, 12)
        assert output.finish_reason == "length"
        assert len(output.logprobs) == 12
        assert output.text == tok.decode(output.token_ids)


def test_continuous_batching_returns_what_each_request_gets_alone(model, tok, korean_prompts):
    """Mixed lengths, a small step budget (prompts prefill in chunks beside decodes) and
    fewer slots than requests (requests join as others leave)."""
    prompts = korean_prompts[:10]
    params = [greedy(3 + 2 * (i % 5)) for i in range(len(prompts))]
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=128, max_running=4, max_step_tokens=12))
    batched = engine.generate(prompts, params)
    assert [o.token_ids for o in batched] == alone(model, tok, prompts, params)
    assert engine.pool.num_free == engine.pool.num_blocks
    assert not engine.has_unfinished()


def test_requests_join_mid_flight(model, tok, korean_prompts):
    engine = Engine(model, tok, EngineConfig(block_size=8, num_blocks=64, max_step_tokens=64))
    first = engine.add_request(korean_prompts[0], greedy(16))
    tokens: dict[str, list[int]] = {first: []}
    for _ in range(5):
        for delta in engine.step():
            tokens[delta.request_id] += delta.token_ids
    late = [engine.add_request(p, greedy(6)) for p in korean_prompts[1:3]]
    tokens.update({r: [] for r in late})
    saw_both_running = False
    while engine.has_unfinished():
        deltas = engine.step()
        ids = {d.request_id for d in deltas}
        saw_both_running |= first in ids and set(late) <= ids
        for delta in deltas:
            tokens[delta.request_id] += delta.token_ids
    assert saw_both_running, "late requests must decode in the same steps as the running one"
    expected = alone(model, tok, korean_prompts[:3], [greedy(16), greedy(6), greedy(6)])
    assert [tokens[r] for r in (first, *late)] == expected


def test_bounded_memory_under_overload(model, tok, korean_prompts):
    """24 requests, a pool for about three of them: they queue, get preempted and
    recomputed, and all finish with their solo output; cache use never passes the pool."""
    cfg = EngineConfig(block_size=4, num_blocks=24, max_running=8, max_step_tokens=32)
    engine = Engine(model, tok, cfg)
    keys_shape = engine.pool.keys.shape
    prompts = korean_prompts[:24]
    params = [greedy(4 + i % 9) for i in range(len(prompts))]
    demand = sum(
        engine.pool.blocks_for(len(p) + sp.max_new_tokens) for p, sp in zip(prompts, params, strict=True)
    )
    assert demand > 4 * cfg.num_blocks
    for p, sp in zip(prompts, params, strict=True):
        engine.add_request(p, sp)
    peak_running, finished = 0, {}
    while engine.has_unfinished():
        for delta in engine.step():
            assert engine.pool.num_used <= cfg.num_blocks
            if delta.finished:
                finished[delta.request_id] = delta.finish_reason
        peak_running = max(peak_running, engine.num_running)
    assert len(finished) == 24 and set(finished.values()) == {"length"}
    assert engine.pool.peak_used <= cfg.num_blocks
    assert engine.pool.keys.shape == keys_shape
    assert engine.pool.num_free == cfg.num_blocks
    assert engine.scheduler.num_preemptions > 0
    assert peak_running <= cfg.max_running
    outputs = Engine(model, tok, cfg).generate(prompts, params)
    assert [o.token_ids for o in outputs] == alone(model, tok, prompts, params)


def test_iter_generate_yields_in_finish_order_and_closing_aborts_the_rest(model, tok, korean_prompts):
    """PPO scores each rollout as it finishes; a consumer that stops early frees the engine."""
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=128))
    budgets = [12, 3, 8, 5]
    rollouts = engine.iter_generate(korean_prompts[:4], [greedy(n) for n in budgets])
    first, second = next(rollouts), next(rollouts)
    assert [len(first.token_ids), len(second.token_ids)] == [3, 5]
    assert first.prompt_ids == korean_prompts[1] and second.prompt_ids == korean_prompts[3]
    assert engine.num_running == 2
    rollouts.close()
    assert not engine.has_unfinished() and engine.pool.num_free == engine.pool.num_blocks


def test_sampling_with_a_seed_does_not_depend_on_the_batch(model, tok, korean_prompts):
    params = SamplingParams(
        temperature=0.9, top_k=64, top_p=0.95, max_new_tokens=10, stop_token_ids=[], seed=7
    )
    solo = Engine(model, tok).generate([korean_prompts[3]], params)[0]
    others = [SamplingParams(temperature=1.2, max_new_tokens=7, stop_token_ids=[], seed=i) for i in range(5)]
    crowd = Engine(model, tok, EngineConfig(max_running=3, max_step_tokens=16)).generate(
        [*korean_prompts[4:9], korean_prompts[3]], [*others, params]
    )
    assert crowd[-1].token_ids == solo.token_ids
    assert crowd[-1].logprobs == pytest.approx(solo.logprobs, abs=1e-9)
    reseeded = Engine(model, tok).generate([korean_prompts[3]], params.model_copy(update={"seed": 8}))[0]
    assert reseeded.token_ids != solo.token_ids
    assert solo.token_ids != greedy_without_cache(model, korean_prompts[3], 10)


def test_logprobs_are_the_models_log_softmax(model, tok, korean_prompts):
    prompt = korean_prompts[6]
    params = SamplingParams(temperature=0.7, max_new_tokens=6, stop_token_ids=[], seed=3)
    output = Engine(model, tok).generate([prompt], params)[0]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + output.token_ids]))[0, len(prompt) - 1 : -1]
    want = logits.log_softmax(-1).gather(-1, torch.tensor(output.token_ids)[:, None])[:, 0]
    assert output.logprobs == pytest.approx(want.tolist(), abs=1e-9)


def test_stop_token_ends_the_request_and_is_kept_in_ids_not_text(model, tok, korean_prompts):
    prompt = korean_prompts[8]
    reference = greedy_without_cache(model, prompt, 12)
    stop_at = next(i for i in range(3, 12) if reference[i] not in reference[:i])
    params = SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=[reference[stop_at]])
    output = Engine(model, tok).generate([prompt], params)[0]
    assert output.token_ids == reference[: stop_at + 1]
    assert output.finish_reason == "stop" and output.stop_reason == reference[stop_at]
    assert output.text == tok.decode(reference[:stop_at])


def test_default_stop_tokens_are_end_of_turn_and_end_of_text(model, tok):
    assert Engine(model, tok).default_stop_ids == {tok.end_of_turn_id, tok.eot_id}
    assert Engine(model).default_stop_ids == frozenset()


def test_a_tokenizer_larger_than_the_model_is_refused(model, tok):
    small = Transformer(model.cfg.model_copy(update={"vocab_size": tok.vocab_size - 64}))
    expected = f"tokenizer has {tok.vocab_size} tokens but the model only {tok.vocab_size - 64}"
    with pytest.raises(ValueError, match=expected):
        Engine(small, tok)


def test_bad_requests_fail_at_submission_with_the_reason(model, tok, korean_prompts):
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=8))
    with pytest.raises(ValueError, match="exceeds the model context of 256"):
        engine.add_request(korean_prompts[0], greedy(250))
    with pytest.raises(ValueError, match="cache pool's 32 tokens"):
        engine.add_request(korean_prompts[0], greedy(30))
    with pytest.raises(ValueError, match="empty prompt"):
        engine.add_request([], greedy(3))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add_request([tok.vocab_size + 5], greedy(3))
    with pytest.raises(ValueError, match="stop strings need an engine with a tokenizer"):
        Engine(model).add_request(korean_prompts[0], SamplingParams(max_new_tokens=3, stop=["다"]))
    assert not engine.has_unfinished() and engine.pool.num_free == 8
