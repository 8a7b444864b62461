"""Where the responses shown to annotators come from (SPEC §7: several models or sampling settings).

A model is named ``NAME=TARGET``: a Hugging Face export directory runs in this process on
the hcx inference engine (its continuous batching answers every setting, and every
annotator, in the same steps); an ``http(s)://`` base URL is any OpenAI-compatible server,
``hcx serve`` included, optionally with ``#model-id`` (default: the first model it lists).
Each model answers each attack prompt once per sampling setting.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hcx.infer.config import EngineConfig
from hcx.redteam.config import RedteamConfig, SamplingSetting

Messages = list[dict[str, str]]
FINISH_REASON_CHARS = 32  # the column's width: another server's reason is not trusted to fit


class ResponderError(RuntimeError):
    """A model could not answer; the message names the model and why."""


@dataclass(frozen=True)
class Candidate:
    responder: str
    text: str
    finish_reason: str


class Responder(Protocol):
    name: str

    async def respond(self, messages: Messages) -> list[Candidate]: ...

    async def close(self) -> None: ...


class EngineResponder:
    """An hcx model (``hcx pretrain``/``sft``/``ppo`` export) generating in-process."""

    def __init__(
        self, name: str, model_dir: str | Path, settings: Sequence[SamplingSetting], engine: EngineConfig
    ):
        from hcx.infer.async_engine import AsyncEngine
        from hcx.infer.engine import Engine
        from hcx.model.load import load_model

        self.name = name
        self.settings = list(settings)
        loaded = load_model(model_dir, "auto", "auto")
        model, self.tokenizer = loaded.model, loaded.tokenizer()
        self.context = model.cfg.max_seq_len
        self.engine = AsyncEngine(Engine(model, self.tokenizer, engine))

    async def respond(self, messages: Messages) -> list[Candidate]:
        from hcx.infer.sampling import SamplingParams

        ids = self.tokenizer.encode_chat(messages, add_generation_prompt=True).ids
        room = self.context - len(ids)
        if room < 1:
            raise ResponderError(
                f"{self.name}: the conversation is {len(ids)} tokens, more than the model's context of "
                f"{self.context}; start a new session"
            )
        params = [
            SamplingParams(
                max_new_tokens=min(s.max_new_tokens, room), temperature=s.temperature, top_p=s.top_p
            )
            for s in self.settings
        ]
        completions = await asyncio.gather(*(self.engine.generate(ids, p) for p in params))
        return [
            Candidate(f"{self.name} ({s.label})", c.text.strip(), c.finish_reason)
            for s, c in zip(self.settings, completions, strict=True)
        ]

    async def close(self) -> None:
        await self.engine.close()


class OpenAIResponder:
    """Any OpenAI-compatible chat endpoint, through the ``openai`` client."""

    def __init__(self, name: str, url: str, settings: Sequence[SamplingSetting], timeout_s: float):
        from openai import AsyncOpenAI

        self.name = name
        self.settings = list(settings)
        base_url, _, model = url.partition("#")
        self.model = model or None
        self.client = AsyncOpenAI(
            base_url=base_url,
            api_key=os.environ.get("OPENAI_API_KEY", "unused"),
            timeout=timeout_s,
            max_retries=0,
        )

    async def _model_id(self) -> str:
        if self.model is None:
            listed = [m.id async for m in self.client.models.list()]
            if not listed:
                raise ResponderError(f"{self.name}: {self.client.base_url} serves no models")
            self.model = listed[0]
        return self.model

    async def _one(self, messages: Messages, setting: SamplingSetting) -> Candidate:
        reply = await self.client.chat.completions.create(
            model=await self._model_id(),
            messages=messages,  # type: ignore[arg-type]
            temperature=setting.temperature,
            top_p=setting.top_p,
            max_tokens=setting.max_new_tokens,
        )
        choice = reply.choices[0]
        return Candidate(
            f"{self.name} ({setting.label})",
            (choice.message.content or "").strip(),
            (choice.finish_reason or "unknown")[:FINISH_REASON_CHARS],
        )

    async def respond(self, messages: Messages) -> list[Candidate]:
        from openai import OpenAIError

        try:
            return list(await asyncio.gather(*(self._one(messages, s) for s in self.settings)))
        except OpenAIError as error:
            raise ResponderError(f"{self.name}: {self.client.base_url} failed: {error}") from error

    async def close(self) -> None:
        await self.client.close()


def parse_model(spec: str) -> tuple[str, str]:
    """``NAME=TARGET`` from the command line."""
    name, sep, target = spec.partition("=")
    if not sep or not name.strip() or not target.strip():
        raise ValueError(f"--model {spec!r}: expected NAME=CHECKPOINT_DIR or NAME=http://host:port/v1")
    return name.strip(), target.strip()


def make_responder(name: str, target: str, cfg: RedteamConfig) -> Responder:
    if target.startswith(("http://", "https://")):
        return OpenAIResponder(name, target, cfg.sampling, cfg.request_timeout_s)
    if not (Path(target) / "config.json").is_file():
        raise ValueError(
            f"redteam.models.{name}: {target} is neither an http(s) URL nor a Hugging Face export "
            "directory with config.json"
        )
    return EngineResponder(name, target, cfg.sampling, cfg.engine)


def make_responders(cfg: RedteamConfig) -> list[Responder]:
    if not cfg.models:
        raise ValueError("redteam.models is empty: give at least one --model NAME=CHECKPOINT_OR_URL")
    return [make_responder(name, target, cfg) for name, target in cfg.models.items()]
