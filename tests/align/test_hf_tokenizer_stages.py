"""SFT, RM, PPO, evaluation and serving on a model that brings its own Hugging Face tokenizer.

A tiny random decoder is exported with Mistral v0.3's ``tokenizer.json`` and a config without a chat
template, as a base model comes. SFT gets the template from ``sft.chat`` and writes it into its
export, where RM, PPO, lm-eval and the server find it. SFT memorises four real Korean replies, so
the served model must give one of them back word for word and stop at ``</s>``: the prompt it is
served is the prefix it was trained on, the mask trained the ``</s>``, and the stream keeps the
spaces Metaspace puts in front of words.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
import uvicorn
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from hcx.align.config import PpoConfig, RmConfig, SftConfig
from hcx.align.conversations import check_messages
from hcx.align.ppo import ppo
from hcx.align.rm import train_reward_model
from hcx.align.sft import sft
from hcx.eval.backend import HcxLM
from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.model import ModelConfig, Transformer
from hcx.model.hf import export_hf
from hcx.model.load import load_model
from hcx.serve.api import ApiConfig, create_app
from hcx.tokenizer import HfTokenizer, load
from tests.align.test_rm import repeated_sentence_pairs
from tests.tokenizer.hf_chat_dirs import MISTRAL_TEMPLATE, conversations, mistral_dir

LOOP = {"dtype": "float32", "log_every": 1, "checkpoint": {"every": 1000}}


@pytest.fixture(scope="module")
def base_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hf_stages")
    tokenizer_dir = mistral_dir(data_dir, out / "tokenizer", template=None)
    shape = {"dim": 64, "n_layers": 2, "ffn_dim": 176, "max_seq_len": 256}
    model = Transformer(ModelConfig(preset="tiny", vocab_size=32768, **shape))
    model.init_weights(seed=0)
    return export_hf(model, out / "base", tokenizer_dir)


@pytest.fixture(scope="module")
def memorised(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four short real Korean conversations (the whole SFT set of this module)."""
    rows = [c for c in conversations(data_dir, "ko", every=37) if len(c[1]["content"]) < 40][:4]
    path = tmp_path_factory.mktemp("sft_data") / "ko.jsonl"
    path.write_text("".join(json.dumps({"messages": r}, ensure_ascii=False) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def sft_dir(base_dir: Path, memorised: Path) -> Path:
    cfg = SftConfig.model_validate(
        {
            **LOOP,
            "init": str(base_dir),
            "chat": {"template": MISTRAL_TEMPLATE},
            "output_dir": str(base_dir.parent / "sft"),
            "sources": [{"path": str(memorised), "language": "ko"}],
            "korean_ratio": 1.0,
            "held_out": 0,
            "max_len": 128,
            "max_tokens": 2048,
            "steps": 60,
            "optim": {"lr": 1e-2, "warmup_steps": 3, "weight_decay": 0.0},
        }
    )
    result = sft(cfg)
    assert all(math.isfinite(x) for x in result.losses)
    assert result.losses[-1] < 0.1 * result.losses[0]
    return Path(result.metrics["hf_dir"])


def test_sft_export_carries_the_chat_settings(base_dir: Path, sft_dir: Path) -> None:
    with pytest.raises(ValueError, match="no chat template"):
        load(base_dir).encode_chat([{"role": "user", "content": "hi"}])
    config = json.loads((sft_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == MISTRAL_TEMPLATE and config["end_of_turn_token"] == "</s>"
    tokenizer = load(sft_dir)
    assert isinstance(tokenizer, HfTokenizer) and tokenizer.end_of_turn_id == tokenizer.eot_id == 2


def test_rm_and_ppo_run_on_the_sft_export(sft_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    pairs = repeated_sentence_pairs(data_dir, tmp_path / "pairs.jsonl", 40)
    rm = train_reward_model(
        RmConfig.model_validate(
            {
                **LOOP,
                "init": str(sft_dir),
                "output_dir": str(tmp_path / "rm"),
                "sources": [{"path": str(pairs), "language": "ko"}],
                "held_out": 8,
                "max_len": 128,
                "prompts_per_step": 8,
                "optim": {"lr": 1e-3, "warmup_steps": 1},
            }
        )
    )
    assert rm.step == 4 and all(math.isfinite(x) for x in rm.losses)
    rm_dir = Path(rm.metrics["export_dir"])
    assert load(rm_dir).chat_tokens == load(sft_dir).chat_tokens

    result = ppo(
        PpoConfig.model_validate(
            {
                **LOOP,
                "policy": str(sft_dir),
                "reward_model": str(rm_dir),
                "output_dir": str(tmp_path / "ppo"),
                "prompts": [{"path": str(data_dir / "sft" / "ko.jsonl.gz"), "language": "ko"}],
                "held_out": 2,
                "steps": 2,
                "rollouts_per_iteration": 8,
                "minibatch_size": 4,
                "ppo_epochs": 1,
                "max_prompt_len": 64,
                "max_new_tokens": 16,
                "optim": {"lr": 1e-4, "warmup_steps": 1},
            }
        )
    )
    assert result.metrics["iterations"] == 2
    assert math.isfinite(result.metrics["last"]["reward"]) and abs(result.metrics["last"]["reward"]) <= 5.0
    assert load(result.metrics["hf_dir"]).chat_tokens == load(sft_dir).chat_tokens


def test_lm_eval_log_likelihoods_match_the_hf_backend(sft_dir: Path) -> None:
    """Same ids (BOS ``<s>`` before an empty context) and so the same log-likelihoods as lm-eval's hf."""
    ours = HcxLM(pretrained=str(sft_dir), batch_size=8, dtype="float32")  # hf loads float32
    theirs = HFLM(pretrained=str(sft_dir), device="cpu", batch_size=8, max_length=ours.max_length)
    assert ours.prefix_token_id == theirs.prefix_token_id == 1
    for text in ("배가 고파요", "Question: what is 2+2?\nAnswer:"):
        assert ours.tok_encode(text) == theirs.tok_encode(text) and ours.tok_encode(text)[0] == 1
    pairs = [
        ("", "오늘 날씨가 좋네요."),
        ("Question: what is 2+2?\nAnswer:", " 4"),
        ("배가 고파요", " 밥 먹어요"),
    ]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    mine = ours.loglikelihood(requests, disable_tqdm=True)
    hf = theirs.loglikelihood(requests, disable_tqdm=True)
    assert [ll for ll, _ in mine] == pytest.approx([ll for ll, _ in hf], rel=1e-5)


@contextmanager
def serving(model_dir: Path) -> Iterator[openai.OpenAI]:
    model, tokenizer = load_model(model_dir).pair()
    app = create_app(Engine(model, tokenizer, EngineConfig(num_blocks=256)), ApiConfig(served_name="tiny"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        yield openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_served_chat_gives_the_learned_reply_and_stops_at_eos(sft_dir: Path, memorised: Path) -> None:
    rows = [check_messages(json.loads(line)["messages"]) for line in memorised.read_text().splitlines()]
    with serving(sft_dir) as client:
        for messages in rows:
            answer = client.chat.completions.create(
                model="tiny", messages=messages[:-1], temperature=0.0, max_tokens=48
            )
            assert answer.choices[0].finish_reason == "stop"
            assert answer.choices[0].message.content == messages[-1]["content"]
            stream = client.chat.completions.create(
                model="tiny", messages=messages[:-1], temperature=0.0, max_tokens=48, stream=True
            )
            assert "".join(c.choices[0].delta.content or "" for c in stream) == messages[-1]["content"]
        completion = client.completions.create(model="tiny", prompt="오늘은", max_tokens=4, temperature=0)
        assert completion.usage.prompt_tokens == len(load(sft_dir).encode("오늘은")) + 1  # after <s>
        with pytest.raises(openai.BadRequestError, match="no fill-in-the-middle tokens"):
            client.completions.create(model="tiny", prompt="def f(", suffix="return x", max_tokens=4)
