"""The server's limits against a real server: body size, token budget, malformed bodies, a full queue.

Each refusal must be a 4xx in the OpenAI error shape whose message says what is wrong, and
afterwards every batch slot, admission and cache block must be free. The full queue is made
deterministic by holding the engine between steps (``AsyncEngine.step_lock``): admitted
requests provably cannot finish, so the queue provably stays full while the test probes it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.serve.live_server import (
    API_KEY,
    GUARDED_BODY_BYTES,
    GUARDED_MAX_TOKENS,
    GUARDED_RETRY_AFTER_S,
    LiveServer,
)

AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON = {**AUTH, "Content-Type": "application/json"}
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HELLO = [{"role": "user", "content": "안녕하세요"}]


@pytest.fixture
def client(guarded_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=guarded_server.url, headers=AUTH, timeout=30) as client:
        yield client
    guarded_server.assert_all_freed()


def assert_refused(response: httpx.Response, status: int, says: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert says in error["message"], error["message"]
    assert error["param"] == param
    return error


def test_bodies_over_the_size_limit_get_413_before_parsing(client: httpx.Client):
    too_big = b"\xff" * (GUARDED_BODY_BYTES + 1)  # not even UTF-8: a parsed body would be a 400

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(too_big), 65_536):
            yield too_big[start : start + 65_536]

    declared = client.post(COMPLETIONS, content=too_big, headers=JSON)
    streamed = client.post(COMPLETIONS, content=chunked(), headers=JSON)  # no Content-Length
    assert "content-length" not in streamed.request.headers
    for response in (declared, streamed):
        error = assert_refused(response, 413, f"the request body is larger than {GUARDED_BODY_BYTES} bytes")
        assert error["code"] == "request_too_large"


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("content", "content_type", "status", "says"),
    [
        (b'{"prompt": "\xff\xfe"}', "application/json", 400, "not valid UTF-8 (byte 0xff at offset 12)"),
        (_nested(100_000), "application/json", 400, "nested more than 64 levels deep"),
        (b'{"prompt": "x", "metadata": {"a": ' + _nested(63) + b"}}", "application/json", 400, "64 levels"),
        (b"", "application/json", 400, "the request body is empty"),
        (b"null", "application/json", 400, "must be a JSON object, not null"),
        (b"[1]", "application/json", 400, "must be a JSON object, not an array"),
        (b'{"prompt": ', "application/json", 400, "not valid JSON"),
        (b'{"prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}", "application/json", 400, "not valid JSON"),
        (b'{"prompt": "x"}', "text/plain", 415, "Content-Type is 'text/plain'"),
        (b"prompt=x", "application/x-www-form-urlencoded", 415, "send 'Content-Type: application/json'"),
        (b'{"prompt": "x"}', None, 415, "the request has no Content-Type"),
    ],
    ids=[
        "non-utf8",
        "100k-nested-arrays",
        "65-levels-in-a-field",
        "empty",
        "null",
        "array",
        "truncated",
        "5000-digit-number",
        "text-plain",
        "form",
        "no-content-type",
    ],
)
def test_malformed_bodies_get_a_4xx_that_says_what_is_wrong(
    client: httpx.Client, content: bytes, content_type: str | None, status: int, says: str
):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(COMPLETIONS, content=content, headers=headers)  # httpx adds no Content-Type
    assert_refused(response, status, says)


def test_nesting_up_to_the_limit_is_accepted(client: httpx.Client):
    metadata_depth = 64 - 2  # the body object, then metadata's own object
    deep = {"prompt": "x", "max_tokens": 1, "response_format": {"type": "text"}}
    value: dict = {}
    deep["metadata"] = value
    for _ in range(metadata_depth - 1):
        value["a"] = {}
        value = value["a"]
    response = client.post(COMPLETIONS, content=json.dumps(deep).encode(), headers=JSON)
    # metadata must map to strings: the nesting passed the body checks and reached validation.
    assert_refused(response, 400, "metadata.a: Input should be a valid string", "metadata.a")


def test_token_budgets_and_prompt_length_are_refused_naming_the_field(
    client: httpx.Client, guarded_server: LiveServer
):
    context = guarded_server.context_length
    too_many = client.post(CHAT, json={"messages": HELLO, "max_tokens": GUARDED_MAX_TOKENS + 1})
    assert_refused(too_many, 400, f"at most {GUARDED_MAX_TOKENS} allowed", "max_tokens")
    too_many = client.post(CHAT, json={"messages": HELLO, "max_completion_tokens": 10**30})
    assert_refused(too_many, 400, f"at most {GUARDED_MAX_TOKENS} allowed", "max_tokens")

    nearly_full = list(range(5, 5 + context - 2))
    overflow = client.post(COMPLETIONS, json={"prompt": nearly_full, "max_tokens": GUARDED_MAX_TOKENS})
    error = assert_refused(overflow, 400, f"the prompt ({context - 2} tokens) + max_tokens (8)", "max_tokens")
    assert "ask for at most 2 tokens" in error["message"] and error["code"] == "context_length_exceeded"
    full = client.post(COMPLETIONS, json={"prompt": list(range(5, 5 + context))})
    assert_refused(full, 400, f"the prompt has {context} tokens", "prompt")
    long_chat = [{"role": "user", "content": "가나다라 " * context}]
    assert_refused(client.post(CHAT, json={"messages": long_chat}), 400, "leaves no room", "messages")
    outside = client.post(COMPLETIONS, json={"prompt": [5, 10**9], "max_tokens": 1})
    assert_refused(outside, 400, "prompt: token id 1000000000 is outside the vocabulary", "prompt")


JSON_OBJECT = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}


@pytest.mark.parametrize(
    "extra",
    [{"top_k": 10**22}, {"top_p": 5e-324}, {"temperature": 5e-324}, {"max_tokens": 2.0, "n": 2.0}],
    ids=["huge-top-k", "subnormal-top-p", "subnormal-temperature", "integral-floats"],
)
def test_values_that_used_to_fail_the_server_are_served(client: httpx.Client, extra: dict):
    """Found by the fuzzer: a top_k past int64 overflowed the sampler's tensor, and a top_p or
    temperature of 5e-324 became 0 in it, so the sampler drew a token the output grammar forbids;
    each failed the whole engine step, every request in the batch with it (500s). ``2.0`` is an
    integer to JSON Schema, and so to the API."""
    body = {"prompt": "서울", "max_tokens": 2, "ignore_eos": True, "response_format": JSON_OBJECT, **extra}
    response = client.post(COMPLETIONS, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 2 * body.get("n", 1)


def test_values_of_the_wrong_kind_are_refused(client: httpx.Client):
    superscript = client.post(CHAT, json={"messages": HELLO, "max_tokens": 2, "logit_bias": {"²": 1}})
    assert_refused(superscript, 400, "keys are token ids; '²' is not one", "logit_bias")  # was a 500
    for value in ("2", True, 2.5):
        wrong = client.post(CHAT, json={"messages": HELLO, "max_tokens": value})
        assert_refused(wrong, 400, "max_tokens: Input should be a valid integer", "max_tokens")


def _open_stream(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    response = client.send(client.build_request("POST", path, json={**body, "stream": True}), stream=True)
    assert response.status_code == 200, response.read()
    return response


def _read_to_done(response: httpx.Response) -> list[str]:
    """The finish reasons of a stream read to its end."""
    events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [c["finish_reason"] for e in events[:-1] for c in json.loads(e)["choices"] if c["finish_reason"]]


def test_a_full_queue_is_refused_at_once_with_429_and_retry_after(
    client: httpx.Client, guarded_server: LiveServer
):
    """4 slots + 4 queued: two streams of n=4 fill both; more is refused while they provably hold."""
    refused_before = client.get("/health").json()["refused_requests"]
    held: list[httpx.Response] = []
    try:
        with guarded_server.api.streams.step_lock:  # no engine step: nothing admitted can finish
            held.append(_open_stream(client, CHAT, {"messages": HELLO, "max_tokens": 4, "n": 4}))
            held.append(_open_stream(client, COMPLETIONS, {"prompt": "서울", "max_tokens": 4, "n": 4}))
            health = client.get("/health").json()
            assert health["admitted_sequences"] == health["max_sequences"] == 8

            for path, body in [
                (CHAT, {"messages": HELLO, "max_tokens": 2}),
                (CHAT, {"messages": HELLO, "max_tokens": 2, "stream": True}),
                (COMPLETIONS, {"prompt": "x", "max_tokens": 1}),
            ]:
                busy = client.post(path, json=body)
                error = assert_refused(busy, 429, f"retry in {GUARDED_RETRY_AFTER_S} s")
                assert busy.headers["Retry-After"] == str(GUARDED_RETRY_AFTER_S)
                assert error["code"] == "queue_full"
            never_fits = client.post(COMPLETIONS, json={"prompt": ["a", "b", "c"], "n": 3, "max_tokens": 1})
            assert_refused(never_fits, 400, "9 sequences (prompts × n)", "n")
        # The engine runs again: the held streams finish, the queue drains.
        assert [_read_to_done(response) for response in held] == [["length"] * 4, ["length"] * 4]
    finally:
        for response in held:
            response.close()
    guarded_server.assert_all_freed()
    assert client.get("/health").json()["refused_requests"] == refused_before + 3
    again = client.post(CHAT, json={"messages": HELLO, "max_tokens": 2})
    assert again.status_code == 200 and again.json()["choices"][0]["finish_reason"] == "length"


def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Whether ``condition`` holds within ``timeout_s`` (polled; the outcome does not race)."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_clients_that_leave_give_their_admission_back(client: httpx.Client, guarded_server: LiveServer):
    """A stream closed, and a non-streaming request dropped, while the engine is held (so neither
    can finish by itself): each admission comes back at once, before the engine moves again."""
    admission = guarded_server.api.admission

    async def drop_a_waiting_request() -> None:
        async with httpx.AsyncClient(base_url=guarded_server.url, headers=AUTH, timeout=30) as aclient:
            body = {"messages": HELLO, "max_tokens": 4, "n": 2}
            call = asyncio.create_task(aclient.post(CHAT, json=body))
            while admission.admitted < 2:
                await asyncio.sleep(0.005)
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)

    with guarded_server.api.streams.step_lock:
        stream = _open_stream(client, COMPLETIONS, {"prompt": "서울", "max_tokens": 4})
        assert admission.admitted == 1
        stream.close()
        assert _until(lambda: admission.admitted == 0), "a closed stream kept its admission"
        asyncio.run(asyncio.wait_for(drop_a_waiting_request(), timeout=30))
        assert _until(lambda: admission.admitted == 0), "a dropped request kept its admission"
