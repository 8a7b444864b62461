"""SFT conversations: validate and tokenize them with their assistant-only labels (SPEC §5.1).

A conversation is ``{"messages": [{"role", "content"}, ...]}``: an optional system message,
then user and assistant turns alternating, starting with the user and ending with the
assistant, every content a non-empty string. Anything else is rejected with the file and
line (:mod:`hcx.records`: counted and skipped, or fatal, by policy).
A sample longer than the context is never cut: cutting could keep a prompt and lose its
answer, and the model would learn to stop mid-thought. It is skipped (and counted) or fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hcx.records import Policy, ReadReport, Rejected, read_records
from hcx.tokenizer import Tokenizer

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SftExample:
    """Token ids of one conversation and, aligned with them, the ids trained on (else IGNORE_INDEX)."""

    ids: list[int]
    labels: list[int]
    language: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def inputs(self) -> list[int]:
        return self.ids[:-1]

    @property
    def targets(self) -> list[int]:
        """Next-token targets of :attr:`inputs`: token ``i+1`` where it is trained on."""
        return self.labels[1:]

    @property
    def prompt_ids(self) -> list[int]:
        """The conversation up to its first trained token: the prompt of the first answer."""
        first = next((i for i, label in enumerate(self.labels) if label != IGNORE_INDEX), len(self.ids))
        return self.ids[:first]


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Return the messages if they form a trainable conversation, else raise :class:`Rejected`."""
    if not isinstance(messages, list) or not messages:
        raise Rejected("no messages", "'messages' must be a non-empty list")
    expected = "user"
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise Rejected("malformed message", f"message {index} is not an object")
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise Rejected("empty content", f"message {index} ({role})")
        if role == "system" and index == 0:
            continue
        if role != expected:
            raise Rejected(
                "turns do not alternate", f"message {index} has role {role!r}, expected {expected!r}"
            )
        expected = "assistant" if role == "user" else "user"
    if messages[-1].get("role") != "assistant":
        raise Rejected("no final assistant turn", f"last message has role {messages[-1].get('role')!r}")
    return messages


def tokenize_conversation(
    tokenizer: Tokenizer, messages: list[dict[str, str]], language: str = ""
) -> SftExample:
    rendered = tokenizer.encode_chat(messages)
    labels = [
        i if trained else IGNORE_INDEX
        for i, trained in zip(rendered.ids, rendered.assistant_mask, strict=True)
    ]
    return SftExample(rendered.ids, labels, language)


def read_conversations(
    path: str | Path,
    tokenizer: Tokenizer,
    max_len: int,
    policy: Policy = "skip",
    language: str = "",
    limit: int | None = None,
    report: ReadReport | None = None,
) -> list[SftExample]:
    """Tokenized, validated conversations of one jsonl(.gz) file, none longer than ``max_len`` tokens."""

    def parse(row: Mapping[str, Any]) -> SftExample:
        if "messages" not in row:
            raise Rejected("no 'messages' field")
        example = tokenize_conversation(tokenizer, check_messages(row["messages"]), language)
        if len(example) > max_len:
            raise Rejected("longer than the context", f"{len(example)} > {max_len} tokens (never truncated)")
        return example

    return read_records(path, parse, policy, limit, report, what="SFT data")
