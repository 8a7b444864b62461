"""``hcx serve``: load an HF-format checkpoint, build the engine and the API, run uvicorn.

What loads: a directory with a Llama ``config.json``, ``*.safetensors`` weights (one file
or shards, any float dtype) and an hcx ``tokenizer.json`` — what ``hcx pretrain``, ``hcx sft``
and ``hcx ppo`` export, and the same model re-saved by ``transformers``
(``save_pretrained`` of ``LlamaForCausalLM`` and ``AutoTokenizer``). A Llama checkpoint
with another tokenizer does not load: the chat template and special tokens are hcx's
(SPEC §5.1); ``tokenizer`` may point to an hcx tokenizer elsewhere.

Shutdown (SIGTERM or Ctrl-C) is uvicorn's graceful one: the socket stops accepting, open
requests (streams included) run to the end for up to ``shutdown_grace_s`` seconds, then
are cancelled — each cancellation aborts its engine request — and the engine stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import Field
from rich.console import Console

from hcx.config import Section
from hcx.model.hf import import_hf
from hcx.model.transformer import Transformer
from hcx.serve.api import ApiConfig, create_app
from hcx.serve.config import EngineConfig
from hcx.serve.engine import Engine
from hcx.tokenizer import HcxTokenizer, load

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


class ServeConfig(Section):
    """Everything ``hcx serve`` takes; the command-line options fill it, ``--set`` overrides any field."""

    checkpoint: Path
    tokenizer: Path | None = Field(default=None, description="hcx tokenizer dir; default: the checkpoint")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    device: str = Field(default="auto", description="auto: cuda when available, else cpu")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "float64"] = Field(
        default="auto", description="auto: bfloat16 on GPU (SPEC §3), float32 on CPU"
    )
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads; none: torch's default")
    shutdown_grace_s: int = Field(
        default=30, ge=0, description="how long open requests may finish on shutdown"
    )
    log_level: str = "info"
    api: ApiConfig
    engine: EngineConfig = Field(default_factory=EngineConfig)


def resolve_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    if dtype == "auto":
        return target, torch.bfloat16 if target.type == "cuda" else torch.float32
    return target, DTYPES[dtype]


def load_checkpoint(
    checkpoint: Path, tokenizer_dir: Path | None, device: torch.device, dtype: torch.dtype
) -> tuple[Transformer, HcxTokenizer]:
    """The model and tokenizer of an HF-format export; errors name the directory and what is missing."""
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint {checkpoint}: not a directory (give an HF-format export)")
    tokenizer = load(tokenizer_dir or checkpoint)
    model = import_hf(checkpoint).to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model, tokenizer


def build_app(cfg: ServeConfig) -> FastAPI:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    model, tokenizer = load_checkpoint(cfg.checkpoint, cfg.tokenizer, device, dtype)
    engine = Engine(model, tokenizer, cfg.engine)
    Console(stderr=True).print(
        f"serving {cfg.checkpoint} as {cfg.api.served_name!r}: {model.cfg.num_params() / 1e6:.1f}M parameters, "
        f"{device} {str(dtype).removeprefix('torch.')}, context {model.cfg.max_seq_len} tokens, "
        f"up to {cfg.engine.max_running} requests per batch; web chat at http://{cfg.host}:{cfg.port}/",
        highlight=False,
    )
    return create_app(engine, cfg.api)


def uvicorn_server(app: FastAPI, cfg: ServeConfig) -> uvicorn.Server:
    """A uvicorn server for ``app``; ``.run()`` it in the main thread, or in another (tests) without signals."""
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        timeout_graceful_shutdown=cfg.shutdown_grace_s,
        access_log=False,
    )
    return uvicorn.Server(config)


def serve(cfg: ServeConfig) -> None:
    """Load, then serve until SIGTERM/SIGINT; returns after the graceful shutdown."""
    uvicorn_server(build_app(cfg), cfg).run()
