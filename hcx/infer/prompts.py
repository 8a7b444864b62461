"""Prompts for rollouts, tests and benchmarks: the user turns of SFT conversations."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from hcx.tokenizer import Tokenizer


def read_user_turns(path: str | Path, limit: int, every: int = 1) -> list[str]:
    """First user message of every ``every``-th conversation in a (gzipped) JSON Lines file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    turns: list[str] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if len(turns) == limit:
                break
            if (line_no - 1) % every:
                continue
            try:
                messages = json.loads(line)["messages"]
                turn = next(m["content"] for m in messages if m["role"] == "user")
            except (json.JSONDecodeError, KeyError, TypeError, StopIteration):
                raise ValueError(f"{path}:{line_no}: not a conversation with a user turn") from None
            turns.append(turn)
    return turns


def chat_prompt_ids(tokenizer: Tokenizer, user_turns: list[str]) -> list[list[int]]:
    """Each turn as a one-turn chat ending in the assistant header, ready to generate the answer."""
    return [
        tokenizer.encode_chat(
            {"messages": [{"role": "user", "content": turn}]}, add_generation_prompt=True
        ).ids
        for turn in user_turns
    ]
