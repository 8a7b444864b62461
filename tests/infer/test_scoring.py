"""Batched scoring equals the model's own forward log-softmax, pair by pair."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.prompts import chat_prompt_ids
from hcx.infer.sampling import SamplingParams
from hcx.infer.scoring import score_continuations


def forward_logprobs(model, context: list[int], continuation: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([context + continuation]))[0]
    positions = torch.arange(len(context) - 1, len(context) + len(continuation) - 1)
    return logits[positions].log_softmax(-1).gather(-1, torch.tensor(continuation)[:, None])[:, 0]


def chat_pairs(data_dir: Path, count: int) -> list[tuple[str, str]]:
    """(user, assistant) turns of the first Korean SFT conversations."""
    with gzip.open(data_dir / "sft" / "ko.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line)["messages"] for _, line in zip(range(count), f, strict=False)]
    return [(m[0]["content"], m[1]["content"]) for m in rows]


def test_scores_equal_forward_log_softmax_across_padded_batches(model, tok, data_dir):
    pairs = chat_pairs(data_dir, 10)
    contexts = chat_prompt_ids(tok, [user for user, _ in pairs])
    continuations = [[*tok.encode(answer), tok.end_of_turn_id] for _, answer in pairs]
    scores = score_continuations(model, contexts, continuations, max_batch_tokens=64)
    for context, continuation, score in zip(contexts, continuations, scores, strict=True):
        want = forward_logprobs(model, context, continuation)
        torch.testing.assert_close(score.logprobs, want, rtol=0, atol=1e-10)
        assert score.total == pytest.approx(float(want.sum()), abs=1e-9)
        assert not score.greedy


def test_greedy_flag_is_true_for_the_greedy_continuation(model, tok, korean_prompts):
    engine = Engine(model, tok, EngineConfig())
    params = SamplingParams(temperature=0.0, max_new_tokens=6, stop_token_ids=[])
    generated = engine.generate([korean_prompts[2]], params)
    context, continuation = korean_prompts[2], generated[0].token_ids
    changed = [*continuation[:-1], (continuation[-1] + 1) % tok.vocab_size]
    greedy, other = engine.score([context, context], [continuation, changed])
    assert greedy.greedy and not other.greedy
    assert greedy.logprobs.tolist() == pytest.approx(generated[0].logprobs, abs=1e-9)


def test_bad_pairs_are_refused(model, korean_prompts):
    with pytest.raises(ValueError, match="pair 1: context and continuation"):
        score_continuations(model, [korean_prompts[0], []], [[5], [5]])
    with pytest.raises(ValueError, match="exceed the context 256"):
        score_continuations(model, [korean_prompts[0] * 30], [[5]])
    with pytest.raises(ValueError, match="2 contexts but 1 continuations"):
        score_continuations(model, korean_prompts[:2], [[5]])
