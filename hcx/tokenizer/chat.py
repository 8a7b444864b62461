"""The chat format (SPEC §5.1): turns delimited by role tokens and ``<|endofturn|>``.

    <|system|>You are ...<|endofturn|><|user|>Hi<|endofturn|><|assistant|>Hello!<|endofturn|>

:func:`chat_segments` is the single definition of the layout; ``HcxTokenizer.encode_chat``
turns it into ids and :data:`CHAT_TEMPLATE` (saved in ``tokenizer_config.json``) renders
the same layout for ``transformers``. Message content is always ordinary text, so a
user typing ``<|endofturn|>`` cannot forge a turn boundary in ``encode_chat``.

Tool use (:mod:`hcx.tokenizer.tool_markup`) adds text, not tokens: the ``tools`` block at the end
of the first system turn (a system turn of its own when the conversation has none), an assistant's
``tool_calls`` as ``<tool_call>`` markup after its content (trained like the rest of the reply), and
each ``tool`` message as a user turn of its own holding ``<tool_response>…</tool_response>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hcx.tokenizer.specials import ASSISTANT, END_OF_TURN, SYSTEM, USER
from hcx.tokenizer.tool_markup import (
    CALLS_JINJA,
    SYSTEM_SEPARATOR,
    TOOL_RESPONSE_JINJA,
    TOOLS_JINJA,
    MarkupError,
    calls_text,
    tool_response_text,
    tools_text,
)

ROLE_TOKENS: dict[str, str] = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "tool": USER}


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


def _message_text(index: int, message: Mapping[str, Any], role: str) -> str:
    """The ordinary text of a turn: the content, the tool calls after it, a tool's result in its markup."""
    content, tool_calls = message.get("content"), message.get("tool_calls")
    try:
        if tool_calls and role != "assistant":
            raise MarkupError("tool_calls are only allowed on assistant messages")
        if tool_calls and (content is None or isinstance(content, str)):
            return (content or "") + calls_text(tool_calls)
    except MarkupError as exc:
        raise ChatFormatError(f"message {index}: {exc}") from None
    if not isinstance(content, str):
        raise ChatFormatError(f"message {index}: content must be a string, got {type(content).__name__}")
    return tool_response_text(content) if role == "tool" else content


def chat_segments(
    conversation: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = False,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[Segment]:
    """The conversation as special tokens and text; assistant content and its end-of-turn are trained.

    ``tools`` (OpenAI ``tools`` shape) are described in the first system turn."""
    messages = conversation_messages(conversation)
    try:
        block = tools_text(tools) if tools else ""
    except MarkupError as exc:
        raise ChatFormatError(str(exc)) from None
    segments: list[Segment] = []
    first_role = messages[0].get("role") if messages and isinstance(messages[0], Mapping) else None
    if block and first_role != "system":
        segments += [
            Segment(SYSTEM, True, False),
            Segment(block, False, False),
            Segment(END_OF_TURN, True, False),
        ]
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ROLE_TOKENS:
            raise ChatFormatError(f"message {index}: role must be one of {sorted(ROLE_TOKENS)}, got {role!r}")
        text = _message_text(index, message, role)
        if index == 0 and role == "system" and block:
            text = text + SYSTEM_SEPARATOR + block if text else block
        is_assistant = role == "assistant"
        segments.append(Segment(ROLE_TOKENS[role], special=True, assistant=False))
        if text:
            segments.append(Segment(text, special=False, assistant=is_assistant))
        segments.append(Segment(END_OF_TURN, special=True, assistant=is_assistant))
    if add_generation_prompt:
        segments.append(Segment(ASSISTANT, special=True, assistant=False))
    return segments


def _template() -> str:
    system = (
        f"{SYSTEM}{{{{ message['content'] }}}}"
        "{%- if loop.first and tools -%}"
        f"{{%- if message['content'] -%}}{{{{ {SYSTEM_SEPARATOR!r} }}}}{{%- endif -%}}{{{{ hcx_tools() }}}}"
        f"{{%- endif -%}}{END_OF_TURN}"
    )
    assistant = (
        f"{ASSISTANT}{{% generation %}}"
        "{%- if message['content'] -%}{{ message['content'] }}{%- endif -%}"
        f"{CALLS_JINJA}{END_OF_TURN}{{% endgeneration %}}"
    )
    branches = {
        "system": system,
        "user": f"{USER}{{{{ message['content'] }}}}{END_OF_TURN}",
        "assistant": assistant,
        "tool": f"{USER}{TOOL_RESPONSE_JINJA}{END_OF_TURN}",
    }
    return (
        TOOLS_JINJA
        + "{%- if tools and not (messages and messages[0]['role'] == 'system') -%}"
        + f"{SYSTEM}{{{{ hcx_tools() }}}}{END_OF_TURN}"
        + "{%- endif -%}"
        + "{%- for message in messages -%}"
        + "".join(
            f"{{%- {'if' if i == 0 else 'elif'} message['role'] == '{role}' -%}}{body}"
            for i, (role, body) in enumerate(branches.items())
        )
        + "{%- else -%}{{ raise_exception('unknown role: ' + message['role']) }}"
        + "{%- endif -%}{%- endfor -%}"
        + f"{{%- if add_generation_prompt -%}}{ASSISTANT}{{%- endif -%}}"
    )


CHAT_TEMPLATE: str = _template()
