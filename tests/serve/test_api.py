"""The OpenAI-compatible API through the ``openai`` package and raw HTTP: answers, errors, auth, loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import openai
import pytest
import torch

from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams
from hcx.model.load import ModelLoadError, load_model
from hcx.tokenizer.specials import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX
from tests.serve.live_server import API_KEY, MAX_TOKENS, SERVED_NAME, LiveServer


def test_chat_completion_equals_the_in_process_engine(live_server: LiveServer, korean_turns):
    client = live_server.client()
    for turn in korean_turns[:3]:
        messages = [{"role": "system", "content": "친절하게 답하세요."}, {"role": "user", "content": turn}]
        reply = client.chat.completions.create(
            model=SERVED_NAME, messages=messages, max_tokens=24, temperature=0
        )
        prompt = live_server.chat_ids(messages)
        want = live_server.expected(prompt, max_new_tokens=24, temperature=0.0)
        assert reply.choices[0].message.role == "assistant"
        assert reply.choices[0].message.content == want.text
        assert reply.choices[0].finish_reason == want.finish_reason
        assert reply.model == SERVED_NAME and reply.object == "chat.completion"
        assert reply.usage.prompt_tokens == len(prompt)
        assert reply.usage.completion_tokens == len(want.token_ids)
        assert reply.usage.total_tokens == len(prompt) + len(want.token_ids)


def test_multi_turn_chat_uses_the_checkpoint_chat_template(live_server: LiveServer, korean_turns):
    messages = [
        {"role": "user", "content": korean_turns[3]},
        {"role": "assistant", "content": "네, 알겠습니다."},
        {"role": "developer", "content": "짧게 답하세요."},
        {"role": "user", "content": [{"type": "text", "text": korean_turns[4]}]},
    ]
    reply = live_server.client().chat.completions.create(
        model=SERVED_NAME, messages=messages, max_tokens=16, temperature=0
    )
    as_system = [
        *messages[:2],
        {"role": "system", "content": "짧게 답하세요."},
        {"role": "user", "content": korean_turns[4]},
    ]
    want = live_server.expected(live_server.chat_ids(as_system), max_new_tokens=16, temperature=0.0)
    assert reply.choices[0].message.content == want.text
    assert reply.usage.prompt_tokens == len(live_server.chat_ids(as_system))


def test_completions_of_texts_token_ids_and_fim(live_server: LiveServer, korean_turns):
    client, tok = live_server.client(), live_server.tok
    texts = [korean_turns[5][:40], korean_turns[6][:40]]
    reply = client.completions.create(model=SERVED_NAME, prompt=texts, max_tokens=12, temperature=0)
    prompts = [[tok.eot_id, *tok.encode(text)] for text in texts]
    want = live_server.reference.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0.0))
    assert [c.index for c in reply.choices] == [0, 1]
    assert [c.text for c in reply.choices] == [w.text for w in want]
    assert reply.usage.prompt_tokens == sum(map(len, prompts))
    assert reply.usage.completion_tokens == sum(len(w.token_ids) for w in want)

    ids = tok.encode(korean_turns[8][:40])
    by_ids = client.completions.create(model=SERVED_NAME, prompt=ids, max_tokens=12, temperature=0)
    assert by_ids.choices[0].text == live_server.expected(ids, max_new_tokens=12, temperature=0.0).text
    with pytest.raises(openai.BadRequestError, match="prompt: must be a string, a list of token ids"):
        client.completions.create(model=SERVED_NAME, prompt=[texts[0], ids], max_tokens=2)

    prefix, suffix = "def add(a, b):\n    ", "\n    return result\n"
    infill = live_server.client().completions.create(
        model=SERVED_NAME, prompt=prefix, suffix=suffix, max_tokens=10, temperature=0
    )
    psm = [
        tok.eot_id,
        tok.token_id(FIM_PREFIX),
        *tok.encode(prefix),
        tok.token_id(FIM_SUFFIX),
        *tok.encode(suffix),
        tok.token_id(FIM_MIDDLE),
    ]
    assert infill.choices[0].text == live_server.expected(psm, max_new_tokens=10, temperature=0.0).text
    assert infill.usage.prompt_tokens == len(psm)


def test_seeded_sampling_is_reproducible_and_stop_strings_cut(live_server: LiveServer, korean_turns):
    client = live_server.client()
    messages = [{"role": "user", "content": korean_turns[7]}]
    prompt = live_server.chat_ids(messages)
    kwargs = dict(model=SERVED_NAME, messages=messages, max_tokens=20, temperature=1.0, top_p=0.9, seed=1234)
    first = client.chat.completions.create(**kwargs, extra_body={"top_k": 50})
    second = client.chat.completions.create(**kwargs, extra_body={"top_k": 50})
    want = live_server.expected(prompt, max_new_tokens=20, temperature=1.0, top_p=0.9, top_k=50, seed=1234)
    assert first.choices[0].message.content == second.choices[0].message.content == want.text

    full = live_server.expected(prompt, max_new_tokens=20, temperature=0.0).text
    stop = full[4:6]
    assert len(stop) == 2 and full.index(stop) > 0
    cut = client.chat.completions.create(
        model=SERVED_NAME, messages=messages, max_tokens=20, temperature=0, stop=[stop, "§§"]
    )
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_models_and_health(live_server: LiveServer):
    models = live_server.client().models.list()
    assert [m.id for m in models.data] == [SERVED_NAME]
    health = httpx.get(f"{live_server.url}/health").json()
    assert health["status"] == "ok" and health["model"] == SERVED_NAME
    assert health["cache_blocks"] == live_server.engine.pool.num_blocks


def test_auth_is_required_on_the_api_only(live_server: LiveServer):
    body = {"messages": [{"role": "user", "content": "안녕"}], "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        response = httpx.post(f"{live_server.url}/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert "Authorization: Bearer" in response.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        live_server.client(api_key="wrong").models.list()
    assert httpx.get(f"{live_server.url}/health").status_code == 200
    assert httpx.get(f"{live_server.url}/").status_code == 200


def _long_message(live_server: LiveServer, korean_turns, tokens: int) -> str:
    """Real Korean text whose chat prompt has at least ``tokens`` tokens."""
    text = ""
    for turn in korean_turns * 10:
        if len(live_server.chat_ids([{"role": "user", "content": text}])) >= tokens:
            return text
        text += turn + "\n"
    raise AssertionError("not enough text")


@pytest.mark.parametrize(
    ("body", "status", "param", "says"),
    [
        ({"max_tokens": MAX_TOKENS + 1}, 400, "max_tokens", f"at most {MAX_TOKENS}"),
        ({"temperature": 2.5}, 400, "temperature", "less than or equal to 2"),
        ({"top_p": 0}, 400, "top_p", "greater than 0"),
        ({"top_p": 1.5}, 400, "top_p", "less than or equal to 1"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role", "'tool'"),
        ({"messages": [{"role": "user"}]}, 400, "messages[0]", "a user message needs content"),
        ({"messages": []}, 400, "messages", "at least 1"),
        ({"n": 17}, 400, "n", "less than or equal to 16"),
        ({"logit_bias": {"x5": 1}}, 400, "logit_bias", "'x5' is not one"),
        ({"logit_bias": {"5": 101}}, 400, "logit_bias.5", "less than or equal to 100"),
        ({"frequency_penalty": 2.5}, 400, "frequency_penalty", "less than or equal to 2"),
        ({"top_logprobs": 2}, 400, None, "top_logprobs needs logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, 400, "top_logprobs", "less than or equal to 20"),
        ({"tool_choice": "required"}, 400, None, "tool_choice needs tools"),
        ({"response_format": {"type": "json_schema"}}, 400, "response_format", "needs json_schema.schema"),
        ({"response_format": {"type": "yaml"}}, 400, "response_format.type", "'json_schema'"),
        ({"max_tokens": 0}, 400, None, "at least 1 for a chat completion"),
        ({"best_of": 2}, 400, "best_of", "unsupported parameter"),
        ({"stop": [""]}, 400, "stop", "stop strings must have"),
        ({"model": "gpt-4o"}, 404, "model", SERVED_NAME),
    ],
)
def test_bad_requests_get_openai_errors_that_say_what_is_wrong(
    live_server: LiveServer, body, status, param, says
):
    request = {"messages": [{"role": "user", "content": "안녕하세요"}], "max_tokens": 4, **body}
    response = httpx.post(
        f"{live_server.url}/v1/chat/completions", json=request, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert says in error["message"]


def test_context_length_and_malformed_bodies(live_server: LiveServer, korean_turns):
    client = live_server.client()
    context = live_server.context_length
    long = _long_message(live_server, korean_turns, context - 100)
    prompt_tokens = len(live_server.chat_ids([{"role": "user", "content": long}]))
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model=SERVED_NAME, messages=[{"role": "user", "content": long}], max_tokens=200
        )
    assert error.value.status_code == 400
    assert f"prompt ({prompt_tokens} tokens) + max_tokens (200)" in error.value.message
    assert f"at most {context - prompt_tokens} tokens" in error.value.message

    too_long = _long_message(live_server, korean_turns, context + 5)
    with pytest.raises(openai.BadRequestError, match="no room for an answer"):
        client.chat.completions.create(model=SERVED_NAME, messages=[{"role": "user", "content": too_long}])

    # Without max_tokens the answer may fill the rest of the context.
    fits = client.chat.completions.create(
        model=SERVED_NAME, messages=[{"role": "user", "content": long}], temperature=0
    )
    assert fits.usage.prompt_tokens + fits.usage.completion_tokens <= context

    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    broken = httpx.post(f"{live_server.url}/v1/chat/completions", content=b'{"messages": [', headers=auth)
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    huge = httpx.post(f"{live_server.url}/v1/completions", content=b"x" * 5_000_000, headers=auth)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    missing = httpx.get(f"{live_server.url}/v1/nothing", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Not Found"


def test_a_transformers_resaved_export_loads_and_answers_the_same(
    served_model_dir: Path, tmp_path: Path, tok
):
    """``save_pretrained`` of transformers' Llama and tokenizer: the other HF export users will have."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(served_model_dir, dtype=torch.bfloat16).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(served_model_dir).save_pretrained(tmp_path)
    ours, ours_tok = load_model(served_model_dir, torch.device("cpu"), torch.float32).pair()
    theirs, theirs_tok = load_model(tmp_path, torch.device("cpu"), torch.float32).pair()
    prompt = tok.encode_chat(
        {"messages": [{"role": "user", "content": "서울의 봄 날씨는 어때요?"}]}, True
    ).ids
    assert (
        theirs_tok.encode_chat(
            {"messages": [{"role": "user", "content": "서울의 봄 날씨는 어때요?"}]}, True
        ).ids
        == prompt
    )
    # The re-saved weights went through bfloat16, so compare with ours rounded the same way.
    ours = ours.to(torch.bfloat16).to(torch.float32)
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    assert Engine(theirs, theirs_tok).generate([prompt], params)[0].token_ids == (
        Engine(ours, ours_tok).generate([prompt], params)[0].token_ids
    )


def test_checkpoint_errors_name_the_directory(tmp_path: Path, served_model_dir: Path):
    with pytest.raises(ModelLoadError, match="missing: not a directory"):
        load_model(tmp_path / "missing", torch.device("cpu"), torch.float32).pair()
    (tmp_path / "config.json").write_text((served_model_dir / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(tmp_path, torch.device("cpu"), torch.float32)
    shutil.copy2(served_model_dir / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_model(tmp_path, torch.device("cpu"), torch.float32).pair()
