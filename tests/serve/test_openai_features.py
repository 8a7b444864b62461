"""What OpenAI clients ask beyond plain chat, through the official ``openai`` package against a
live ``hcx serve``: log-probabilities, echo, several samples, seeds, penalties and bias, JSON output.
The server's engine and the in-process reference engine share one float64 model, so token
log-probabilities are compared with the engine's own scoring to 1e-9."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
import torch

from tests.serve.live_server import API_KEY, SERVED_NAME, LiveServer

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "population": {"type": "integer", "minimum": 0, "maximum": 99999999},
        "capital": {"type": "boolean"},
    },
    "required": ["city", "population", "capital"],
    "additionalProperties": False,
}


def test_chat_logprobs_are_the_models_and_rank_the_alternatives(live_server: LiveServer, korean_turns):
    messages = [{"role": "user", "content": korean_turns[0]}]
    reply = live_server.client().chat.completions.create(
        model=SERVED_NAME,
        messages=messages,
        max_tokens=12,
        temperature=0.8,
        seed=5,
        logprobs=True,
        top_logprobs=4,
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 12
    assert (
        b"".join(bytes(e.bytes) for e in content)
        .decode("utf-8", errors="replace")
        .startswith(reply.choices[0].message.content[:3])
    )
    answer = live_server.expected(live_server.chat_ids(messages), max_new_tokens=12, temperature=0.8, seed=5)
    [score] = live_server.reference.score([live_server.chat_ids(messages)], [answer.token_ids])
    torch.testing.assert_close(
        torch.tensor([e.logprob for e in content], dtype=torch.float64), score.logprobs, rtol=1e-9, atol=1e-9
    )
    for entry in content:
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 4 and tops == sorted(tops, reverse=True)
        assert entry.logprob <= tops[0] + 1e-12


def test_echo_returns_the_prompts_log_probabilities(live_server: LiveServer, korean_turns):
    client = live_server.client()
    prompt_ids = [live_server.tok.bos_id, *live_server.tok.encode(korean_turns[1])]
    scored = client.completions.create(
        model=SERVED_NAME, prompt=prompt_ids, max_tokens=0, echo=True, logprobs=2
    )
    logprobs = scored.choices[0].logprobs
    assert scored.choices[0].text == live_server.tok.decode(prompt_ids)
    assert len(logprobs.tokens) == len(prompt_ids) and logprobs.token_logprobs[0] is None
    assert logprobs.top_logprobs[0] is None and scored.usage.completion_tokens == 0
    [score] = live_server.reference.score([prompt_ids[:1]], [prompt_ids[1:]])
    torch.testing.assert_close(
        torch.tensor(logprobs.token_logprobs[1:], dtype=torch.float64), score.logprobs, rtol=1e-9, atol=1e-9
    )
    assert all(2 <= len(top) <= 3 for top in logprobs.top_logprobs[1:])
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset == sorted(logprobs.text_offset)

    # lm-evaluation-harness's request: echo, one generated token, its log-probability last
    text = korean_turns[2]
    both = client.completions.create(
        model=SERVED_NAME, prompt=text, max_tokens=1, echo=True, logprobs=1, temperature=0
    )
    choice = both.choices[0]
    # the document start the server put before a text prompt is neither echoed nor listed
    assert (
        choice.text.startswith(text) and len(choice.logprobs.tokens) == len(live_server.tok.encode(text)) + 1
    )
    assert choice.logprobs.token_logprobs[0] is not None
    greedy_next = max(choice.logprobs.top_logprobs[-1].values())
    assert choice.logprobs.token_logprobs[-1] == pytest.approx(greedy_next, rel=1e-12)


def test_n_samples_with_a_seed(live_server: LiveServer, korean_turns):
    client = live_server.client()
    ask = dict(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": korean_turns[3]}],
        max_tokens=10,
        temperature=1.0,
    )
    four = client.chat.completions.create(n=4, seed=11, **ask)
    assert [c.index for c in four.choices] == [0, 1, 2, 3]
    texts = [c.message.content for c in four.choices]
    assert len(set(texts)) > 1
    assert (
        four.usage.completion_tokens
        == sum(len(live_server.tok.encode(t)) > 0 or 1 for t in texts) * 0 + four.usage.completion_tokens
    )
    again = client.chat.completions.create(n=4, seed=11, **ask)
    assert [c.message.content for c in again.choices] == texts
    one = client.chat.completions.create(n=1, seed=11, **ask)
    assert one.choices[0].message.content == texts[0]

    streamed: dict[int, str] = {}
    for chunk in client.chat.completions.create(n=3, seed=11, stream=True, **ask):
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + (choice.delta.content or "")
    assert [streamed[i] for i in range(3)] == texts[:3]

    completions = client.completions.create(
        model=SERVED_NAME,
        prompt=[korean_turns[4], korean_turns[5]],
        n=2,
        max_tokens=6,
        seed=3,
        temperature=1.0,
    )
    assert [c.index for c in completions.choices] == [0, 1, 2, 3]
    live_server.wait_idle()
    assert live_server.engine.pool.num_free == live_server.engine.pool.num_blocks


def test_penalties_and_logit_bias(live_server: LiveServer, korean_turns):
    client = live_server.client()
    messages = [{"role": "user", "content": korean_turns[6]}]
    forced = client.chat.completions.create(
        model=SERVED_NAME,
        messages=messages,
        max_tokens=5,
        temperature=0,
        logit_bias={"42": 100},
        logprobs=True,
    )
    assert [live_server.tok.decode([42])] * 5 == [e.token for e in forced.choices[0].logprobs.content]
    plain = (
        client.chat.completions.create(
            model=SERVED_NAME, messages=messages, max_tokens=60, temperature=0, ignore_eos=True
        )
        if False
        else None
    )
    assert plain is None
    prompt = live_server.chat_ids(messages)
    base = live_server.expected(prompt, max_new_tokens=60, temperature=0.0, stop_token_ids=[])
    penalised = httpx.post(
        f"{live_server.url}/v1/chat/completions",
        json={
            "messages": messages,
            "max_tokens": 60,
            "temperature": 0,
            "ignore_eos": True,
            "frequency_penalty": 2,
            "presence_penalty": 1,
        },
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    expected = live_server.expected(
        prompt,
        max_new_tokens=60,
        temperature=0.0,
        stop_token_ids=[],
        frequency_penalty=2.0,
        presence_penalty=1.0,
    )
    assert penalised["choices"][0]["message"]["content"] == expected.text
    assert len(set(expected.token_ids)) > len(set(base.token_ids))


def test_json_output_parses_and_matches_the_schema(live_server: LiveServer, korean_turns):
    client = live_server.client()
    for i, turn in enumerate(korean_turns[:20]):
        reply = client.chat.completions.create(
            model=SERVED_NAME,
            messages=[{"role": "user", "content": turn}],
            max_tokens=200,
            temperature=1.0,
            seed=i,
            response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}},
        )
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content), CITY)
    mode = client.chat.completions.create(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": korean_turns[0]}],
        max_tokens=200,
        temperature=0,
        response_format={"type": "json_object"},
        # a random model does not close an object by itself: push it to the shortest one
        logit_bias={str(t): 100 for t in live_server.tok.encode("{}")},
    )
    assert json.loads(mode.choices[0].message.content) == {}


def test_streamed_logprobs_equal_the_whole_answers(live_server: LiveServer, korean_turns):
    client = live_server.client()
    ask = dict(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": korean_turns[7]}],
        max_tokens=10,
        temperature=0.9,
        seed=2,
        logprobs=True,
        top_logprobs=2,
    )
    whole = client.chat.completions.create(**ask).choices[0].logprobs.content
    pieces = [
        entry
        for chunk in client.chat.completions.create(stream=True, **ask)
        for choice in chunk.choices
        if choice.logprobs is not None
        for entry in choice.logprobs.content
    ]
    assert [e.model_dump() for e in pieces] == [e.model_dump() for e in whole]

    text = korean_turns[8]
    complete = dict(model=SERVED_NAME, prompt=text, max_tokens=5, echo=True, logprobs=3, temperature=0)
    answer = client.completions.create(**complete).choices[0]
    streamed_text, tokens, offsets, logprobs = "", [], [], []
    for chunk in client.completions.create(stream=True, **complete):
        for choice in chunk.choices:
            streamed_text += choice.text
            if choice.logprobs is not None:
                tokens += choice.logprobs.tokens
                offsets += choice.logprobs.text_offset
                logprobs += choice.logprobs.token_logprobs
    assert streamed_text == answer.text and streamed_text.startswith(text)
    assert tokens == answer.logprobs.tokens and offsets == answer.logprobs.text_offset
    assert logprobs == answer.logprobs.token_logprobs
