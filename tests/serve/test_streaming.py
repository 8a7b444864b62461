"""Server-sent event streams: chunk shapes, reassembly, usage, stop strings, and shutdown mid-stream."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hcx.infer.config import EngineConfig
from hcx.infer.sampling import SamplingParams
from hcx.serve.api import ApiConfig
from tests.serve.live_server import API_KEY, MAX_TOKENS, SERVED_NAME, LiveServer, running_server


def test_chat_stream_reassembles_to_the_whole_answer(live_server: LiveServer, korean_turns):
    client = live_server.client()
    messages = [{"role": "user", "content": korean_turns[10]}]
    chunks = list(
        client.chat.completions.create(
            model=SERVED_NAME,
            messages=messages,
            max_tokens=32,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    whole = client.chat.completions.create(model=SERVED_NAME, messages=messages, max_tokens=32, temperature=0)
    want = live_server.expected(live_server.chat_ids(messages), max_new_tokens=32, temperature=0.0)

    *answer, usage = chunks
    assert answer[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in answer)
    assert streamed == whole.choices[0].message.content == want.text
    assert [c.choices[0].finish_reason for c in answer[:-1]] == [None] * (len(answer) - 1)
    assert answer[-1].choices[0].finish_reason == want.finish_reason
    assert len([c for c in answer if c.choices[0].delta.content]) > 1, "the answer arrives in pieces"
    assert usage.choices == [] and usage.usage.completion_tokens == len(want.token_ids)
    assert usage.usage.prompt_tokens == whole.usage.prompt_tokens


def test_raw_sse_framing_ends_with_done(live_server: LiveServer):
    body = {"messages": [{"role": "user", "content": "한국의 수도는?"}], "max_tokens": 6, "stream": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream(
        "POST", f"{live_server.url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert "usage" not in json.loads(events[-3].removeprefix("data: ")), "usage only when asked for"


def test_completion_stream_of_several_prompts_with_a_stop_string(live_server: LiveServer, korean_turns):
    tok = live_server.tok
    texts = [korean_turns[11][:30], korean_turns[12][:30], korean_turns[13][:30]]
    prompts = [[tok.eot_id, *tok.encode(t)] for t in texts]
    free = live_server.reference.generate(prompts, SamplingParams(max_new_tokens=24, temperature=0.0))
    stop = free[1].text[5:7]
    assert len(stop) == 2
    stream = live_server.client().completions.create(
        model=SERVED_NAME, prompt=texts, max_tokens=24, temperature=0, stop=stop, stream=True
    )
    pieces: dict[int, str] = {0: "", 1: "", 2: ""}
    finish: dict[int, str | None] = {}
    for chunk in stream:
        (choice,) = chunk.choices
        pieces[choice.index] += choice.text
        if choice.finish_reason:
            finish[choice.index] = choice.finish_reason
    want = live_server.reference.generate(
        prompts, SamplingParams(max_new_tokens=24, temperature=0.0, stop=[stop])
    )
    assert [pieces[i] for i in range(3)] == [w.text for w in want]
    assert pieces[1] == free[1].text[: free[1].text.index(stop)]
    assert [finish[i] for i in range(3)] == [w.finish_reason for w in want]
    assert finish[1] == "stop"


def test_any_stream_interval_streams_the_same_answers(
    live_server: LiveServer, served_model_dir: Path, korean_turns
):
    """Chunks of the default interval and of one token add up to the same text and log-probabilities,
    which are the non-streamed answer's and the in-process engine's (a stop string included)."""
    assert live_server.api.config.stream_interval > 1, "the default server sends several tokens a chunk"
    messages = [{"role": "user", "content": korean_turns[14]}]
    want = live_server.expected(live_server.chat_ids(messages), max_new_tokens=40, temperature=0.0)
    stop = want.text[20:22]
    want = live_server.expected(
        live_server.chat_ids(messages), max_new_tokens=40, temperature=0.0, stop=[stop]
    )
    request = {"model": SERVED_NAME, "messages": messages, "max_tokens": 40, "temperature": 0, "stop": stop}
    request |= {"logprobs": True, "top_logprobs": 2}
    whole = live_server.client().chat.completions.create(**request)
    assert whole.choices[0].message.content == want.text and whole.choices[0].finish_reason == "stop"
    engine_config = EngineConfig(max_running=4, num_blocks=256, block_size=16)
    api_config = ApiConfig(served_name=SERVED_NAME, api_key=API_KEY, max_tokens=MAX_TOKENS, stream_interval=1)
    with running_server(served_model_dir, engine_config, api_config) as one_token:
        chunked = list(live_server.client().chat.completions.create(**request, stream=True))
        single = list(one_token.client().chat.completions.create(**request, stream=True))
    for chunks in (chunked, single):
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == want.text
        scored = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
        assert scored == whole.choices[0].logprobs.content
        assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(chunked) < len(single) == len(want.token_ids) + 2, "a role chunk, one per token, the finish"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_lets_the_running_stream_finish_then_exits(
    served_model_dir: Path, tmp_path: Path, repo_root: Path
):
    """`hcx serve` as users run it: SIGTERM mid-stream stops new connections, the stream completes."""
    port = _free_port()
    log = tmp_path / "serve.log"
    options = ["--served-name", "tiny", "--dtype", "float32", "--stream-interval", "3", "--set", "threads=1"]
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hcx.cli", "serve", str(served_model_dir), "--port", str(port), *options],
            cwd=repo_root,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HCX_API_KEY": "k"},
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        body = {"messages": [{"role": "user", "content": "긴 이야기를 들려줘"}], "max_tokens": 400}
        body |= {
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        events = []
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer k"},
            timeout=120,
        ) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                    events.append(line)
                    break
            process.send_signal(signal.SIGTERM)
            events.extend(line for line in lines if line)
        # uvicorn re-raises the signal once it has shut down, so the exit status is the usual SIGTERM one.
        assert process.wait(timeout=120) == -signal.SIGTERM
        assert events[-1] == "data: [DONE]"
        usage = json.loads(events[-2].removeprefix("data: "))["usage"]
        finish = json.loads(events[-3].removeprefix("data: "))["choices"][0]["finish_reason"]
        assert finish == "length" and usage["completion_tokens"] == 400, "the stream ran to its end"
        output = log.read_text()
        assert "Waiting for connections to close" in output, "the stream was still running at SIGTERM"
        assert "Application shutdown complete" in output and "Finished server process" in output
        try:
            httpx.get(f"{url}/health", timeout=5)
            raise AssertionError("the server still accepts connections after shutdown")
        except httpx.TransportError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
