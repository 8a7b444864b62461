"""Many clients at once share the engine's batch; clients that leave give their slot back."""

from __future__ import annotations

import asyncio
import json

import httpx

from hcx.infer.sampling import SamplingParams
from tests.serve.live_server import API_KEY, LiveServer

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def _stream_chat(client: httpx.AsyncClient, messages: list[dict], max_tokens: int) -> tuple[str, str]:
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    text, finish = "", ""
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line.removeprefix("data: "))["choices"][0]
            text += choice["delta"].get("content", "")
            finish = choice["finish_reason"] or finish
    return text, finish


def test_64_concurrent_streaming_clients_get_their_own_greedy_answers(live_server: LiveServer, korean_turns):
    conversations = [[{"role": "user", "content": turn}] for turn in korean_turns[:64]]
    budgets = [8 + (i * 7) % 17 for i in range(64)]
    prompts = [live_server.chat_ids(c) for c in conversations]
    want = live_server.reference.generate(
        prompts, [SamplingParams(max_new_tokens=n, temperature=0.0) for n in budgets]
    )
    steps_before = live_server.engine.num_steps

    async def run() -> list[tuple[str, str]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(
            base_url=live_server.url, headers=HEADERS, limits=limits, timeout=300
        ) as client:
            return await asyncio.gather(
                *(_stream_chat(client, c, n) for c, n in zip(conversations, budgets, strict=True))
            )

    answers = asyncio.run(run())
    assert [text for text, _ in answers] == [w.text for w in want]
    assert [finish for _, finish in answers] == [w.finish_reason for w in want]
    generated = sum(len(w.token_ids) for w in want)
    steps = live_server.engine.num_steps - steps_before
    assert steps < generated / 8, f"{steps} engine steps for {generated} tokens: the clients were not batched"
    live_server.wait_idle()
    assert live_server.engine.pool.num_free == live_server.engine.pool.num_blocks


def _long_request(live_server: LiveServer, turn: str, stream: bool) -> tuple[dict, int]:
    messages = [{"role": "user", "content": turn}]
    prompt_tokens = len(live_server.chat_ids(messages))
    max_tokens = min(250, live_server.context_length - prompt_tokens)
    assert max_tokens >= 200
    body = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        "ignore_eos": True,
    }
    return body, prompt_tokens + max_tokens


def test_closing_streams_frees_their_batch_slots(live_server: LiveServer, korean_turns):
    engine = live_server.engine
    live_server.wait_idle()
    computed_before = engine.num_computed_tokens
    requests = [_long_request(live_server, turn, stream=True) for turn in korean_turns[64:67]]

    async def run() -> int:
        async with httpx.AsyncClient(base_url=live_server.url, headers=HEADERS, timeout=120) as client:
            responses = [
                await client.send(
                    client.build_request("POST", "/v1/chat/completions", json=body), stream=True
                )
                for body, _ in requests
            ]
            # Keep each line iterator alive: dropping one closes its response (a disconnect).
            readers = [response.aiter_lines() for response in responses]
            for lines in readers:
                while '"content":"' not in (line := await anext(lines)) or '"content":""' in line:
                    pass
            running = engine.num_running
            for response in responses:
                await response.aclose()
            return running

    running_while_streaming = asyncio.run(run())
    live_server.wait_idle()
    assert running_while_streaming == 3
    assert engine.num_running == 0 and engine.num_waiting == 0
    assert engine.pool.num_free == engine.pool.num_blocks
    assert engine.num_computed_tokens - computed_before < sum(full for _, full in requests) - 100, (
        "the requests were aborted, not run to their end"
    )
    health = httpx.get(f"{live_server.url}/health").json()
    assert health["running"] == 0 and health["free_cache_blocks"] == health["cache_blocks"]


def test_a_client_leaving_a_non_streaming_request_frees_its_slot(live_server: LiveServer, korean_turns):
    engine = live_server.engine
    live_server.wait_idle()
    computed_before = engine.num_computed_tokens
    body, full = _long_request(live_server, korean_turns[67], stream=False)

    async def run() -> int:
        async with httpx.AsyncClient(base_url=live_server.url, headers=HEADERS, timeout=120) as client:
            call = asyncio.create_task(client.post("/v1/chat/completions", json=body))
            while engine.num_running == 0:
                await asyncio.sleep(0.005)
            running = engine.num_running
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            return running

    assert asyncio.run(run()) == 1
    live_server.wait_idle()
    assert engine.num_running == 0 and engine.pool.num_free == engine.pool.num_blocks
    assert engine.num_computed_tokens - computed_before < full - 1, "the request was aborted, not finished"
