"""Tool calls in generated text: parsing ``<tool_call>`` markup, whole or streamed, and the grammar forcing it.

The markup is the hcx chat format's (:mod:`hcx.tokenizer.tool_markup`)::

    <tool_call>{"name":"get_weather","arguments":{"city":"서울"}}</tool_call>

Parsing never raises: markup whose JSON does not parse, has no ``name`` or whose ``arguments`` is
not an object stays in the content as text. A call without ``arguments`` has ``{}``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hcx.infer.grammar import JSON_OPTIONS
from hcx.tokenizer.tool_markup import (
    CALL_TAIL,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    call_head,
    compact_json,
    json_string,
    tool_function,
)

__all__ = [
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "Event",
    "ToolCall",
    "ToolCallStream",
    "parse_tool_calls",
    "tool_call_lark",
]


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolCall:
    """One call; ``arguments`` is the compact JSON text of the arguments object (OpenAI's shape)."""

    name: str
    arguments: str
    id: str = field(default_factory=new_call_id, compare=False)

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


Event = str | ToolCall
"""What :class:`ToolCallStream` emits: a content delta or a complete call."""


def parse_call(body: str) -> ToolCall | None:
    """The call in the text between ``<tool_call>`` and ``</tool_call>``, or None if it is not one."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    name, arguments = value.get("name"), value.get("arguments", {})
    if not isinstance(name, str) or not name or not isinstance(arguments, dict):
        return None
    return ToolCall(name, compact_json(arguments))


_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + "(.*?)" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)


def parse_tool_calls(text: str) -> tuple[str | None, list[ToolCall]]:
    """The text outside the calls (None when only whitespace) and the calls, in order."""
    content: list[str] = []
    calls: list[ToolCall] = []
    cursor = 0
    for match in _CALL.finditer(text):
        if (call := parse_call(match.group(1))) is not None:
            content.append(text[cursor : match.start()])
            calls.append(call)
            cursor = match.end()
    content.append(text[cursor:])
    joined = "".join(content)
    return (joined if joined.strip() else None), calls


def _open_prefix_length(text: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``<tool_call>``."""
    for k in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if text.endswith(TOOL_CALL_OPEN[:k]):
            return k
    return 0


class ToolCallStream:
    """:func:`parse_tool_calls` on text that arrives in pieces.

    Content goes out as soon as it cannot be the start of ``<tool_call>``; a call once its
    ``</tool_call>`` arrived. Leading whitespace is held until other content follows and dropped if
    none does, so the content deltas joined are what :func:`parse_tool_calls` gives for the whole text.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._in_call = False
        self._scan = 0  # where to look for the closing tag next
        self._held = ""
        self._spoke = False

    def push(self, delta: str) -> list[Event]:
        events: list[Event] = []
        self._buffer += delta
        while True:
            if self._in_call:
                end = self._buffer.find(TOOL_CALL_CLOSE, self._scan)
                if end < 0:
                    self._scan = max(len(TOOL_CALL_OPEN), len(self._buffer) - len(TOOL_CALL_CLOSE) + 1)
                    return events
                stop = end + len(TOOL_CALL_CLOSE)
                raw, self._buffer, self._in_call = self._buffer[:stop], self._buffer[stop:], False
                call = parse_call(raw[len(TOOL_CALL_OPEN) : end])
                if call is None:
                    self._content(raw, events)
                else:
                    events.append(call)
                continue
            start = self._buffer.find(TOOL_CALL_OPEN)
            if start < 0:
                keep = len(self._buffer) - _open_prefix_length(self._buffer)
                self._content(self._buffer[:keep], events)
                self._buffer = self._buffer[keep:]
                return events
            self._content(self._buffer[:start], events)
            self._buffer, self._in_call, self._scan = self._buffer[start:], True, len(TOOL_CALL_OPEN)

    def finish(self) -> list[Event]:
        """The rest: a partial opening tag or an unterminated call is content."""
        events: list[Event] = []
        self._content(self._buffer, events)
        self._buffer, self._in_call = "", False
        return events

    def _content(self, text: str, events: list[Event]) -> None:
        if not text:
            return
        if not self._spoke:
            self._held += text
            if not self._held.strip():
                return
            text, self._held, self._spoke = self._held, "", True
        events.append(text)


_EMPTY_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}


def _arguments_schema(function: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The function's ``parameters`` (an object schema; none means no arguments), compact JSON only."""
    parameters = function.get("parameters")
    if parameters is None:
        schema = dict(_EMPTY_PARAMETERS)
    elif isinstance(parameters, Mapping) and parameters.get("type", "object") == "object":
        schema = {"type": "object", **parameters}
    else:
        raise ValueError(f"{where}.function.parameters must be a JSON schema of type object")
    return {**schema, "x-guidance": JSON_OPTIONS}


def tool_call_lark(tools: Sequence[Mapping[str, Any]], name: str | None = None) -> str:
    """A Lark grammar (llguidance) for one or more calls of ``tools`` in the markup, nothing around
    them, arguments following each function's ``parameters``; with ``name``, exactly one call of it."""
    functions = [tool_function(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    if name is not None:
        functions = [f for f in functions if f["name"] == name][:1]
        if not functions:
            raise ValueError(f"tool_choice names {name!r}, which is not among the tools")
    if not functions:
        raise ValueError("tool calls need at least one tool")
    rules = []
    for i, function in enumerate(functions):
        schema = _arguments_schema(function, f"tools[{i}]")
        rules.append(
            f"call_{i}: {json_string(call_head(function['name']))} args_{i} {json_string(CALL_TAIL)}"
        )
        rules.append(f"args_{i}: %json {json.dumps(schema, ensure_ascii=False)}")
    choice = " | ".join(f"call_{i}" for i in range(len(functions)))
    top = ["start: call_0"] if name is not None else ["start: call+", f"call: {choice}"]
    return "\n".join([*top, *rules]) + "\n"
