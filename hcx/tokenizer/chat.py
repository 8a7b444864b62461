"""The chat format (SPEC §5.1): turns delimited by role tokens and ``<|endofturn|>``.

    <|system|>You are ...<|endofturn|><|user|>Hi<|endofturn|><|assistant|>Hello!<|endofturn|>

:func:`chat_segments` is the single definition of the layout; ``HcxTokenizer.encode_chat``
turns it into ids and :data:`CHAT_TEMPLATE` (saved in ``tokenizer_config.json``) renders
the same layout for ``transformers``. Message content is always ordinary text, so a
user typing ``<|endofturn|>`` cannot forge a turn boundary in ``encode_chat``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hcx.tokenizer.specials import ASSISTANT, END_OF_TURN, SYSTEM, USER

ROLE_TOKENS: dict[str, str] = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


class ChatFormatError(ValueError):
    """A conversation that cannot be rendered; the message names the offending message."""


@dataclass(frozen=True)
class Segment:
    """A run of the rendered chat: a special token or ordinary text, and whether it is the assistant's."""

    text: str
    special: bool
    assistant: bool


def conversation_messages(conversation: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict]:
    """Accept ``{"messages": [...]}`` (the SFT file format) or the message list itself."""
    messages = conversation.get("messages") if isinstance(conversation, Mapping) else conversation
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise ChatFormatError("a conversation is a list of messages or a mapping with a 'messages' list")
    return list(messages)


def chat_segments(
    conversation: Mapping[str, Any] | Sequence[Mapping[str, Any]], add_generation_prompt: bool = False
) -> list[Segment]:
    """The conversation as special tokens and text; assistant content and its end-of-turn are trained."""
    segments: list[Segment] = []
    for index, message in enumerate(conversation_messages(conversation)):
        role = message.get("role") if isinstance(message, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if role not in ROLE_TOKENS:
            raise ChatFormatError(f"message {index}: role must be one of {sorted(ROLE_TOKENS)}, got {role!r}")
        if not isinstance(content, str):
            raise ChatFormatError(f"message {index}: content must be a string, got {type(content).__name__}")
        is_assistant = role == "assistant"
        segments.append(Segment(ROLE_TOKENS[role], special=True, assistant=False))
        if content:
            segments.append(Segment(content, special=False, assistant=is_assistant))
        segments.append(Segment(END_OF_TURN, special=True, assistant=is_assistant))
    if add_generation_prompt:
        segments.append(Segment(ASSISTANT, special=True, assistant=False))
    return segments


def _template() -> str:
    branches = "".join(
        f"{{%- {'if' if i == 0 else 'elif'} message['role'] == '{role}' -%}}{token}"
        + (
            f"{{% generation %}}{{{{ message['content'] }}}}{END_OF_TURN}{{% endgeneration %}}"
            if role == "assistant"
            else f"{{{{ message['content'] }}}}{END_OF_TURN}"
        )
        for i, (role, token) in enumerate(ROLE_TOKENS.items())
    )
    return (
        "{%- for message in messages -%}"
        + branches
        + "{%- else -%}{{ raise_exception('unknown role: ' + message['role']) }}"
        + "{%- endif -%}{%- endfor -%}"
        + f"{{%- if add_generation_prompt -%}}{ASSISTANT}{{%- endif -%}}"
    )


CHAT_TEMPLATE: str = _template()
