"""``hcx serve CHECKPOINT``: the OpenAI-compatible API and the web chat page (SPEC §8)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from hcx.config import RecipeError, apply_overrides


def serve(
    checkpoint: Annotated[
        Path, typer.Argument(help="HF-format export dir (config.json, *.safetensors, tokenizer)")
    ],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="HCX_API_KEY", help="require 'Authorization: Bearer KEY' on /v1/*")
    ] = None,
    max_batch: Annotated[
        int, typer.Option(help="requests decoded together at most (engine max_running)")
    ] = 64,
    served_name: Annotated[
        str | None, typer.Option(help="model id in the API; default: CHECKPOINT as given")
    ] = None,
    tokenizer: Annotated[Path | None, typer.Option(help="hcx tokenizer dir, if not in CHECKPOINT")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            help="auto (bfloat16 where the GPU or CPU computes it natively, else float32), float32, bfloat16, ..."
        ),
    ] = "auto",
    quantize: Annotated[
        str,
        typer.Option(
            help="none or int8: weight-only int8 linear layers (fastest on CPU with --dtype bfloat16)"
        ),
    ] = "none",
    stream_interval: Annotated[
        int | None,
        typer.Option(
            help="tokens per streamed chunk after the first (default: api.stream_interval's); "
            "more: fewer frames, less server work per token"
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="any other field, e.g. --set engine.num_blocks=4096 --set api.max_tokens=512"
        ),
    ] = None,
) -> None:
    """Serve CHECKPOINT: /v1/chat/completions, /v1/completions, /v1/models, /health, and a chat page at /."""
    from hcx.serve import server

    raw = {
        "checkpoint": str(checkpoint),
        "tokenizer": str(tokenizer) if tokenizer else None,
        "host": host,
        "port": port,
        "device": device,
        "dtype": dtype,
        "quantize": quantize,
        "api": {
            "served_name": served_name or str(checkpoint),
            "api_key": api_key,
            **({"stream_interval": stream_interval} if stream_interval is not None else {}),
        },
        "engine": {"max_running": max_batch},
    }
    try:
        cfg = server.ServeConfig.model_validate(apply_overrides(raw, overrides))
    except (ValidationError, RecipeError) as error:
        raise typer.BadParameter(str(error)) from None
    try:
        app = server.build_app(cfg)
    except (FileNotFoundError, ValueError) as error:
        raise typer.BadParameter(str(error), param_hint="CHECKPOINT") from None
    server.uvicorn_server(app, cfg).run()
