"""A real ``hcx serve`` app on a loopback port, for the API, streaming, concurrency and browser tests.

The app is the one ``hcx serve`` builds, run by uvicorn in a thread so tests can watch the
server's engine directly. It serves an HF export of a tiny decoder with the real session
tokenizer and random weights, as the engine tests use: the briefly pretrained
``base_model_dir`` answers every chat prompt with an immediate end-of-text (it never saw a
chat turn), which would leave nothing to stream, while random weights give long answers
that differ per prompt. The model is loaded in float64, as in the engine tests: greedy
outputs then cannot depend on how requests happen to be batched together, so the server's
answers must equal the in-process engine's token for token.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn
from fastapi import FastAPI

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.request import Completion
from hcx.infer.sampling import SamplingParams
from hcx.model import ModelConfig, Transformer
from hcx.model.hf import export_hf
from hcx.model.load import load_model
from hcx.serve.api import ApiConfig, OpenAIServer, create_app
from hcx.tokenizer import HcxTokenizer

API_KEY = "hcx-test-key"
SERVED_NAME = "hcx-tiny"
MAX_TOKENS = 256
GUARDED_MAX_TOKENS = 8
GUARDED_BODY_BYTES = 262_144
GUARDED_RETRY_AFTER_S = 2


@dataclass
class LiveServer:
    url: str
    engine: Engine
    reference: Engine
    tok: HcxTokenizer
    app: FastAPI

    @property
    def api(self) -> OpenAIServer:
        """The app's request handler: its async engine and admission counts."""
        return self.app.state.server

    @property
    def context_length(self) -> int:
        return self.engine.model.cfg.max_seq_len

    def client(self, api_key: str = API_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120)

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tok.encode_chat({"messages": messages}, add_generation_prompt=True).ids

    def expected(self, prompt_ids: list[int], **params) -> Completion:
        """What the in-process engine generates for the same prompt and sampling parameters."""
        return self.reference.generate([prompt_ids], SamplingParams(**params))[0]

    def settled_health(self, timeout: float = 30.0) -> dict:
        """``/health`` once nothing runs, waits, streams or holds an admission (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            health = httpx.get(f"{self.url}/health", timeout=timeout).json()
            busy = (
                health["running"] + health["waiting"] + health["open_streams"] + health["admitted_sequences"]
            )
            if busy == 0 or time.monotonic() > deadline:
                return health
            time.sleep(0.02)

    def assert_all_freed(self) -> None:
        """Every batch slot, admission, stream and cache block is given back; the server is healthy."""
        health = self.settled_health()
        assert health["status"] == "ok"
        assert health["running"] == health["waiting"] == 0, health
        assert health["open_streams"] == health["admitted_sequences"] == 0, health
        assert health["free_cache_blocks"] == health["cache_blocks"], health

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Until the server's engine has no request left (slots and cache blocks all free)."""
        deadline = time.monotonic() + timeout
        while self.engine.has_unfinished() and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture(scope="session")
def served_model_dir(
    tok: HcxTokenizer, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``export_hf`` of a tiny random decoder with the session tokenizer: what ``hcx serve`` loads."""
    model = Transformer(ModelConfig(preset="tiny", vocab_size=tok.vocab_size, max_seq_len=512))
    model.init_weights(seed=0)
    return export_hf(model, tmp_path_factory.mktemp("served") / "hf", tokenizer_dir)


@pytest.fixture(scope="session")
def live_server(served_model_dir: Path) -> Iterator[LiveServer]:
    engine_config = EngineConfig(max_running=64, num_blocks=2048, block_size=16)
    api_config = ApiConfig(served_name=SERVED_NAME, api_key=API_KEY, max_tokens=MAX_TOKENS)
    with running_server(served_model_dir, engine_config, api_config) as server:
        yield server


@pytest.fixture(scope="session")
def guarded_server(served_model_dir: Path) -> Iterator[LiveServer]:
    """A server with small limits, for fuzzing and refusals: 4 slots + 4 queued sequences,
    8 tokens per answer, 256 KiB bodies."""
    engine_config = EngineConfig(max_running=4, num_blocks=512, block_size=16)
    api_config = ApiConfig(
        served_name=SERVED_NAME,
        api_key=API_KEY,
        max_tokens=GUARDED_MAX_TOKENS,
        max_queued=4,
        max_body_bytes=GUARDED_BODY_BYTES,
        retry_after_s=GUARDED_RETRY_AFTER_S,
    )
    with running_server(served_model_dir, engine_config, api_config) as server:
        yield server


@contextmanager
def running_server(
    model_dir: Path, engine_config: EngineConfig, api_config: ApiConfig
) -> Iterator[LiveServer]:
    """The ``hcx serve`` app for ``model_dir`` (float64) on a loopback port; afterwards every block is free."""
    model, tok = load_model(model_dir, torch.device("cpu"), torch.float64).pair()
    engine = Engine(model, tok, engine_config)
    app = create_app(engine, api_config)
    with serving(app) as url:
        yield LiveServer(url, engine, Engine(model, tok), tok, app)
    assert not engine.has_unfinished() and engine.pool.num_free == engine.pool.num_blocks


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` run by uvicorn in a thread on a free loopback port; yields its URL, then shuts it down."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=10)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive(), "the test server did not shut down"
