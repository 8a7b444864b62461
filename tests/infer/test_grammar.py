"""Structured output: a grammar (JSON Schema, JSON mode, Lark) masks what a request may sample,
batched beside free requests, which it does not change; plus penalties and logit bias."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from hcx.infer.engine import Engine
from hcx.infer.grammar import GrammarError, json_grammar, lark_grammar
from hcx.infer.logits import adjust_logits
from hcx.infer.sampling import SamplingParams

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"enum": ["서울", "부산", "Daejeon"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}


def test_json_schema_outputs_parse_and_match_beside_free_requests(model, tok, korean_prompts):
    """A random model, sampling: every constrained answer is valid JSON matching the schema, and the
    free requests in the same batches produce exactly what they produce alone."""
    prompts = korean_prompts[:20]
    grammar = json_grammar(PERSON)
    constrained = [
        SamplingParams(temperature=1.0, seed=i, max_new_tokens=160, grammar=grammar)
        for i in range(len(prompts))
    ]
    free = SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=[])
    engine = Engine(model, tok)
    outputs = engine.generate(prompts + prompts[:4], constrained + [free] * 4)
    for output in outputs[:20]:
        assert output.finish_reason == "stop", output.text
        assert output.token_ids[-1] in engine.default_stop_ids
        jsonschema.validate(json.loads(output.text), PERSON)
    alone = Engine(model, tok).generate(prompts[:4], free)
    assert [o.token_ids for o in outputs[20:]] == [o.token_ids for o in alone]


def test_json_mode_and_lark_grammars(model, tok, korean_prompts):
    engine = Engine(model, tok)
    yes_no = lark_grammar('start: ("예" | "아니요") "." ')
    outputs = engine.generate(
        korean_prompts[:6],
        [SamplingParams(temperature=0.7, seed=i, max_new_tokens=8, grammar=yes_no) for i in range(6)],
    )
    assert {o.text for o in outputs} <= {"예.", "아니요."}
    assert all(o.finish_reason == "stop" for o in outputs)
    [obj] = engine.generate(
        korean_prompts[:1],
        SamplingParams(
            temperature=0.0, max_new_tokens=64, grammar=json_grammar({"type": "object", "maxProperties": 0})
        ),
    )
    assert json.loads(obj.text) == {}


def test_a_broken_grammar_is_refused_at_submission(model, tok, korean_prompts):
    engine = Engine(model, tok)
    with pytest.raises(GrammarError):
        engine.add_request(
            korean_prompts[0], SamplingParams(max_new_tokens=8, grammar=lark_grammar("start: undefined_rule"))
        )
    assert not engine.has_unfinished()


def test_penalties_and_bias_change_the_logits_a_request_chooses_from(model, tok):
    logits = torch.zeros(2, 10, dtype=torch.float64)
    engine = Engine(model, tok)
    plain = engine.make_request([1, 2, 3], SamplingParams(max_new_tokens=8))
    penalised = engine.make_request(
        [1, 2, 3],
        SamplingParams(
            max_new_tokens=8, presence_penalty=0.5, frequency_penalty=1.0, logit_bias={7: 3.0, 8: -100.0}
        ),
    )
    penalised.tokens += [3, 3, 5]
    adjusted = adjust_logits(logits, [plain, penalised])
    assert adjusted is not None and torch.equal(adjusted[0], logits[0])
    expected = torch.zeros(10, dtype=torch.float64)
    expected[3], expected[5], expected[7], expected[8] = -2.5, -1.5, 3.0, -100.0
    torch.testing.assert_close(adjusted[1], expected)
    assert adjust_logits(logits, [plain]) is None


def greedy_answer(model, tok, prompt: list[int], tokens: int, **adjustments) -> list[int]:
    params = SamplingParams(temperature=0.0, max_new_tokens=tokens, stop_token_ids=[], **adjustments)
    return Engine(model, tok).generate([prompt], params)[0].token_ids


def test_bias_and_penalties_steer_greedy_decoding(model, tok, korean_prompts):
    prompt = korean_prompts[0]
    plain = greedy_answer(model, tok, prompt, 40)
    assert plain[0] not in greedy_answer(model, tok, prompt, 6, logit_bias={plain[0]: -100.0})
    forced = Engine(model, tok).generate(
        [prompt], SamplingParams(temperature=0.0, max_new_tokens=4, stop_token_ids=[], logit_bias={42: 100.0})
    )[0]
    assert forced.token_ids == [42] * 4
    [score] = Engine(model, tok).score([prompt], [forced.token_ids])
    torch.testing.assert_close(torch.tensor(forced.logprobs, dtype=torch.float64), score.logprobs)
    penalised = greedy_answer(model, tok, prompt, 40, frequency_penalty=2.0)
    assert len(set(penalised)) > len(set(plain))
