"""``hcx serve``: load an HF-format checkpoint, build the engine and the API, run uvicorn.

What loads is what :func:`hcx.model.load.load_model` loads: hcx's own exports, the same
re-saved by ``transformers``, and Llama/Mistral/Qwen2 checkpoints with their own tokenizer
and chat template; ``tokenizer`` may point to a tokenizer elsewhere.

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
from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.quantize import Quantization, quantize_weights
from hcx.model.load import load_model, resolve_device
from hcx.serve.api import ApiConfig, create_app


class ServeConfig(Section):
    """Everything ``hcx serve`` takes; the command-line options fill it, ``--set`` overrides any field."""

    checkpoint: Path
    tokenizer: Path | None = Field(default=None, description="hcx tokenizer dir; default: the checkpoint")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    device: str = Field(default="auto", description="auto: cuda when available, else cpu")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "float64"] = Field(
        default="auto",
        description="auto: bfloat16 where the device computes it natively (SPEC §3), else float32",
    )
    quantize: Quantization = Field(
        default="none", description="int8: weight-only int8 linear layers (hcx.infer.quantize)"
    )
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads; none: torch's default")
    shutdown_grace_s: int = Field(
        default=30, ge=0, description="how long open requests may finish on shutdown"
    )
    log_level: str = "info"
    api: ApiConfig
    engine: EngineConfig = Field(default_factory=EngineConfig)


def build_app(cfg: ServeConfig) -> FastAPI:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    loaded = load_model(cfg.checkpoint, device, dtype, tokenizer=cfg.tokenizer)
    model, tokenizer = quantize_weights(loaded.model, cfg.quantize), loaded.tokenizer()
    engine = Engine(model, tokenizer, cfg.engine)
    weights = " int8 weights," if cfg.quantize == "int8" else ""
    Console(stderr=True).print(
        f"serving {cfg.checkpoint} as {cfg.api.served_name!r}: {model.cfg.num_params() / 1e6:.1f}M parameters, "
        f"{device} {str(dtype).removeprefix('torch.')},{weights} context {model.cfg.max_seq_len} tokens, "
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
