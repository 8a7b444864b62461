"""An LLM judge behind any OpenAI-compatible endpoint (SPEC §6 chat row: MT-Bench, Ko-MT-Bench).

The judge answers with an explanation and a ``[[rating]]`` from 1 to 10 (the MT-Bench
single-answer protocol, Zheng et al. 2023). Transport errors, 5xx/429 answers and replies
without a parsable rating are retried with exponential backoff (other 4xx, e.g. a wrong key,
fail at once); a judgment that still fails raises
:class:`JudgeError` naming the item, so callers keep what finished and can resume.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

import openai
from pydantic import Field

from hcx.config import Section

_RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+(?:\.\d+)?)\]")


class JudgeConfig(Section):
    """Where the judge runs. The key is read from the environment, never stored in a recipe."""

    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; None: the judge is not used")
    model: str = "gpt-4"
    api_key_env: str = "HCX_JUDGE_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 2048
    timeout_s: float = 120.0
    max_attempts: int = Field(6, ge=1)
    backoff_s: float = Field(1.0, ge=0, description="first retry delay, doubled each attempt")
    max_backoff_s: float = 60.0
    parallel: int = Field(4, ge=1, description="judgments in flight at once")


class JudgeError(RuntimeError):
    """The judge did not produce a rating for an item after every retry."""


@dataclass(frozen=True)
class Judgment:
    rating: float
    text: str
    attempts: int


def parse_rating(text: str) -> float | None:
    """The rating in ``[[x]]`` (or, as FastChat accepts, ``[x]``), if it lies in 1..10."""
    match = _RATING.search(text) or _RATING_BACKUP.search(text)
    if match is None:
        return None
    rating = float(match.group(1))
    return rating if 1.0 <= rating <= 10.0 else None


class Judge:
    """Rates answers through ``chat.completions``; retries are ours (the client's are disabled)."""

    def __init__(self, config: JudgeConfig):
        if config.base_url is None:
            raise ValueError("judge.base_url is not set: configure an OpenAI-compatible endpoint")
        self.config = config
        self.client = openai.OpenAI(
            base_url=config.base_url,
            api_key=os.environ.get(config.api_key_env, "EMPTY"),
            timeout=config.timeout_s,
            max_retries=0,
        )

    def rate(self, system: str, user: str, *, item: str = "") -> Judgment:
        cfg = self.config
        problem = ""
        for attempt in range(1, cfg.max_attempts + 1):
            try:
                reply = self.client.chat.completions.create(
                    model=cfg.model,
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                    temperature=cfg.temperature,
                    max_tokens=cfg.max_tokens,
                )
                text = reply.choices[0].message.content or ""
                rating = parse_rating(text)
                if rating is not None:
                    return Judgment(rating, text, attempt)
                problem = f"no [[rating]] in the reply: {text[-200:]!r}"
            except openai.APIStatusError as exc:
                if exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                    raise JudgeError(
                        f"judge refused {item or 'an item'} (HTTP {exc.status_code}): {exc}"
                    ) from exc
                problem = f"HTTP {exc.status_code}: {exc}"
            except openai.APIConnectionError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < cfg.max_attempts:
                time.sleep(min(cfg.backoff_s * 2 ** (attempt - 1), cfg.max_backoff_s))
        raise JudgeError(f"judge failed on {item or 'an item'} after {cfg.max_attempts} attempts: {problem}")
