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
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import torch
import uvicorn

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.request import Completion
from hcx.infer.sampling import SamplingParams
from hcx.model import ModelConfig, Transformer
from hcx.model.hf import export_hf
from hcx.model.load import load_model
from hcx.serve.api import ApiConfig, create_app
from hcx.tokenizer import HcxTokenizer

API_KEY = "hcx-test-key"
SERVED_NAME = "hcx-tiny"
MAX_TOKENS = 256


@dataclass
class LiveServer:
    url: str
    engine: Engine
    reference: Engine
    tok: HcxTokenizer

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
    model, tok = load_model(served_model_dir, torch.device("cpu"), torch.float64).pair()
    engine = Engine(model, tok, EngineConfig(max_running=64, num_blocks=2048, block_size=16))
    app = create_app(engine, ApiConfig(served_name=SERVED_NAME, api_key=API_KEY, max_tokens=MAX_TOKENS))
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
    yield LiveServer(f"http://127.0.0.1:{port}", engine, Engine(model, tok), tok)
    server.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive(), "the test server did not shut down"
    assert not engine.has_unfinished() and engine.pool.num_free == engine.pool.num_blocks
